"""Realism: kernel (KID) and Fréchet (FID) distances between feature sets, computed with torchmetrics on given
features.

Inception weights cannot be fetched here, so features come from a classifier's penultimate layer ("KID (oracle
features)"); this module is agnostic to where they come from. KID is unbiased at any sample size and comes with the
standard deviation over its random subsets, so it is the headline realism metric.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


class _Precomputed(nn.Module):
    """Feature extractor that receives features already computed."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def frechet_distance(real_features: np.ndarray | torch.Tensor, fake_features: np.ndarray | torch.Tensor) -> float:
    """FID between two (N, D) feature sets (float64 accumulation, torchmetrics' formula)."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), reset_real_features=False)
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kernel_distance(real_features: np.ndarray | torch.Tensor, fake_features: np.ndarray | torch.Tensor,
                    subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets of ``min(subset_size, n)`` rows each; cubic polynomial kernel,
    torchmetrics' estimator) between two (N, D) feature sets; the subsets are drawn reproducibly from ``seed``."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 rows in each feature set")
    with warnings.catch_warnings():   # torchmetrics warns that it buffers the features: these are all there is
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                         reset_real_features=False)
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
