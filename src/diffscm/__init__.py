"""diffscm: counterfactual images with diffusion-based structural causal models.

    import diffscm
    scm = diffscm.SCM.from_pretrained("mnist")
    noise = diffscm.abduct(scm, observed, scm.options())

The names below load on first use, so that ``import diffscm`` (and the command line's start-up) stays light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SCM": "diffscm.scm.core", "Exogenous": "diffscm.scm.core", "abduct": "diffscm.scm.core",
    "abduct_attributes": "diffscm.scm.core", "act": "diffscm.scm.core", "predict": "diffscm.scm.core",
    "CausalGraph": "diffscm.scm.graph", "InferenceOptions": "diffscm.scm.mechanisms",
    "load_model": "diffscm.models.registry", "DiffSCMError": "diffscm.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffscm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
