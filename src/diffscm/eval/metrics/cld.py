"""Counterfactual Latent Divergence (Sanchez & Tsaftaris 2022; weights of Melistas et al. 2024).

d(a, b) = KL(q(z|a) ‖ q(z|b)) between the diagonal-Gaussian VAE posteriors of two images (each with its own mean
*and* variance). For a factual x with counterfactual x*:
    div = d(x, x*),  P1 = P(S_cf ≤ div),  P2 = P(S_f ≥ div),
with S_cf = {d(x, x') : x' real with the counterfactual parent} and S_f = {d(x, x') : x' real with the factual
parent}; CLD = log(w1·e^{P1} + w2·e^{P2}). Small when x* is closer to x than real images of its new class are
(minimal) yet not closer than real images of x's own class (effective). Lower is better.
"""
from __future__ import annotations

import numpy as np
import torch


def gaussian_kl(mu_a, logvar_a, mu_b, logvar_b):
    """KL(N(μa, diag e^{lva}) ‖ N(μb, diag e^{lvb})), summed over the last axis (numpy or torch)."""
    lib = torch if isinstance(mu_a, torch.Tensor) else np
    return 0.5 * (logvar_b - logvar_a + (lib.exp(logvar_a) + (mu_a - mu_b) ** 2) / lib.exp(logvar_b) - 1).sum(-1)


def pairwise_kl(mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor,
                chunk: int = 256) -> torch.Tensor:
    """(Na, Nb) matrix of KL(q_a[i] ‖ q_b[j])."""
    rows = []
    inv_b = torch.exp(-logvar_b)                                   # (Nb, D)
    for i in range(0, len(mu_a), chunk):
        ma, la = mu_a[i:i + chunk, None], logvar_a[i:i + chunk, None]   # (c, 1, D)
        rows.append(0.5 * (logvar_b[None] - la + (la.exp() + (ma - mu_b[None]) ** 2) * inv_b[None] - 1).sum(-1))
    return torch.cat(rows)


def cld_per_image(div: np.ndarray, s_cf: list[np.ndarray], s_f: list[np.ndarray],
                  w1: float = 0.8, w2: float = 0.2) -> np.ndarray:
    """CLD of each factual/counterfactual pair from its divergence and its two sets of real-pair divergences
    (NaN where a set is empty: no real image has that parent value)."""
    div = np.asarray(div, dtype=np.float64)
    out = np.empty(len(div))
    for i, d in enumerate(div):
        if len(s_cf[i]) == 0 or len(s_f[i]) == 0:
            out[i] = np.nan
            continue
        p1 = float(np.mean(np.asarray(s_cf[i]) <= d))
        p2 = float(np.mean(np.asarray(s_f[i]) >= d))
        out[i] = np.log(w1 * np.exp(p1) + w2 * np.exp(p2))
    return out


def cld(post_x: tuple[torch.Tensor, torch.Tensor], post_cf: tuple[torch.Tensor, torch.Tensor],
        post_ref: tuple[torch.Tensor, torch.Tensor], parent_x: np.ndarray, parent_cf: np.ndarray,
        parent_ref: np.ndarray, exclude_ref: np.ndarray | None = None,
        weights: tuple[float, float] = (0.8, 0.2)) -> np.ndarray:
    """Per-image CLD from VAE posteriors (μ, log σ²) of factuals, counterfactuals and a pool of real images.

    ``exclude_ref[i]`` (optional) is the index in the pool of factual i itself, left out of its S_f.
    """
    mu_x, lv_x = post_x
    div = gaussian_kl(mu_x, lv_x, *post_cf).numpy()
    pair = pairwise_kl(mu_x, lv_x, *post_ref).numpy()             # (N, M)
    parent_ref = np.asarray(parent_ref)
    s_cf, s_f = [], []
    for i in range(len(div)):
        keep_f = parent_ref == parent_x[i]
        if exclude_ref is not None and exclude_ref[i] >= 0:
            keep_f = keep_f.copy()
            keep_f[exclude_ref[i]] = False
        s_cf.append(pair[i, parent_ref == parent_cf[i]])
        s_f.append(pair[i, keep_f])
    return cld_per_image(div, s_cf, s_f, *weights)
