"""Guidance: anti-causal classifier/regressor terms and classifier-free mixing, composed into one ε function.

Classifier guidance (Dhariwal & Nichol; Diff-SCM):  ε̂ = ε − √(1−ᾱ_t) · Σ_i s_i · ∇_x log p_φi(pa_i* | x_t, t).
Several terms (one per image parent) are summed, each with its own per-sample target and scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .sampling import EpsFn

LogProbFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class GuidanceTerm:
    """One anti-causal term: ``log_prob(x_t, t, target) -> (N,)``, a per-sample target and a scale."""

    log_prob: LogProbFn
    target: torch.Tensor
    scale: float | torch.Tensor = 1.0


def guidance_gradient(terms: list[GuidanceTerm], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Σ_i s_i · ∇_x log p_i(target_i | x, t); gradients flow only through the predictors."""
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        total = 0.0
        for term in terms:
            scale = torch.as_tensor(term.scale, device=x.device, dtype=x.dtype)
            total = total + (scale * term.log_prob(xg, t, term.target)).sum()
        (grad,) = torch.autograd.grad(total, xg)
    return grad


def classifier_guided(eps_fn: EpsFn, terms: list[GuidanceTerm], alphas_cumprod: torch.Tensor) -> EpsFn:
    """Wrap ``eps_fn`` with anti-causal guidance terms; with no terms (or all scales 0) it is ``eps_fn`` itself."""
    active = [tm for tm in terms if torch.as_tensor(tm.scale).abs().max() > 0]
    if not active:
        return eps_fn
    a = alphas_cumprod

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x, t)
        grad = guidance_gradient(active, x, t)
        return eps - (1 - a.to(x.device, x.dtype)[t]).sqrt().view(-1, 1, 1, 1) * grad

    return guided
