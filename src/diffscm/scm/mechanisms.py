"""Mechanisms: the diffusion image mechanism and attribute mechanisms, each with abduction and prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import DiffSCMError
from .guidance import GuidanceTerm, classifier_free, classifier_guided, parent_free
from ..models import DiffusionModel, NoiseAwarePredictor
from .sampling import EpsFn, bdia_invert, bdia_sample, ddim_invert, ddim_sample, exact_invert, exact_sample
from ..schedule import ddim_grid

MECHANISMS = ("auto", "paper", "conditional")
INVERSIONS = ("ddim", "fixed-point", "exact", "bdia")
ABDUCTIONS = ("factual", "null")
GUIDANCES = ("all", "intervened", "changed")
UNGUIDED_ABDUCTION = ("intervened", "changed")   # scopes under which abduction inverts the unguided ε


@dataclass
class InferenceOptions:
    """Knobs of abduction and prediction. ``steps`` is the DDIM grid size over [0, T); ``ratio`` uses its first ⌊L·N⌋ steps.

    ``mechanism``: ``paper`` (unconditional ε + anti-causal guidance), ``conditional`` (ε(x, t, pa) of a
    parent-conditioned model, classifier-free weights ``cfg_weights`` per parent, 1 = none, and anti-causal
    ``scales`` on top) or ``auto`` (conditional when the ε-model is parent-conditioned). ``inversion``: ``ddim``
    (explicit), ``fixed-point`` (``inversion_iters`` iterations per step), ``exact`` (fixed-point plus the stored
    per-step residuals, so decoding returns the image to float rounding) or ``bdia`` (BDIA, ``bdia_gamma``; its first
    step takes ``inversion_iters`` iterations). ``abduction``: ``factual`` inverts the very ε-function that
    decodes, under the factual parents (so the null intervention returns the image up to the inversion error);
    ``null`` inverts the unconditional ε (as in "What is Healthy?"). ``guidance``: ``all`` applies the
    classifier-free weights and anti-causal scales to every sample, and a factual abduction inverts that guided ε;
    ``intervened`` applies each parent's weight and scale only to the samples whose value of that parent differs from
    the factual one (elsewhere weight 1, scale 0), so abduction and un-intervened samples use the unguided ε (the
    conditional model alone; the paper mechanism's unconditional one when ``cfg_scale`` is 0): the null intervention
    round-trips and abduction costs one evaluation per ε. ``changed`` is as ``intervened``, except that on a sample
    where any parent's value changed, every parent's weight and scale act (an unchanged parent's weight then holds
    its value against the changed ones, e.g. a digit's shape against a new colour).
    """

    steps: int = 50
    ratio: float = 1.0
    scales: dict[str, float] = field(default_factory=dict)
    cfg_scale: float = 0.0     # w of classifier-free guidance of a label-conditioned model; 0 = off
    cfg_weights: dict[str, float] = field(default_factory=dict)
    eta: float = 0.0
    clip: bool = True
    dynamic_norm: bool = False
    batch_size: int = 64
    seed: int = 0
    mechanism: str = "auto"
    inversion: str = "ddim"
    inversion_iters: int = 3
    abduction: str = "factual"
    bdia_gamma: float = 1.0
    guidance: str = "all"

    def __post_init__(self) -> None:
        checks = [("steps", self.steps >= 1), ("ratio", 0 < self.ratio <= 1), ("eta", 0 <= self.eta <= 1),
                  ("batch_size", self.batch_size >= 1), ("seed", 0 <= self.seed < 2**31),
                  ("inversion_iters", 0 <= self.inversion_iters <= 100), ("bdia_gamma", 0 < self.bdia_gamma <= 1)]
        for name, ok in checks:
            if not ok:
                raise DiffSCMError(f"{name} = {getattr(self, name)} is out of range")
        for name, allowed in (("mechanism", MECHANISMS), ("inversion", INVERSIONS), ("abduction", ABDUCTIONS),
                              ("guidance", GUIDANCES)):
            if getattr(self, name) not in allowed:
                raise DiffSCMError(f"{name} {getattr(self, name)!r}: use {', '.join(allowed)}")
        if not math.isfinite(float(self.cfg_scale)):
            raise DiffSCMError(f"cfg_scale must be finite, got {self.cfg_scale}")
        for what, table in (("guidance scale", self.scales), ("classifier-free weight", self.cfg_weights)):
            for name, s in table.items():
                if not math.isfinite(float(s)):
                    raise DiffSCMError(f"{what} of {name} must be finite, got {s}")
        if self.inversion in ("exact", "bdia") and (self.eta or self.clip or self.dynamic_norm):
            raise DiffSCMError(f"{self.inversion} inversion decodes deterministically without clipping: use eta 0, "
                               "no clip, no dynamic normalisation")


    def abduction_key(self) -> str:
        """The options the abducted latent depends on, as a string: two option sets with equal keys abduct an image
        to the same latent (the prediction-only knobs, and the weights and scales where abduction is unguided, are
        left out), so a caller may reuse the latent while those change."""
        import json

        d = dict(self.__dict__)
        for k in ("eta", "seed", "batch_size"):
            d.pop(k)
        if self.abduction == "null":          # the unconditional ε, unguided
            for k in ("scales", "cfg_weights", "cfg_scale"):
                d.pop(k)
        elif self.guidance in UNGUIDED_ABDUCTION:   # unguided; only whether a label's classifier-free mixing counts
            d.pop("scales"), d.pop("cfg_weights")
            d["cfg_scale"] = bool(self.cfg_scale)
            d["guidance"] = "unguided"          # the scopes differ in prediction only
        return json.dumps(d, sort_keys=True)

class Root:
    """Mechanism of a root attribute without a learned one (categorical, or continuous with its empirical
    distribution): its exogenous noise is its value, so abduction is exact."""

    def abduct(self, value: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        return value

    def __call__(self, noise: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        return noise


class DiffusionImageMechanism:
    """image := f(u, pa) with u the DDIM latent of the image. Two mechanisms share abduction and prediction:

    * paper: the unconditional ε (∅ of a conditional model) steered by anti-causal guidance (one noise-aware
      predictor per parent) and, with a label-conditioned ε-model, classifier-free guidance on ``condition``;
    * conditional: a parent-conditioned ε(x, t, pa), with per-parent classifier-free weights and optional
      anti-causal guidance on top.
    """

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
        grid = ddim_grid(opts.steps, opts.ratio, self.diffusion.config["num_train_timesteps"])
        if opts.inversion == "bdia" and len(grid) < 3:
            raise DiffSCMError("bdia inversion needs at least 2 steps (floor(ratio × steps) >= 2)")
        return grid

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

    def mechanism(self, opts: InferenceOptions) -> str:
        """``paper`` or ``conditional`` for these options (``auto``: conditional iff the ε-model is parent-conditioned)."""
        if opts.mechanism == "auto":
            return "conditional" if self.diffusion.parent_names else "paper"
        if opts.mechanism == "conditional" and not self.diffusion.parent_names:
            raise DiffSCMError("the conditional mechanism needs a parent-conditioned diffusion model "
                               "(trained with --conditional); this SCM has the paper's mechanism only")
        return opts.mechanism

    def parent_values(self, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, P) float values of the ε-model's parents, in its column order."""
        missing = [n for n in self.diffusion.parent_names if n not in parents]
        if missing:
            raise DiffSCMError(f"the conditional mechanism needs a value for every image parent; missing {', '.join(missing)}")
        return torch.stack([parents[n].float() for n in self.diffusion.parent_names], 1)

    def base_eps(self, parents: dict[str, torch.Tensor], opts: InferenceOptions,
                 changed: dict[str, torch.Tensor] | None = None) -> EpsFn:
        """The ε before anti-causal terms: ε(x, t, pa) with per-parent weights (conditional mechanism), else the
        unconditional ε with classifier-free mixing on a label when ``cfg_scale`` ≠ 0. With ``changed`` (per parent,
        a boolean per sample) a parent's weight applies only where it is True, and is 1 elsewhere."""
        if self.mechanism(opts) == "conditional":
            names = self.diffusion.parent_names
            unknown = sorted(set(opts.cfg_weights) - set(names))
            if unknown:
                raise DiffSCMError(f"classifier-free weight for {', '.join(unknown)}: not a parent of the ε-model "
                                   f"({', '.join(names)})")
            values = self.parent_values(parents)
            weights = torch.tensor([float(opts.cfg_weights.get(n, 1.0)) for n in names])
            if changed is not None:
                on = torch.stack([changed[n].cpu() for n in names], 1)
                weights = torch.where(on, weights, torch.ones_like(weights))
            return parent_free(self.cond_eps_fn(), values, weights)
        if not opts.cfg_scale:
            return self.eps_fn()
        if not self.diffusion.num_classes:
            raise DiffSCMError("cfg_scale needs a conditional diffusion model (trained with --conditional)")
        if self.condition is None or self.condition not in parents:
            raise DiffSCMError(f"classifier-free guidance: no value for the conditioning variable {self.condition!r}")
        label = parents[self.condition].long()
        if label.min() < 0 or label.max() >= self.diffusion.num_classes:
            raise DiffSCMError(f"{self.condition} must lie in 0..{self.diffusion.num_classes - 1} for this model")
        w = opts.cfg_scale
        if changed is not None:  # w = 1 is the conditional model alone
            w = torch.where(changed[self.condition].cpu(), torch.tensor(float(w)), torch.tensor(1.0))
        return classifier_free(self.cond_eps_fn(), label, self.diffusion.null_label, w)

    def decoding_eps(self, parents: dict[str, torch.Tensor], opts: InferenceOptions,
                     factual: dict[str, torch.Tensor] | None = None) -> EpsFn:
        """The ε-function that decodes under ``parents``: base ε plus anti-causal guidance terms.

        With ``opts.guidance == "intervened"`` the weights and scales act only where a parent's value differs from
        its ``factual`` one (required then); with ``"changed"``, every parent's weight and scale act on the samples
        where any parent's value differs."""
        changed = None
        if opts.guidance in UNGUIDED_ABDUCTION:
            if factual is None:
                raise DiffSCMError(f"guidance {opts.guidance!r} needs the factual parent values the latent was "
                                   "abducted under")
            changed = {}
            for n, v in parents.items():
                if n not in factual:
                    raise DiffSCMError(f"no factual value of {n} for guidance {opts.guidance!r}")
                changed[n] = v.float() != factual[n].to(v.device).float()
            if opts.guidance == "changed" and changed:
                anywhere = torch.stack([c.cpu() for c in changed.values()]).any(0)
                changed = {n: anywhere.to(c.device) for n, c in changed.items()}
        return classifier_guided(self.base_eps(parents, opts, changed), self.guidance_terms(parents, opts, changed),
                                 self.alphas_cumprod)

    def abduct(self, x: torch.Tensor, opts: InferenceOptions,
               callback: Callable[[int], None] | None = None,
               parents: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """u = deterministic inversion of ``x`` up to g_K.

        With ``opts.abduction == "factual"`` and the factual ``parents``, the inverted ε-function is the one that
        decodes the null intervention (so prediction under the same values gives ``x`` back); otherwise the
        unconditional ε (with ``opts.guidance`` ``intervened`` or ``changed`` both are unguided). The latent is
        (N, C, H, W); (N, K+1, C, H, W) for ``exact``, (N, 2, C, H, W) for ``bdia``.
        """
        if opts.abduction == "factual" and parents is not None:
            eps = self.decoding_eps(parents, opts, factual=parents)
        elif self.mechanism(opts) == "conditional":
            raise DiffSCMError("the conditional mechanism abducts under the factual parents: pass their values")
        else:
            eps = self.eps_fn()
        grid, a = self.grid(opts), self.alphas_cumprod
        # Both directions run in inference mode on an inference copy of their input, so the ε-model always sees one
        # kind of tensor (a compiled model would otherwise recompile when abduction and prediction alternate kinds).
        with torch.inference_mode():
            if opts.inversion == "exact":
                return exact_invert(eps, x.clone(), a, grid, opts.inversion_iters, callback).clone()
            if opts.inversion == "bdia":
                return bdia_invert(eps, x.clone(), a, grid, opts.inversion_iters, opts.bdia_gamma, callback).clone()
            iters = opts.inversion_iters if opts.inversion == "fixed-point" else 0
            return ddim_invert(eps, x.clone(), a, grid, callback, iters=iters).clone()

    def guidance_terms(self, parents: dict[str, torch.Tensor], opts: InferenceOptions,
                       changed: dict[str, torch.Tensor] | None = None) -> list[GuidanceTerm]:
        terms = []
        for name, predictor in self.predictors.items():
            scale = opts.scales.get(name, 0.0)
            if name in parents and scale:
                if changed is not None:
                    scale = changed[name].float() * scale
                terms.append(GuidanceTerm(predictor.log_prob, parents[name], scale))
        return terms

    def predict(self, u: torch.Tensor, parents: dict[str, torch.Tensor], opts: InferenceOptions,
                generator: torch.Generator | None = None,
                callback: Callable[[int], None] | None = None,
                factual: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Decode the latent on the same grid, guided towards every image parent's (counterfactual) value.
        ``factual``: the parent values the latent was abducted under (needed by ``guidance`` ``intervened`` and
        ``changed``)."""
        eps = self.decoding_eps(parents, opts, factual)
        with torch.inference_mode():   # the guidance gradient re-enables autograd on its own copy of x_t
            grid = self.grid(opts)
            if opts.inversion in ("exact", "bdia"):
                want = len(grid) if opts.inversion == "exact" else 2
                if u.ndim != 5 or u.shape[1] != want:
                    raise DiffSCMError(f"{opts.inversion} decoding needs the latent of an {opts.inversion} abduction "
                                       "on the same grid")
            if opts.inversion == "exact":
                x = exact_sample(eps, u.clone(), self.alphas_cumprod, grid, callback)
            elif opts.inversion == "bdia":
                x = bdia_sample(eps, u.clone(), self.alphas_cumprod, grid, opts.bdia_gamma, callback)
            else:
                x = ddim_sample(eps, u.clone(), self.alphas_cumprod, grid, eta=opts.eta, clip=opts.clip,
                                dynamic_norm=opts.dynamic_norm, generator=generator, callback=callback)
        return x.clamp(-1, 1)           # outside inference mode: an ordinary tensor for the caller
