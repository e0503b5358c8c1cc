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


BINS = 9    # the counterfactual benchmark's equal bins over a continuous attribute's range


def tolerance(low: float, high: float, bins: int = BINS) -> float:
    """Half the width of one of ``bins`` equal bins over [low, high]: a continuous counterfactual is on target when
    its reading lies within this distance of the value asked for."""
    return (high - low) / (2 * bins)


def within_hits(read: np.ndarray, targets: np.ndarray, tol: float) -> np.ndarray:
    """Per-image 1.0/0.0: whether each continuous reading lies within ``tol`` of its target."""
    read, targets = np.asarray(read, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if read.shape != targets.shape:
        raise ValueError(f"oracle returned {read.shape} values for {targets.shape} targets")
    return (np.abs(read - targets) <= tol).astype(np.float64)
