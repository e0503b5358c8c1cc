"""Counterfactual metrics as pure functions over arrays/tensors (one module each).

effectiveness · composition/reversibility (L1 on 0–255, SSIM) · minimality (CLD) · realism (KID and Fréchet distance
on classifier features) · bootstrap confidence intervals.
"""
from .bootstrap import bootstrap_ci
from .cld import cld, cld_per_image, gaussian_kl, pairwise_kl
from .composition import l1_255, ssim_per_image
from .effectiveness import effectiveness_hits, tolerance, within_hits
from .realism import frechet_distance, kernel_distance

__all__ = ["bootstrap_ci", "cld", "cld_per_image", "gaussian_kl", "pairwise_kl", "l1_255", "ssim_per_image",
           "effectiveness_hits", "tolerance", "within_hits", "frechet_distance", "kernel_distance"]
