"""DDIM as small pure functions over ``eps_fn(x, t) -> ε`` (k-diffusion style: the loop lives here only).

States live on the nodes g_0 < … < g_K of :func:`diffscm.schedule.ddim_grid`; the image is the state at g_0.
Inversion evaluates ε at the current node and moves up; decoding evaluates ε at the current node and moves
down. With a perfect ε-model both are exact and inverse to each other as the grid gets finer.
"""
from __future__ import annotations

from typing import Callable

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def predict_x0(x: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x̂0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t."""
    return (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def dynamic_normalise(x0: torch.Tensor, quantile: float = 0.99) -> torch.Tensor:
    """Clip x̂0 at its per-sample, per-channel ``quantile`` of |x̂0| (floored at 1), then rescale into [-1, 1]."""
    flat = x0.abs().flatten(2)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile needs float32/64 (e.g. under bf16 autocast)
    s = torch.quantile(flat, quantile, dim=2).clamp(min=1.0).to(x0.dtype)[:, :, None, None]
    return torch.maximum(torch.minimum(x0, s), -s) / s


class _Nodes:
    """ᾱ, √ᾱ, √(1−ᾱ) and the batch's timestep vector at every grid node, computed once per call on x's device
    (no per-step host-to-device copies; the values are the ones the per-step arithmetic would give, bit for bit)."""

    def __init__(self, alphas_cumprod: torch.Tensor, grid: torch.Tensor, x: torch.Tensor):
        g = grid.to(x.device)
        self.a = alphas_cumprod.to(x.device, x.dtype)[g]
        self.sqrt_a, self.sqrt_1ma = self.a.sqrt(), (1 - self.a).sqrt()
        # fresh (N,) tensors, not views into g: a view's storage offset would make torch.compile recompile per step
        self.t = [g[k].expand(x.shape[0]).clone() for k in range(len(grid))]


def ddim_invert(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Deterministic DDIM inversion (η = 0) of ``x`` from g_0 to g_K: x_{k+1} = √ᾱ_{k+1}·x̂0 + √(1−ᾱ_{k+1})·ε(x_k, g_k)."""
    nd = _Nodes(alphas_cumprod, grid, x)
    for k in range(len(grid) - 1):
        eps = eps_fn(x, nd.t[k])
        x0 = (x - nd.sqrt_1ma[k] * eps) / nd.sqrt_a[k]
        x = nd.sqrt_a[k + 1] * x0 + nd.sqrt_1ma[k + 1] * eps
        if callback is not None:
            callback(k)
    return x


def ddim_sample(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor, *,
                eta: float = 0.0, clip: bool = False, dynamic_norm: bool = False,
                generator: torch.Generator | None = None,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """DDIM decoding from the state at g_K down to g_0 on the same grid as :func:`ddim_invert`.

    ``clip`` clamps x̂0 to [-1, 1]; ``dynamic_norm`` applies :func:`dynamic_normalise`; either way ε is
    recomputed from the adjusted x̂0 so the update stays consistent. ``eta`` > 0 adds DDIM's stochasticity.
    """
    nd = _Nodes(alphas_cumprod, grid, x)
    for i, k in enumerate(range(len(grid) - 1, 0, -1)):
        eps = eps_fn(x, nd.t[k])
        x0 = (x - nd.sqrt_1ma[k] * eps) / nd.sqrt_a[k]
        if dynamic_norm or clip:
            x0 = dynamic_normalise(x0) if dynamic_norm else x0.clamp(-1, 1)
            eps = (x - nd.sqrt_a[k] * x0) / nd.sqrt_1ma[k]
        if eta > 0:
            a_t, a_prev = nd.a[k], nd.a[k - 1]
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
            x = nd.sqrt_a[k - 1] * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        else:
            x = nd.sqrt_a[k - 1] * x0 + nd.sqrt_1ma[k - 1] * eps
        if callback is not None:
            callback(i)
    return x
