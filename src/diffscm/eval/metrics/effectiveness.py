"""Effectiveness (Monteiro et al. 2023): does the counterfactual show the intervened value?"""
from __future__ import annotations

from typing import Callable

import numpy as np


def effectiveness_hits(classify: Callable[[np.ndarray], np.ndarray], counterfactuals: np.ndarray,
                       targets: np.ndarray) -> np.ndarray:
    """Per-image 1.0/0.0: whether the clean-image oracle ``classify`` labels each counterfactual as its target."""
    pred = np.asarray(classify(counterfactuals))
    targets = np.asarray(targets)
    if pred.shape != targets.shape:
        raise ValueError(f"classifier returned {pred.shape} labels for {targets.shape} targets")
    return (pred == targets).astype(np.float64)
