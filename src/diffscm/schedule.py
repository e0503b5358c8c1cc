"""Noise schedules (ᾱ tables) and the DDIM timestep grid shared by abduction and prediction."""
from __future__ import annotations

import math

import torch

from .errors import DiffSCMError


def make_alphas_cumprod(kind: str = "linear", num_train_timesteps: int = 1000,
                        beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 (float64). ``linear`` is DDPM's β schedule, ``cosine`` Nichol & Dhariwal's."""
    T = num_train_timesteps
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0)
    if kind == "cosine":
        s = 0.008
        f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0)
    raise DiffSCMError(f"unknown noise schedule {kind!r} (use linear or cosine)")


def ddim_grid(steps: int, ratio: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Timesteps g_0 = 0 < g_1 < … < g_K of an N-step DDIM grid over [0, T-1], truncated to K = ⌊L·N⌋ steps.

    Abduction walks the image (taken to sit at g_0) up to g_K; prediction walks back down the *same* points,
    so both directions use identical ᾱ values at every node, including both ends.
    """
    if steps < 1 or steps > num_train_timesteps - 1:
        raise DiffSCMError(f"steps must be in 1..{num_train_timesteps - 1}, got {steps}")
    if not (0.0 < ratio <= 1.0):
        raise DiffSCMError(f"ratio must be in (0, 1], got {ratio}")
    k = int(math.floor(ratio * steps + 1e-9))
    if k < 1:
        raise DiffSCMError(f"ratio {ratio} × steps {steps} leaves no step; raise one of them")
    full = torch.linspace(0, num_train_timesteps - 1, steps + 1, dtype=torch.float64).round().long()
    return full[: k + 1]
