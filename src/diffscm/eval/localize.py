"""Weakly supervised lesion localisation ("What is Healthy?", Sanchez et al. 2022).

A healthy counterfactual do(label = healthy) of a patient image is made by the SCM (classifier-free and/or
classifier guidance); the anomaly map |x − x_cf| localises what had to change. Baselines reconstruct the image
with a model that only knows healthy images: a diffusion model from a forward-noised x_t (AnoDDPM-style) and a VAE.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..errors import DiffSCMError
from ..scm.mechanisms import DiffusionImageMechanism, InferenceOptions
from ..models import DiffusionModel
from ..scm.sampling import ddim_sample
from ..schedule import ddim_grid

REDUCTIONS = ("mean", "max")


def anomaly_map(x: torch.Tensor | np.ndarray, x_cf: torch.Tensor | np.ndarray, reduce: str = "mean",
                sigma: float = 0.0, mask: np.ndarray | None = None) -> np.ndarray:
    """|x − x_cf| reduced over channels (``mean`` or ``max``), optionally Gaussian-smoothed (σ in pixels) and
    zeroed outside a foreground ``mask``. Inputs N×C×H×W (or C×H×W); returns float32 N×H×W (or H×W)."""
    if reduce not in REDUCTIONS:
        raise DiffSCMError(f"unknown reduction {reduce!r} (use {' or '.join(REDUCTIONS)})")
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    b = np.asarray(x_cf.detach().cpu() if isinstance(x_cf, torch.Tensor) else x_cf, dtype=np.float32)
    if a.shape != b.shape:
        raise DiffSCMError(f"image and counterfactual differ in shape: {a.shape} vs {b.shape}")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise DiffSCMError(f"images must be N×C×H×W or C×H×W, got {a.shape}")
    d = np.abs(a - b)
    m = d.mean(1) if reduce == "mean" else d.max(1)
    if sigma > 0:
        m = np.stack([gaussian_filter(mi, sigma) for mi in m])
    if mask is not None:
        fm = np.asarray(mask).astype(bool)
        if fm.shape[-2:] != m.shape[-2:]:
            raise DiffSCMError(f"foreground mask {fm.shape} does not match the images {m.shape[-2:]}")
        m = m * (fm if fm.ndim == 3 else fm[None])
    m = m.astype(np.float32)
    return m[0] if single else m


def healthy_counterfactual(mech: DiffusionImageMechanism, x: torch.Tensor, target: int, opts: InferenceOptions,
                           latent: torch.Tensor | None = None,
                           callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """do(label = target) of images ``x`` (model range): abduct with ∅ (or reuse ``latent``), decode guided."""
    if mech.condition is None and not mech.predictors:
        raise DiffSCMError("this model has neither a conditional ε-model nor a predictor to guide towards the target")
    name = mech.condition or next(iter(mech.predictors))
    opts = replace(opts, guidance="all")   # the factual label is unknown here: every sample is guided to the target
    u = mech.abduct(x, opts, callback) if latent is None else latent
    label = torch.full((x.shape[0],), int(target), dtype=torch.long, device=x.device)
    return mech.predict(u, {name: label}, opts, callback=callback)


def noised_reconstruction(diffusion: DiffusionModel, x: torch.Tensor, opts: InferenceOptions,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """AnoDDPM-style: x_L = √ᾱ·x + √(1−ᾱ)·ε at the grid's top g_K, then unguided DDIM decoding on the same grid."""
    grid = ddim_grid(opts.steps, opts.ratio, diffusion.config["num_train_timesteps"])
    a = diffusion.alphas_cumprod.to(x.device, x.dtype)[grid[-1]]
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    xt = a.sqrt() * x + (1 - a).sqrt() * noise

    def eps(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return diffusion(z, t)

    with torch.no_grad():
        out = ddim_sample(eps, xt, diffusion.alphas_cumprod, grid, clip=opts.clip, dynamic_norm=opts.dynamic_norm)
    return out.clamp(-1, 1)


def vae_reconstruction(vae, x: torch.Tensor) -> torch.Tensor:
    """Posterior-mean reconstruction of an (unconditional) VAE trained on healthy images."""
    with torch.inference_mode():
        return vae(x).clamp(-1, 1)
