"""One module per evaluation protocol: :mod:`.mnist`, :mod:`.morpho` (counterfactual benchmark, true
counterfactuals), :mod:`.lesion` (localisation)."""
