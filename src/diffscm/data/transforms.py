"""Conversions between stored uint8 images and the model's [-1, 1] range."""
from __future__ import annotations

import numpy as np
import torch


def to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) in 0..255 -> float32 (N, C, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W) for one channel, else (N, C, H, W)."""
    u = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()
    return u[:, 0] if u.shape[1] == 1 else u
