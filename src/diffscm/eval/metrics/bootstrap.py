"""Percentile bootstrap confidence intervals over images, reproducible from a seed."""
from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_ci(values: np.ndarray, seed: int = 0, n_boot: int = 1000, level: float = 0.95,
                 stat: Callable[[np.ndarray], float] | None = None, basic: bool = False) -> tuple[float, float]:
    """(low, high) percentile interval of ``stat`` (default: mean over axis 0) under resampling of rows.

    ``stat`` receives the resampled rows, so set-level statistics (e.g. a Fréchet distance of features)
    bootstrap over images too. ``basic`` returns the basic (reverse-percentile) interval 2θ̂ − q, which
    corrects a statistic that resampling biases, such as FID (duplicated rows shrink the covariance).
    """
    values = np.asarray(values)
    if len(values) == 0:
        raise ValueError("cannot bootstrap an empty sample")
    stat = stat or (lambda v: float(np.mean(v)))
    rng = np.random.default_rng(seed)
    draws = np.array([stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    if basic:
        theta = stat(values)
        lo, hi = 2 * theta - hi, 2 * theta - lo
    return float(lo), float(hi)
