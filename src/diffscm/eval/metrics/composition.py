"""Image distances for composition (null intervention applied m times) and reversibility."""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def l1_255(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean absolute difference on the 0–255 scale of uint8 (N, H, W[, C]) or (N, C, H, W) arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return np.abs(a - b).reshape(len(a), -1).mean(axis=1)


def ssim_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, σ 1.5, data range 255) of uint8 (N, H, W) or (N, C, H, W) arrays."""
    ta = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    tb = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if ta.shape != tb.shape:
        raise ValueError(f"shape mismatch {tuple(ta.shape)} vs {tuple(tb.shape)}")
    if ta.ndim == 3:
        ta, tb = ta[:, None], tb[:, None]
    out = structural_similarity_index_measure(ta, tb, data_range=255.0, reduction="none")
    return out.numpy()
