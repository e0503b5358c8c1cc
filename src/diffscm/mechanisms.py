"""Mechanisms: the diffusion image mechanism and attribute mechanisms, each with abduction and prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import DiffSCMError
from .guidance import GuidanceTerm, classifier_free, classifier_guided
from .models import DiffusionModel, NoiseAwarePredictor
from .sampling import EpsFn, ddim_invert, ddim_sample
from .schedule import ddim_grid


@dataclass
class InferenceOptions:
    """Knobs of abduction and prediction. ``steps`` is the DDIM grid size over [0, T); ``ratio`` uses its first ⌊L·N⌋ steps."""

    steps: int = 50
    ratio: float = 1.0
    scales: dict[str, float] = field(default_factory=dict)
    cfg_scale: float = 0.0     # w of classifier-free guidance (needs a conditional diffusion model); 0 = off
    eta: float = 0.0
    clip: bool = True
    dynamic_norm: bool = False
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [("steps", self.steps >= 1), ("ratio", 0 < self.ratio <= 1), ("eta", 0 <= self.eta <= 1),
                  ("batch_size", self.batch_size >= 1), ("seed", 0 <= self.seed < 2**31)]
        for name, ok in checks:
            if not ok:
                raise DiffSCMError(f"{name} = {getattr(self, name)} is out of range")
        if not math.isfinite(float(self.cfg_scale)):
            raise DiffSCMError(f"cfg_scale must be finite, got {self.cfg_scale}")
        for name, s in self.scales.items():
            if not math.isfinite(float(s)):
                raise DiffSCMError(f"guidance scale of {name} must be finite, got {s}")


class RootCategorical:
    """Mechanism of a categorical root: its exogenous noise is its value, so abduction is exact."""

    def abduct(self, value: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        return value

    def __call__(self, noise: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        return noise


class DiffusionImageMechanism:
    """image := f(u, pa) with u the DDIM latent of the image; pa steers decoding through anti-causal guidance
    (one noise-aware predictor per parent) and, with a conditional ε-model, classifier-free guidance on
    ``condition`` (a categorical parent; abduction then uses the null label ∅)."""

    def __init__(self, diffusion: DiffusionModel, predictors: dict[str, NoiseAwarePredictor],
                 condition: str | None = None):
        self.diffusion = diffusion
        self.predictors = predictors
        if condition is None and diffusion.num_classes:
            condition = diffusion.config.get("label")
        self.condition = condition

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.diffusion.alphas_cumprod

    def grid(self, opts: InferenceOptions) -> torch.Tensor:
        return ddim_grid(opts.steps, opts.ratio, self.diffusion.config["num_train_timesteps"])

    def eps_fn(self) -> EpsFn:
        """ε(x, t) of the unconditional model (the null label ∅ of a conditional one)."""
        model = self.diffusion

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x, t)

        return eps

    def cond_eps_fn(self):
        """ε(x, t, y) of a conditional model."""
        model = self.diffusion

        def eps(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x, t, y)

        return eps

    def base_eps(self, parents: dict[str, torch.Tensor], opts: InferenceOptions) -> EpsFn:
        """The ε used for decoding before anti-causal terms: classifier-free mixing when ``cfg_scale`` ≠ 0."""
        if not opts.cfg_scale:
            return self.eps_fn()
        if not self.diffusion.num_classes:
            raise DiffSCMError("cfg_scale needs a conditional diffusion model (trained with --conditional)")
        if self.condition is None or self.condition not in parents:
            raise DiffSCMError(f"classifier-free guidance: no value for the conditioning variable {self.condition!r}")
        label = parents[self.condition].long()
        if label.min() < 0 or label.max() >= self.diffusion.num_classes:
            raise DiffSCMError(f"{self.condition} must lie in 0..{self.diffusion.num_classes - 1} for this model")
        return classifier_free(self.cond_eps_fn(), label, self.diffusion.null_label, opts.cfg_scale)

    def abduct(self, x: torch.Tensor, opts: InferenceOptions,
               callback: Callable[[int], None] | None = None) -> torch.Tensor:
        """u = DDIM inversion (η = 0) of ``x`` with the unconditional ε-model up to g_K."""
        # Both directions run in inference mode on an inference copy of their input, so the ε-model always sees one
        # kind of tensor (a compiled model would otherwise recompile when abduction and prediction alternate kinds).
        with torch.inference_mode():
            return ddim_invert(self.eps_fn(), x.clone(), self.alphas_cumprod, self.grid(opts), callback).clone()

    def guidance_terms(self, parents: dict[str, torch.Tensor], opts: InferenceOptions) -> list[GuidanceTerm]:
        terms = []
        for name, predictor in self.predictors.items():
            scale = opts.scales.get(name, 0.0)
            if name in parents and scale:
                terms.append(GuidanceTerm(predictor.log_prob, parents[name], scale))
        return terms

    def predict(self, u: torch.Tensor, parents: dict[str, torch.Tensor], opts: InferenceOptions,
                generator: torch.Generator | None = None,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
        """Decode the latent on the same grid, guided towards every image parent's (counterfactual) value."""
        eps = classifier_guided(self.base_eps(parents, opts), self.guidance_terms(parents, opts), self.alphas_cumprod)
        with torch.inference_mode():   # the guidance gradient re-enables autograd on its own copy of x_t
            x = ddim_sample(eps, u.clone(), self.alphas_cumprod, self.grid(opts), eta=opts.eta, clip=opts.clip,
                            dynamic_norm=opts.dynamic_norm, generator=generator, callback=callback)
        return x.clamp(-1, 1)           # outside inference mode: an ordinary tensor for the caller
