"""Mechanisms: the diffusion image mechanism and attribute mechanisms, each with abduction and prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import DiffSCMError
from .guidance import GuidanceTerm, classifier_guided
from .models import DiffusionModel, NoiseAwarePredictor
from .sampling import EpsFn, ddim_invert, ddim_sample
from .schedule import ddim_grid


@dataclass
class InferenceOptions:
    """Knobs of abduction and prediction. ``steps`` is the DDIM grid size over [0, T); ``ratio`` uses its first ⌊L·N⌋ steps."""

    steps: int = 50
    ratio: float = 1.0
    scales: dict[str, float] = field(default_factory=dict)
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
    """image := f(u, pa) with u the DDIM latent of the image; pa steers decoding through anti-causal guidance."""

    def __init__(self, diffusion: DiffusionModel, predictors: dict[str, NoiseAwarePredictor]):
        self.diffusion = diffusion
        self.predictors = predictors

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.diffusion.alphas_cumprod

    def grid(self, opts: InferenceOptions) -> torch.Tensor:
        return ddim_grid(opts.steps, opts.ratio, self.diffusion.config["num_train_timesteps"])

    def eps_fn(self) -> EpsFn:
        model = self.diffusion

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x, t)

        return eps

    def abduct(self, x: torch.Tensor, opts: InferenceOptions,
               callback: Callable[[int], None] | None = None) -> torch.Tensor:
        """u = DDIM inversion (η = 0) of ``x`` with the unconditional ε-model up to g_K."""
        with torch.inference_mode():
            return ddim_invert(self.eps_fn(), x, self.alphas_cumprod, self.grid(opts), callback).clone()

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
        eps = classifier_guided(self.eps_fn(), self.guidance_terms(parents, opts), self.alphas_cumprod)
        with torch.no_grad():
            x = ddim_sample(eps, u, self.alphas_cumprod, self.grid(opts), eta=opts.eta, clip=opts.clip,
                            dynamic_norm=opts.dynamic_norm, generator=generator, callback=callback)
        return x.clamp(-1, 1)
