"""Guidance: anti-causal classifier/regressor terms and classifier-free mixing, composed into one ε function.

Classifier guidance (Dhariwal & Nichol; Diff-SCM):  ε̂ = ε − √(1−ᾱ_t) · Σ_i s_i · ∇_x log p_φi(pa_i* | x_t, t).
Several terms (one per image parent) are summed, each with its own per-sample target and scale.

Classifier-free ("implicit") guidance (Ho & Salimans; Sanchez et al. 2022):  ε̂ = ε(x_t, ∅) + w·(ε(x_t, y*) − ε(x_t, ∅)),
both ε evaluated in one batched forward pass. The two compose: implicit guidance first, then anti-causal terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .sampling import EpsFn

LogProbFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
CondEpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
    ready: dict = {}

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not ready:  # move scales and √(1−ᾱ) to x's device once, not at every step; as ordinary tensors, since
            with torch.inference_mode(False):  # the scales take part in the autograd of the guidance gradient
                # clone: a target made under inference mode (e.g. an inferred label) cannot enter autograd as it is
                ready["terms"] = [GuidanceTerm(tm.log_prob, tm.target.to(x.device).clone(),
                                               torch.as_tensor(tm.scale, device=x.device, dtype=x.dtype).clone())
                                  for tm in active]
                ready["sqrt_1ma"] = (1 - alphas_cumprod.to(x.device, x.dtype)).sqrt()
        eps = eps_fn(x, t)
        grad = guidance_gradient(ready["terms"], x, t)
        return eps - ready["sqrt_1ma"][t].view(-1, 1, 1, 1) * grad

    return guided


def classifier_free(eps_fn: CondEpsFn, label: torch.Tensor, null_label: int, w: float | torch.Tensor) -> EpsFn:
    """ε̂ = ε(x, t, ∅) + w·(ε(x, t, y*) − ε(x, t, ∅)) with ``eps_fn(x, t, y)``; per-sample ``label`` and ``w``.

    The conditional and unconditional evaluations share one forward pass of twice the batch. ``w`` = 0 is the
    unconditional model alone (one evaluation); ``w`` = 1 the conditional model.
    """
    w_t = torch.as_tensor(w)
    if not bool(w_t.abs().max() > 0):
        return lambda x, t: eps_fn(x, t, torch.full_like(label, null_label))

    ready: dict = {}

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not ready:  # the doubled label batch and w, built once on x's device
            y = label.to(x.device)
            ready["y"] = torch.cat([torch.full_like(y, null_label), y])
            ww = w_t.to(x.device, x.dtype)
            ready["w"] = ww.view(-1, 1, 1, 1) if ww.ndim else ww
        both = eps_fn(torch.cat([x, x]), torch.cat([t, t]), ready["y"])
        e_null, e_cond = both.chunk(2)
        return e_null + ready["w"] * (e_cond - e_null)

    return guided


def parent_free(eps_fn: CondEpsFn, values: torch.Tensor, weights: list[float] | torch.Tensor) -> EpsFn:
    """Per-parent classifier-free guidance of a parent-conditioned ε-model ``eps_fn(x, t, values)`` (NaN = ∅):

    ε̂ = ε(pa*) + Σ_i (w_i − 1)·(ε(pa*) − ε(pa* with parent i set to ∅)).

    ``weights``: one per parent, or an (N, P) tensor of per-sample weights. ``w_i`` = 1 for every parent is the
    conditional model alone (one evaluation); for one parent this is ε(∅) + w·(ε(y*) − ε(∅)). All needed branches
    share one forward pass, and a parent's null branch is evaluated only on the samples whose weight is not 1.
    """
    w = torch.as_tensor(weights, dtype=torch.float32)
    w = w.expand(values.shape[0], -1) if w.ndim == 1 else w
    if w.shape != values.shape:
        raise ValueError(f"weights of shape {tuple(w.shape)} for parent values of shape {tuple(values.shape)}")
    branches = [(i, rows) for i in range(w.shape[1]) if len(rows := (w[:, i] != 1.0).nonzero().flatten())]
    if not branches:
        return lambda x, t: eps_fn(x, t, values.to(x.device))
    ready: dict = {}

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not ready:  # the stacked value batches, rows and weights, built once on x's device
            v = values.to(x.device)
            parts, ready["b"] = [v], []
            for i, rows in branches:
                rows = rows.to(x.device)
                vi = v[rows].clone()
                vi[:, i] = float("nan")
                parts.append(vi)
                ready["b"].append((rows, (w[rows.cpu(), i] - 1.0).to(x.device, x.dtype).view(-1, 1, 1, 1)))
            ready["v"] = torch.cat(parts)
        rows_all = [rows for rows, _ in ready["b"]]
        out = eps_fn(torch.cat([x] + [x[r] for r in rows_all]), torch.cat([t] + [t[r] for r in rows_all]), ready["v"])
        eps0 = out[:len(x)]
        delta, at = torch.zeros_like(eps0), len(x)
        for rows, wm1 in ready["b"]:
            delta.index_add_(0, rows, wm1 * (eps0[rows] - out[at:at + len(rows)]))
            at += len(rows)
        return eps0 + delta

    return guided
