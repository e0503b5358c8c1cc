"""DDIM as small pure functions over ``eps_fn(x, t) -> ε`` (k-diffusion style: the loop lives here only).

States live on the nodes g_0 < … < g_K of :func:`diffscm.schedule.ddim_grid`; the image is the state at g_0, which
is the clean end ᾱ = 1 (decoding returns x̂0 at its last step, and ε is never evaluated there). Four inversions:

* explicit (``ddim_invert(iters=0)``): ε at the current node, one step up — the classic DDIM inversion, which
  decoding undoes only as the grid gets finer;
* fixed-point (``iters=K``): x_{k+1} solves "the decoding step from x_{k+1}, with ε(x_{k+1}, g_{k+1}), lands on
  x_k", by K fixed-point iterations — decoding inverts it up to the iteration's residual;
* exact (:func:`exact_invert` / :func:`exact_sample`): fixed-point inversion that also stores, per step, the residual
  decoding leaves (x_{k-1} minus the DDIM move of x_k under ε(x_k, g_k)); decoding adds it back, so the round trip
  is exact to float rounding at any N, while a counterfactual is decoded by plain DDIM steps under the new ε plus
  those small residuals;
* BDIA (:func:`bdia_invert` / :func:`bdia_sample`, Zhang et al. 2024): one ε evaluation per step, the latent is the
  last two states; with γ = 1 decoding undoes it to float rounding at any N, but under a changed ε its leapfrog
  structure keeps following the factual trajectory (measured: counterfactuals lose most of their effect).
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
        if int(grid[0]) == 0:  # the image itself: the clean end ᾱ = 1
            self.a = torch.cat([torch.ones_like(self.a[:1]), self.a[1:]])
        self.sqrt_a, self.sqrt_1ma = self.a.sqrt(), (1 - self.a).sqrt()
        # fresh (N,) tensors, not views into g: a view's storage offset would make torch.compile recompile per step
        self.t = [g[k].expand(x.shape[0]).clone() for k in range(len(grid))]


def _up(nd: "_Nodes", k: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The DDIM move of state ``x`` at node k to node k+1 with ε held fixed."""
    x0 = (x - nd.sqrt_1ma[k] * eps) / nd.sqrt_a[k]
    return nd.sqrt_a[k + 1] * x0 + nd.sqrt_1ma[k + 1] * eps


def _down(nd: "_Nodes", k: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The DDIM move of state ``x`` at node k to node k−1 with ε held fixed (η = 0, no clipping)."""
    x0 = (x - nd.sqrt_1ma[k] * eps) / nd.sqrt_a[k]
    return nd.sqrt_a[k - 1] * x0 + nd.sqrt_1ma[k - 1] * eps


def ddim_invert(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor,
                callback: Callable[[int], None] | None = None, iters: int = 0) -> torch.Tensor:
    """Deterministic DDIM inversion (η = 0) of ``x`` from g_0 to g_K.

    ``iters`` = 0: explicit, x_{k+1} = √ᾱ_{k+1}·x̂0(x_k, ε) + √(1−ᾱ_{k+1})·ε with ε = ε(x_k, g_k).
    ``iters`` = K ≥ 1: fixed-point (implicit) inversion — the same update with ε = ε(x_{k+1}, g_{k+1}), i.e. the exact
    inverse of :func:`ddim_sample`'s step, solved by K iterations from the explicit guess (made with the last ε
    evaluated, so a step costs K evaluations; 1 + K·steps in all).
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    nd = _Nodes(alphas_cumprod, grid, x)
    eps = eps_fn(x, nd.t[0]) if iters else None
    for k in range(len(grid) - 1):
        if not iters:
            x = _up(nd, k, x, eps_fn(x, nd.t[k]))
        else:
            guess = _up(nd, k, x, eps)
            for _ in range(iters):
                eps = eps_fn(guess, nd.t[k + 1])
                guess = _up(nd, k, x, eps)
            x = guess
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


def _bdia_step(nd: "_Nodes", k: int, x: torch.Tensor, eps: torch.Tensor, towards: torch.Tensor, direction: int,
               gamma: float) -> torch.Tensor:
    """One BDIA move around node k (ε = ε(x_k, g_k)): decoding (``direction`` −1) gives x_{k-1} from x_{k+1} =
    ``towards``; inversion (+1) gives x_{k+1} from x_{k-1} = ``towards``."""
    down, up = _down(nd, k, x, eps), _up(nd, k, x, eps)
    if direction < 0:   # decoding: x_{k-1} = γ·(x_{k+1} − up(x_k)) + down(x_k)
        return gamma * (towards - up) + down
    return (towards - down) / gamma + up   # inversion: x_{k+1} = (x_{k-1} − down(x_k))/γ + up(x_k)


def bdia_invert(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor,
                first_iters: int = 3, gamma: float = 1.0,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Exactly invertible abduction (BDIA-DDIM, Zhang et al. 2024): the latent is the pair (x_K, x_{K-1}), returned
    stacked as (N, 2, C, H, W).

    x_1 comes from one fixed-point step (``first_iters`` iterations; any x_1 keeps the scheme exact), then
    x_{k+1} = (x_{k-1} − D_{k→k-1}(x_k))/γ + D_{k→k+1}(x_k) with D the DDIM move under ε(x_k, g_k): one ε evaluation
    per step. :func:`bdia_sample` undoes it step by step, to float rounding when γ = 1. Needs K ≥ 2 steps.
    """
    if len(grid) < 3:
        raise ValueError("exact (BDIA) inversion needs at least 2 steps on the grid")
    nd = _Nodes(alphas_cumprod, grid, x)
    prev, cur = x, ddim_invert(eps_fn, x, alphas_cumprod, grid[:2], iters=max(first_iters, 0))
    if callback is not None:
        callback(0)
    for k in range(1, len(grid) - 1):
        prev, cur = cur, _bdia_step(nd, k, cur, eps_fn(cur, nd.t[k]), prev, +1, gamma)
        if callback is not None:
            callback(k)
    return torch.stack([cur, prev], 1)


def bdia_sample(eps_fn: EpsFn, latent: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor,
                gamma: float = 1.0, callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Decode a :func:`bdia_invert` latent (N, 2, C, H, W) = (x_K, x_{K-1}) down to g_0:
    x_{k-1} = γ·(x_{k+1} − D_{k→k+1}(x_k)) + D_{k→k-1}(x_k), one ε evaluation per step (K − 1 in all)."""
    if len(grid) < 3:
        raise ValueError("exact (BDIA) decoding needs at least 2 steps on the grid")
    upper, cur = latent[:, 0], latent[:, 1]
    nd = _Nodes(alphas_cumprod, grid, cur)
    if callback is not None:
        callback(0)
    for i, k in enumerate(range(len(grid) - 2, 0, -1)):
        upper, cur = cur, _bdia_step(nd, k, cur, eps_fn(cur, nd.t[k]), upper, -1, gamma)
        if callback is not None:
            callback(i + 1)
    return cur



def exact_invert(eps_fn: EpsFn, x: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor, iters: int = 1,
                 callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Exactly invertible abduction: the fixed-point inversion of :func:`ddim_invert` (``iters`` iterations per step),
    plus the residual ρ_k = x_{k-1} − D_{k→k-1}(x_k) that decoding with ε(x_k, g_k) leaves at each step.

    Returns (N, K+1, C, H, W): x_K, then ρ_K … ρ_1 in decoding order. Each step costs ``iters`` + 1 evaluations
    (the last one, at the accepted state, is also the next step's starting guess); 1 + (iters + 1)·K in all.
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    nd = _Nodes(alphas_cumprod, grid, x)
    eps = eps_fn(x, nd.t[0])
    residuals = []
    for k in range(len(grid) - 1):
        guess = _up(nd, k, x, eps)
        for _ in range(iters):
            guess = _up(nd, k, x, eps_fn(guess, nd.t[k + 1]))
        eps = eps_fn(guess, nd.t[k + 1])       # what decoding evaluates at this state
        residuals.append(x - _down(nd, k + 1, guess, eps))
        x = guess
        if callback is not None:
            callback(k)
    return torch.stack([x, *reversed(residuals)], 1)


def exact_sample(eps_fn: EpsFn, latent: torch.Tensor, alphas_cumprod: torch.Tensor, grid: torch.Tensor,
                 callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Decode an :func:`exact_invert` latent: x_{k-1} = D_{k→k-1}(x_k) under ε(x_k, g_k), plus the stored ρ_k."""
    if latent.ndim != 5 or latent.shape[1] != len(grid):
        raise ValueError(f"latent of shape {tuple(latent.shape)} does not belong to a {len(grid) - 1}-step grid")
    x = latent[:, 0]
    nd = _Nodes(alphas_cumprod, grid, x)
    for i, k in enumerate(range(len(grid) - 1, 0, -1)):
        x = _down(nd, k, x, eps_fn(x, nd.t[k])) + latent[:, 1 + i]
        if callback is not None:
            callback(i)
    return x
