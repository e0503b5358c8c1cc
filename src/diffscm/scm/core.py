"""Structural causal model over attributes and one image, and Pearl's three counterfactual steps.

* :func:`abduct`  — infer the exogenous noise of every variable (the image's is its DDIM latent);
* :func:`act`     — apply do(·) per sample, recompute descendants of the intervened attributes;
* :func:`predict` — push the noise through the mechanisms under the new parent values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..distributed import Topology, block, gather_rows
from ..errors import DiffSCMError
from ..progress import make_progress
from .graph import CausalGraph
from .mechanisms import DiffusionImageMechanism, InferenceOptions, Root
from ..models import ADMClassifier, AttributeFlow, DiffusionModel, NoiseAwarePredictor, Oracle, load_model
from ..models.io import load_config

SCM_CONFIG = "scm.json"
PRETRAINED = ("mnist", "morphomnist", "lesion-mnist")


@dataclass
class Exogenous:
    """Abducted noise: one tensor per attribute, the image latent and the factual image-parent values it was
    abducted under (guidance on the intervened parents compares the counterfactual values with them)."""

    attributes: dict[str, torch.Tensor]
    image: torch.Tensor
    parents: dict[str, torch.Tensor] | None = None


class SCM:
    """A causal graph plus one mechanism per node."""

    def __init__(self, graph: CausalGraph, image: DiffusionImageMechanism, attributes: dict | None = None,
                 defaults: InferenceOptions | None = None, oracles: dict | None = None, path: Path | None = None,
                 mechanism_defaults: dict[str, dict] | None = None):
        self.graph = graph
        self.image_mechanism = image
        self.attribute_mechanisms = attributes or {}
        self.defaults = defaults or InferenceOptions()
        # per-mechanism overrides of the defaults (e.g. the paper mechanism's own steps and scales)
        self.mechanism_defaults = mechanism_defaults or {}
        self.oracles = oracles or {}     # clean-image evaluation models by variable (classifier or regressor)
        self.oracle = self.oracles.get("digit")
        self.path = path
        for v in graph.variables.values():
            if v.kind != "image" and v.name not in self.attribute_mechanisms:
                if v.parents:
                    raise DiffSCMError(f"variable {v.name!r} has parents but no mechanism (a flow)")
                self.attribute_mechanisms[v.name] = Root()

    @property
    def image_name(self) -> str:
        return self.graph.image.name

    @property
    def device(self) -> torch.device:
        return self.image_mechanism.diffusion.alphas_cumprod.device

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str = "cpu") -> "SCM":
        """Load an SCM folder (``scm.json`` + model sub-folders), or a shipped one by name (``mnist``)."""
        path = resolve_model(name_or_path)
        cfg_file = path / SCM_CONFIG
        if not cfg_file.exists():
            raise DiffSCMError(f"{path} is not an SCM folder: it has no {SCM_CONFIG}")
        try:
            cfg = json.loads(cfg_file.read_text())
            graph = CausalGraph.from_dict(cfg["graph"])
            img = cfg["image"]
            diffusion = DiffusionModel.from_pretrained(path / img["diffusion"], device)
            predictors = {k: load_predictor(path / v, device) for k, v in img["predictors"].items()}
            defaults = InferenceOptions(**cfg.get("defaults", {}))
            mech_defaults = {k: dict(v) for k, v in (cfg.get("mechanism_defaults") or {}).items()}
            for m, d in mech_defaults.items():
                InferenceOptions(**{**cfg.get("defaults", {}), **d, "mechanism": m})
        except json.JSONDecodeError as exc:
            raise DiffSCMError(f"{cfg_file} is not valid JSON ({exc.msg})") from None
        except (KeyError, TypeError) as exc:
            raise DiffSCMError(f"{cfg_file} is malformed: {exc}") from None
        for name, p in predictors.items():
            if p.config.get("schedule", "linear") != diffusion.config["schedule"]:
                raise DiffSCMError(f"predictor {name!r} was trained on another noise schedule than the diffusion model")
        oracles = {}
        for name, rel in (cfg.get("oracles") or {}).items():
            oracles[name] = load_model(path / rel, device)
        if cfg.get("oracle"):
            oracles[graph.image.parents[0]] = Oracle.from_pretrained(path / cfg["oracle"], device)
        flows = {k: AttributeFlow.from_pretrained(path / v, device) for k, v in (cfg.get("attributes") or {}).items()}
        for m in [diffusion, *predictors.values(), *oracles.values(), *flows.values()]:
            m.requires_grad_(False)  # inference only: guidance differentiates w.r.t. x_t, never the weights
        mech = DiffusionImageMechanism(diffusion, predictors, condition=img.get("condition"))
        return cls(graph, mech, attributes=flows, defaults=defaults,
                   oracles=oracles, path=path, mechanism_defaults=mech_defaults)

    def fit_attributes(self, table: dict[str, np.ndarray], steps: int = 2000, batch_size: int = 256, lr: float = 3e-3,
                       seed: int = 0) -> dict[str, float]:
        """Fit a conditional flow for every continuous attribute from an attribute table (name -> values).

        Returns each flow's final mean negative log-likelihood (standardised units). For checkpointed training
        use ``diffscm train flow``.
        """
        from .conditioning import make_flow

        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        nll = {}
        for name in self.graph.topological_order():
            var = self.graph.variables[name]
            if var.kind != "continuous":
                continue
            values = torch.as_tensor(np.asarray(table[name]), dtype=torch.float32)
            flow = make_flow(self.graph, name, table)
            pa = {p: torch.as_tensor(np.asarray(table[p])) for p in var.parents}
            opt = torch.optim.Adam(flow.parameters(), lr=lr)
            for _ in range(steps):
                idx = torch.randint(len(values), (batch_size,), generator=gen)
                loss = -flow.log_prob(values[idx], {p: v[idx] for p, v in pa.items()}).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            flow.eval()
            with torch.no_grad():
                nll[name] = float(-flow.log_prob(values, pa).mean())
            self.attribute_mechanisms[name] = flow.to(self.device)
        return nll

    def compile(self, **kwargs) -> "SCM":
        """``torch.compile`` the ε-model and the anti-causal predictors in place (optional; the first call per batch
        shape compiles). Not bit-exact: outputs differ from eager by float rounding (≈ 1e-6)."""
        self.image_mechanism.diffusion.unet.compile(**kwargs)
        for p in self.image_mechanism.predictors.values():
            p.compile(**kwargs)
        return self

    def options(self, **overrides) -> InferenceOptions:
        """The SCM's default inference options with ``overrides`` (``None`` values ignored). Choosing a
        ``mechanism`` first applies that mechanism's own defaults (``mechanism_defaults`` in ``scm.json``)."""
        d = dict(self.defaults.__dict__)
        mech = overrides.get("mechanism") or d["mechanism"]
        d.update(self.mechanism_defaults.get(mech, {}))
        d["scales"], d["cfg_weights"] = dict(d["scales"]), dict(d["cfg_weights"])
        for k, v in overrides.items():
            if v is None:
                continue
            if k == "scale":
                d["scales"] = {n: float(v) for n in self.image_mechanism.predictors}
            else:
                d[k] = v
        return InferenceOptions(**d)

    def check_values(self, values: dict[str, torch.Tensor], missing_ok: bool = False) -> None:
        """One-line errors for unknown variables and values outside their support (NaN allowed if ``missing_ok``)."""
        for name, val in values.items():
            if name not in self.graph.variables or name == self.image_name:
                known = ", ".join(n for n in self.graph.variables if n != self.image_name)
                raise DiffSCMError(f"unknown variable {name!r} (this model has: {known})")
            var = self.graph.variables[name]
            flat = torch.as_tensor(val).flatten()
            if missing_ok and flat.is_floating_point():
                flat = flat[~torch.isnan(flat)]
            if not torch.isfinite(flat.float()).all():
                raise DiffSCMError(f"{name} has non-finite values")
            for v in flat.unique().tolist():
                var.check_value(v)

    def check_images(self, x: torch.Tensor) -> None:
        shape = tuple(self.image_mechanism.diffusion.image_shape)
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise DiffSCMError(f"images must have shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise DiffSCMError("images contain NaN or infinite values")
        if x.min() < -1.0001 or x.max() > 1.0001:
            raise DiffSCMError(f"images must be scaled to [-1, 1], got [{x.min():.3g}, {x.max():.3g}]")

    def counterfactual(self, observed: dict[str, torch.Tensor], do: dict[str, torch.Tensor],
                       opts: InferenceOptions | None = None, progress: bool = True,
                       top: Topology | None = None) -> dict[str, torch.Tensor]:
        """Counterfactuals of ``observed`` (image in [-1, 1] + all attributes) under per-sample ``do``, batched.

        A NaN in a (float) ``do`` tensor leaves that sample's variable un-intervened; ``do = {}`` is the null intervention.

        With a multi-process ``top`` (see :mod:`diffscm.distributed`) each rank computes a contiguous block of the
        batches and every rank returns the gathered result, equal to the single-process one.
        """
        opts = opts or self.defaults
        top = top or Topology()
        x = observed[self.image_name]
        self.check_images(x)
        attrs = {k: torch.as_tensor(v) for k, v in observed.items() if k != self.image_name}
        missing = [n for n in self.graph.variables if n != self.image_name and n not in attrs]
        if missing:
            raise DiffSCMError(f"observed values missing for {', '.join(missing)}")
        self.check_values(attrs)
        do = {k: torch.as_tensor(v).expand(x.shape[0]) if torch.as_tensor(v).ndim == 0 else torch.as_tensor(v)
              for k, v in do.items()}
        self.check_values(do, missing_ok=True)
        for k, v in do.items():
            if v.shape[0] != x.shape[0]:
                raise DiffSCMError(f"do({k}) has {v.shape[0]} values for {x.shape[0]} images")
        n, bs = x.shape[0], opts.batch_size
        k_steps = len(self.image_mechanism.grid(opts)) - 1
        mine = block((n + bs - 1) // bs, top)
        outs: dict[str, list[torch.Tensor]] = {}
        with make_progress(progress and top.is_main) as bar:
            task = bar.add_task("counterfactuals", total=2 * k_steps * len(mine))
            tick = lambda _i: bar.advance(task)  # noqa: E731
            for b in mine:
                sl = slice(b * bs, (b + 1) * bs)
                obs_b = {self.image_name: x[sl].to(self.device), **{k: v[sl].to(self.device) for k, v in attrs.items()}}
                do_b = {k: v[sl].to(self.device) for k, v in do.items()}
                noise = abduct(self, obs_b, opts, callback=tick)
                values = act(self, obs_b, noise, do_b)
                gen = batch_generator(self.device, opts.seed, b)
                img = predict(self, noise, values, opts, generator=gen, callback=tick)
                for k, v in {**values, self.image_name: img}.items():
                    outs.setdefault(k, []).append(v.cpu())
        if not outs:  # a rank with no batch (more ranks than batches) still takes part in the gather
            outs = {k: [v[:0]] for k, v in {**attrs, self.image_name: x}.items()}
        return {k: gather_rows(torch.cat(outs[k]), top) for k in sorted(outs)}  # same order on every rank


def batch_generator(device: torch.device, seed: int, batch_index: int) -> torch.Generator:
    """The generator of the η > 0 prediction noise of one batch (seeded per batch)."""
    return torch.Generator(device=device).manual_seed(seed * 100003 + batch_index)


def abduct(scm: SCM, observed: dict[str, torch.Tensor], opts: InferenceOptions,
           callback: Callable[[int], None] | None = None) -> Exogenous:
    """Abduction: exogenous noise of each attribute by inverting its mechanism; the image's by inverting the image
    mechanism's ε-function under the factual parents (see :meth:`DiffusionImageMechanism.abduct`)."""
    attrs = abduct_attributes(scm, observed)
    parents = {p: observed[p] for p in scm.graph.image.parents}
    u = scm.image_mechanism.abduct(observed[scm.image_name], opts, callback, parents=parents)
    return Exogenous(attrs, u, parents)


def abduct_attributes(scm: SCM, observed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Exogenous noise of every attribute, exactly, by inverting its mechanism (a flow, or identity for a root)."""
    attrs = {}
    for name in scm.graph.topological_order():
        var = scm.graph.variables[name]
        if var.kind == "image":
            continue
        parents = {p: observed[p] for p in var.parents}
        attrs[name] = scm.attribute_mechanisms[name].abduct(observed[name], parents)
    return attrs


def act(scm: SCM, observed: dict[str, torch.Tensor], noise: Exogenous,
        do: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Action: set the intervened attributes per sample; recompute their descendants from their abducted noise.

    A sample is intervened on a variable where its ``do`` value is not NaN; samples not intervened on a variable,
    and none of whose ancestors changed, keep their observed value. Returns every attribute's counterfactual value
    (the image is left to :func:`predict`).
    """
    values: dict[str, torch.Tensor] = {}
    changed: dict[str, torch.Tensor] = {}
    for name in scm.graph.topological_order():
        var = scm.graph.variables[name]
        if var.kind == "image":
            continue
        obs = observed[name]
        moved = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        for p in var.parents:
            moved |= changed[p]
        val = obs
        if moved.any():
            parents = {p: values[p] for p in var.parents}
            val = torch.where(moved, scm.attribute_mechanisms[name](noise.attributes[name], parents).to(obs.dtype), obs)
        if name in do:
            d = do[name].to(obs.device)
            hit = ~torch.isnan(d) if d.is_floating_point() else torch.ones_like(moved)
            val = torch.where(hit, d.nan_to_num(0).to(obs.dtype) if d.is_floating_point() else d.to(obs.dtype), val)
            moved |= hit
        values[name], changed[name] = val, moved
    return values


def predict(scm: SCM, noise: Exogenous, values: dict[str, torch.Tensor], opts: InferenceOptions,
            generator: torch.Generator | None = None, callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Prediction: decode the image latent under the counterfactual values of all the image's parents."""
    parents = {p: values[p] for p in scm.graph.image.parents}
    return scm.image_mechanism.predict(noise.image, parents, opts, generator, callback, factual=noise.parents)


def load_predictor(path: Path, device: torch.device | str):
    """An anti-causal predictor: ours, or a converted guided-diffusion classifier (both have ``log_prob``)."""
    if load_config(path).get("kind") == ADMClassifier.kind:
        return load_model(path, device)
    return NoiseAwarePredictor.from_pretrained(path, device)


def resolve_model(name_or_path: str | Path) -> Path:
    """``mnist`` -> the checkpoints shipped inside the package; anything else is a folder path."""
    if str(name_or_path) in PRETRAINED:
        return Path(str(resources.files("diffscm") / "pretrained" / str(name_or_path)))
    path = Path(name_or_path)
    if not path.exists():
        raise DiffSCMError(f"model {str(name_or_path)!r} is neither a shipped model ({', '.join(PRETRAINED)}) nor a folder")
    return path
