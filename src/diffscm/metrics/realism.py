"""Realism: Fréchet distance between feature sets, computed with torchmetrics' FID on given features.

Inception weights cannot be fetched here, so features come from the oracle's penultimate layer
("FID (oracle features)"); this module is agnostic to where they come from.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


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
