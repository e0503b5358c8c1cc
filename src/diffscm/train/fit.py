"""Fit a whole SCM from a graph and a dataset folder: check the data against the graph, plan every model the SCM
needs, train each one (resumable, skipping the finished ones), and pack them with a generated model card.

The plan, for a graph whose image has parents PA:

* ``diffusion``: the image mechanism, an ε-model conditioned on PA (``mechanism: conditional``, the default) or
  unconditional (``mechanism: paper``); where one parent in PA causes another, the conditional model's batches are
  drawn with balancing weights (:func:`balancing_weights`);
* ``predictors/P``: a noise-aware predictor of each P in PA (the paper mechanism's anti-causal guidance);
* ``flows/V``: a conditional flow for each continuous attribute with parents (roots keep their observed values:
  their exogenous noise is the value itself);
* ``oracles/P``: a clean-image classifier or regressor of each P in PA, and ``eval/vae``, the unconditional VAE of
  CLD: the evaluation models;
* ``selection/P``: a second model of each P in PA, of the oracle's form but another seed, that chooses the guidance
  defaults on validation images (``diffscm.eval.tune``), so that the oracles judge only the test images.

Architectures and steps scale with the image size and the budget (``quick``, ``standard``, ``full``).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import loop as tr
from ..errors import DiffSCMError
from ..files import write_json_atomic
from ..models import VAE, DiffusionModel, NoiseAwarePredictor, Oracle, RegressionOracle
from ..models.io import CONFIG_NAME
from ..schedule import make_alphas_cumprod
from ..scm.conditioning import cond_spec, make_flow, mean_std
from ..scm.graph import CausalGraph

MECHANISMS = ("conditional", "paper")
MIN_SIZE, MAX_SIZE = 28, 256


@dataclass(frozen=True)
class Budget:
    """Training steps of each kind of model, at batch ``batch_size``; the image model's own batch, learning rate,
    dropout, parent dropout (each parent to ∅ with ``p_parent``, all at once with ``p_all``) and how its UNet takes
    the time and parent embedding (``scale_shift``: as a per-channel scale and shift of the normalised features,
    ADM's AdaGN; else added to them)."""

    name: str
    diffusion: int
    predictor: int
    oracle: int
    flow: int
    vae: int
    batch_size: int = 128
    diffusion_batch: int = 128
    diffusion_lr: float = 5e-4
    dropout: float = 0.1
    p_parent: float = 0.2
    p_all: float = 0.1
    scale_shift: bool = False


BUDGETS = {
    # a short run learns faster at a higher rate and without dropout (measured on Colour-MNIST: 700 steps of batch
    # 128 at 5e-4 drew noise; 700 of batch 64 at 2e-3 drew coloured strokes), and its parents act more strongly
    # through AdaGN and with less parent dropout (measured on Colour-MNIST validation images: the selection models'
    # mean error halved, 0.126 → 0.068); under bf16 autocast a 2-core CPU with AVX-512 BF16 trains 115–200 images/s,
    # so 1200 steps of batch 128 take 13–22 minutes (21.1 measured at 115–131 images/s)
    "quick": Budget("quick", diffusion=1200, predictor=300, oracle=300, flow=600, vae=500, diffusion_batch=128,
                    diffusion_lr=2e-3, dropout=0.0, p_parent=0.1, p_all=0.05, scale_shift=True),
    "standard": Budget("standard", diffusion=4000, predictor=1500, oracle=1000, flow=2000, vae=2500),
    "full": Budget("full", diffusion=15000, predictor=4000, oracle=3000, flow=3000, vae=6000),
}
# the power of the diffusion's balancing weights where one image parent causes another (`balancing_weights`)
BALANCE = 0.5
# rough relative cost of one training step per image pixel: it weights the parts in the one progress bar, whose ETA
# then follows the rate the run measures
STEP_COST = {"diffusion": 1.0, "predictor": 0.3, "oracle": 0.08, "selector": 0.08, "vae": 0.05, "flow": 0.0}


@dataclass
class FitData:
    """Training images (N×C×S×S in [-1, 1]), the graph's attribute columns, the folder and the content hash."""

    root: Path
    images: torch.Tensor
    table: dict[str, np.ndarray]
    split: str
    digest: str

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


@dataclass
class Part:
    """One model of the plan: its folder under the work directory, its kind, target and training settings."""

    name: str
    what: str
    target: str | None
    steps: int
    batch_size: int
    lr: float
    config: dict = field(default_factory=dict)

    def cost(self, pixels: int) -> float:
        per_step = STEP_COST[self.what] * pixels * self.batch_size
        return self.steps * max(per_step, 1e-3 * self.batch_size)


@dataclass
class FitPlan:
    graph: CausalGraph
    mechanism: str
    budget: Budget
    parts: list[Part]
    size: int
    channels: int

    def key(self) -> dict:
        """What must not change between a run and its resumption."""
        return {"graph": self.graph.to_dict(), "mechanism": self.mechanism, "budget": asdict(self.budget),
                "parts": [asdict(p) for p in self.parts]}


# ------------------------------------------------------------------ data

def complete_graph(graph: CausalGraph, table: dict[str, np.ndarray], mechanism: str | None = None) -> CausalGraph:
    """The graph with every continuous support filled in from ``table`` where the graph leaves it open (the
    observed range widened by 5% on each side): the parent-conditioned ε-model encodes values by their support,
    and interventions are checked against it. ``mechanism`` is recorded as the graph's."""
    spec = graph.to_dict()
    if mechanism:
        spec["mechanism"] = mechanism
    for v in spec["variables"]:
        if v["kind"] == "continuous" and (v.get("low") is None or v.get("high") is None):
            x = np.asarray(table[v["name"]], dtype=np.float64)
            pad = 0.05 * max(float(x.max() - x.min()), 1e-6)
            if v.get("low") is None:
                v["low"] = float(x.min() - pad)
            if v.get("high") is None:
                v["high"] = float(x.max() + pad)
    return CausalGraph.from_dict(spec)


def load_fit_data(graph: CausalGraph, data_dir: Path, split: str | None = None) -> FitData:
    """The training split of a dataset folder (``train`` where labels.csv has a split column, else every row),
    checked against the graph before any image is read, then the images' sizes."""
    from ..data.folder import LABELS_CSV, has_split_column, load_folder, read_table

    data_dir = Path(data_dir)
    split = split or ("train" if has_split_column(data_dir) else None)
    files, table, _ = read_table(data_dir)                 # every row, held-out ones included
    graph.check_table(files, table, str(data_dir / LABELS_CSV))
    ds = load_folder(data_dir, split=split, masks=False)
    c, h, w = ds.images.shape[1:]
    if h != w:
        raise DiffSCMError(f"images of {data_dir} are {h}×{w}: fit needs square images")
    if not MIN_SIZE <= h <= MAX_SIZE or h % 4:
        raise DiffSCMError(f"images of {data_dir} are {h}×{h}: fit needs a size from {MIN_SIZE} to {MAX_SIZE} px, "
                           "divisible by 4")
    digest = hashlib.sha256(ds.images.tobytes())
    digest.update((data_dir / LABELS_CSV).read_bytes())
    names = [v for v, var in graph.variables.items() if var.kind != "image"]
    return FitData(data_dir, torch.as_tensor(ds.images) * 2 - 1,
                   {n: np.asarray(ds.table[n], dtype=np.float64) for n in names}, split or "all",
                   f"images+labels sha256 {digest.hexdigest()}")


# ------------------------------------------------------------------ plan

def unet_config(size: int, channels: int) -> dict:
    """A UNet2DModel config for C×S×S images: one more level per doubling of the size above 32 (at most 5), the
    last level with self-attention."""
    if size <= 32:
        widths = [32, 64, 64]
    elif size <= 64:
        widths = [32, 64, 128, 128]
    else:
        widths = [32, 64, 128, 128, 256]
    while size % 2 ** (len(widths) - 1):
        widths = widths[:-1]
    n = len(widths)
    return {"sample_size": size, "in_channels": channels, "out_channels": channels, "block_out_channels": widths,
            "down_block_types": ["DownBlock2D"] * (n - 1) + ["AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D"] + ["UpBlock2D"] * (n - 1),
            "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 32}


def _widths(size: int) -> list[int]:
    return [32, 64, 64] if size <= 32 else ([32, 64, 128, 128] if size <= 64 else [32, 64, 128, 128, 256])


def vae_shape(size: int) -> tuple[int, int]:
    """CLD's VAE for a size divisible by 4: (average-pooling factor, number of stride-2 levels). Full resolution
    where the flattened code stays within 40 000 features, else the least pooling that gets there (CLD needs the
    posteriors, not a full-resolution decoder)."""
    for f in (f for f in range(1, size + 1) if size % f == 0 and (size // f) % 4 == 0):
        s, depth = size // f, 2
        while depth < (2 if s <= 32 else 3 if s <= 64 else 4) and s % 2 ** (depth + 1) == 0:
            depth += 1
        if (s // 2 ** depth) ** 2 * 64 <= 40_000:
            return f, depth
    raise DiffSCMError(f"no VAE shape for {size} px")   # unreachable for sizes divisible by 4


def check_fittable(graph: CausalGraph) -> None:
    """A one-line error for a graph fit cannot learn: a categorical attribute with parents (fit learns the
    mechanisms of continuous attributes only, as flows)."""
    bad = [v.name for v in graph.variables.values() if v.kind == "categorical" and v.parents]
    if bad:
        raise DiffSCMError(f"categorical variable {bad[0]!r} has parents: fit learns the mechanisms of continuous "
                           "attributes (flows) only; make it a root or continuous")


def plan_fit(graph: CausalGraph, size: int, channels: int, budget: str | Budget = "standard",
             mechanism: str = "conditional", steps_scale: float = 1.0, batch_size: int | None = None,
             balance: float | None = None) -> FitPlan:
    """Every model the SCM needs, in training order, with its settings (see the module docstring).

    ``balance``: the power of the conditional ε-model's balancing weights (0: uniform batches); by default
    ``BALANCE`` where an image parent causes another, else 0."""
    if isinstance(budget, str) and budget not in BUDGETS:
        raise DiffSCMError(f"unknown budget {budget!r} (use {', '.join(BUDGETS)})")
    b = BUDGETS[budget] if isinstance(budget, str) else budget
    if mechanism not in MECHANISMS:
        raise DiffSCMError(f"unknown mechanism {mechanism!r} (use {', '.join(MECHANISMS)})")
    if not steps_scale > 0:
        raise DiffSCMError(f"the step scale must be positive, got {steps_scale}")
    if balance is not None and not 0.0 <= balance <= 1.0:
        raise DiffSCMError(f"the balancing power must lie in [0, 1], got {balance}")
    if balance and mechanism != "conditional":
        raise DiffSCMError("balancing weights apply to the conditional mechanism: the paper mechanism's "
                           "unconditional ε-model must learn the images' own distribution")
    check_fittable(graph)
    bs = batch_size or b.batch_size

    def steps(n: int) -> int:
        return max(1, round(n * steps_scale))

    parents = list(graph.image.parents)
    unet = {**unet_config(size, channels), "dropout": b.dropout}
    if b.scale_shift:
        unet["resnet_time_scale_shift"] = "scale_shift"
    diffusion = {"unet": unet, "conditional": mechanism == "conditional"}
    if balance is None:     # by default where an image parent causes another: their combinations are rare
        balance = BALANCE if mechanism == "conditional" and graph.descendants(parents) & set(parents) else 0.0
    if balance:
        diffusion["balance"] = balance
    parts = [Part("diffusion", "diffusion", None, steps(b.diffusion), batch_size or b.diffusion_batch, b.diffusion_lr,
                  diffusion)]
    if mechanism == "paper":
        parts += [Part(f"predictors/{p}", "predictor", p, steps(b.predictor), bs, 1e-3,
                       {"channels": _widths(size)}) for p in parents]
    parts += [Part(f"flows/{v.name}", "flow", v.name, steps(b.flow), max(bs, 256), 3e-3)
              for v in (graph.variables[n] for n in graph.topological_order()) if v.kind == "continuous" and v.parents]
    parts += [Part(f"oracles/{p}", "oracle", p, steps(b.oracle), bs, 1e-3) for p in parents]
    parts += [Part(f"selection/{p}", "selector", p, steps(b.oracle), bs, 1e-3) for p in parents]
    parts.append(Part("eval/vae", "vae", None, steps(b.vae), bs, 1e-3))
    return FitPlan(graph, mechanism, b, parts, size, channels)


def balancing_weights(graph: CausalGraph, table: dict[str, np.ndarray], parents: list[str], power: float,
                      bins: int = 9) -> np.ndarray:
    """Per-image sampling weights that move the image parents' joint distribution towards the product of its
    marginals: each image's cell (a categorical value; a continuous one in ``bins`` equal bins of its support) gets
    (Π marginal frequencies / joint frequency) ** ``power``, normalised to mean 1.

    p(x | pa) is unchanged by weighting on pa alone, so the ε-model learns the same mechanism, but sees the
    combinations that a do() on one parent asks for (a digit in a colour other than its own) far more often."""
    cols = []
    for p in parents:
        v, var = np.asarray(table[p], dtype=np.float64), graph.variables[p]
        if var.kind == "categorical":
            cols.append(v.astype(np.int64))
        else:
            rel = (v - var.low) / (var.high - var.low)
            cols.append(np.clip(np.floor(rel * bins), 0, bins - 1).astype(np.int64))
    ratio = np.ones(len(cols[0]))
    for c in cols:
        ratio *= (np.bincount(c) / len(c))[c]
    cell = np.unique(np.stack(cols, 1), axis=0, return_inverse=True)[1].ravel()
    ratio /= (np.bincount(cell) / len(cell))[cell]
    w = ratio ** power
    return w / w.mean()


def build_part(part: Part, plan: FitPlan, data: FitData) -> tuple:
    """The model, its loss and its (inputs, labels) tensors."""
    g, table, x = plan.graph, data.table, data.images
    size, c = plan.size, plan.channels
    if part.what == "diffusion":
        parents = list(g.image.parents)
        cfg = {"unet": part.config["unet"], "schedule": "linear"}
        if part.config["conditional"]:
            cfg["parents"] = cond_spec(g, parents)
        model = DiffusionModel(cfg)
        y = torch.as_tensor(np.stack([table[p] for p in parents], 1), dtype=torch.float32)
        b = plan.budget
        loss = tr.diffusion_loss(model, b.p_parent, 5.0, b.p_all) if part.config["conditional"] \
            else tr.diffusion_loss(model, 0.0, 5.0)
        return model, loss, x, y
    target = part.target
    var = g.variables.get(target) if target else None
    if part.what == "predictor":
        cfg = {"target": target, "in_channels": c, "channels": part.config["channels"], "schedule": "linear",
               "num_train_timesteps": 1000}
        if var.kind == "categorical":
            cfg["num_classes"] = var.num_classes
            y = torch.as_tensor(table[target]).long()
        else:
            m, s = mean_std(table[target])
            cfg.update({"target_kind": "continuous", "target_mean": m, "target_std": s})
            y = torch.as_tensor(table[target], dtype=torch.float32)
        model = NoiseAwarePredictor(cfg)
        return model, tr.predictor_loss(model, make_alphas_cumprod("linear", 1000).float()), x, y
    if part.what in ("oracle", "selector"):
        common = {"in_channels": c, "image_size": size, "input_pool": max(1, size // 32) if size >= 64 else 1,
                  "view": var.oracle_view or "image"}
        if var.kind == "categorical":
            model = Oracle({**common, "num_classes": var.num_classes})
            return model, tr.oracle_loss(model), x, torch.as_tensor(table[target]).long()
        m, s = mean_std(table[target])
        model = RegressionOracle({**common, "target": target, "target_mean": m, "target_std": s})
        return model, tr.regression_oracle_loss(model), x, torch.as_tensor(table[target], dtype=torch.float32)
    if part.what == "flow":
        model = make_flow(g, target, table)
        pa = torch.as_tensor(np.stack([table[p] for p in var.parents], 1), dtype=torch.float32)
        return model, tr.flow_loss(model, list(var.parents)), torch.as_tensor(table[target], dtype=torch.float32), pa
    if part.what == "vae":
        pool, depth = vae_shape(size)
        model = VAE({"latent": 16, "in_channels": c, "size": size, "input_pool": pool, "channels": [32, 64, 64, 64][:depth]})
        return model, tr.vae_loss(model), x, torch.zeros(len(x), dtype=torch.long)
    raise DiffSCMError(f"unknown part kind {part.what!r}")


# ------------------------------------------------------------------ run

def part_done(folder: Path, part: Part) -> bool:
    """A part is done when its checkpoint reached its steps."""
    cfg = folder / CONFIG_NAME
    if not cfg.exists():
        return False
    meta = json.loads(cfg.read_text()).get("meta", {})
    return meta.get("step") == part.steps


def work_dir(out: Path, work: Path | None = None) -> Path:
    """The folder of a fit's parts: ``work``, by default ``OUT.parts`` beside ``out``."""
    return Path(work) if work is not None else Path(out).parent / f"{Path(out).name}.parts"


def plan_change(old: dict, key: dict) -> str | None:
    """The first entry of a fit's key (graph, mechanism, budget, parts, data, seed) that differs from the ``old``
    plan.json's, else None. A budget field the old file lacks had its default then."""
    if isinstance(old.get("budget"), dict):
        old = {**old, "budget": {**{f.name: f.default for f in fields(Budget) if f.default is not MISSING},
                                 **old["budget"]}}
    return next((k for k in key if old.get(k) != key[k]), None)


def fit_scm(graph: CausalGraph, data_dir: Path, out: Path, *, budget: str | Budget = "standard", mechanism: str | None = None,
            work: Path | None = None, resume: bool = False, overwrite: bool = False, device: str = "auto",
            steps_scale: float = 1.0, batch_size: int | None = None, balance: float | None = None, seed: int = 0,
            save_every: int = 200,
            progress: bool = True, log: Callable[[str], None] = print, command: str | None = None) -> Path:
    """Train every model of the plan in ``work`` (default ``OUT.parts``) and pack them into the SCM folder ``out``.

    ``mechanism`` defaults to the graph file's ``mechanism`` (conditional when absent). With ``resume`` finished
    parts are skipped and unfinished ones continue from their checkpoints; without it, an existing work folder is
    an error. Under ``torchrun`` or ``accelerate launch`` each part trains data-parallel and rank 0 packs."""
    from ..distributed import barrier, device_for, topology
    from ..progress import make_progress

    out = Path(out)
    if isinstance(budget, str) and budget not in BUDGETS:
        raise DiffSCMError(f"unknown budget {budget!r} (use {', '.join(BUDGETS)})")
    if mechanism not in (None, *MECHANISMS):
        raise DiffSCMError(f"unknown mechanism {mechanism!r} (use {', '.join(MECHANISMS)})")
    work = work_dir(out, work)
    if out.exists() and not (overwrite or resume):
        raise DiffSCMError(f"{out} already exists; pass --overwrite to replace it or --resume to continue the fit")
    if work.exists() and not work.is_dir():
        raise DiffSCMError(f"--work {work} is a file, not a folder")
    if work.exists() and any(work.iterdir()) and not resume:
        raise DiffSCMError(f"{work} holds the parts of an earlier fit; pass --resume to continue it or remove it")
    mechanism = mechanism or graph.mechanism or "conditional"
    from ..data.folder import read_table

    check_fittable(graph)
    data = load_fit_data(graph, data_dir)
    graph = complete_graph(graph, read_table(data_dir)[1], mechanism)   # supports over every row
    plan = plan_fit(graph, data.size, data.channels, budget, mechanism, steps_scale, batch_size, balance)
    key = {**plan.key(), "data": data.digest, "seed": seed}
    plan_file = work / "plan.json"
    if plan_file.exists():
        diff = plan_change(json.loads(plan_file.read_text()), key)
        if diff:
            raise DiffSCMError(f"{work} was fitted with another {diff}; resume with the same graph, data and "
                               "budget, or remove it")
    top = topology()
    dev = device_for(top, device)
    barrier(top)            # every rank has checked the work folder before rank 0 writes into it
    say = log if top.is_main else (lambda _s: None)
    work.mkdir(parents=True, exist_ok=True)
    if top.is_main:
        write_json_atomic(plan_file, key)
    mp = "bf16" if dev.type == "cuda" or (dev.type == "cpu" and tr.cpu_has_native_bf16()) else "no"
    pixels = data.size * data.size * data.channels
    total = sum(p.cost(pixels) for p in plan.parts)
    log_file = work / "fit.log"
    command = command or " ".join(["diffscm", *sys.argv[1:]])
    t_start = time.time()
    with make_progress(progress and top.is_main) as bar, log_file.open("a") as fh:
        record = (lambda s: (fh.write(s + "\n"), fh.flush())) if top.is_main else (lambda _s: None)
        task = bar.add_task("fit", total=total)
        done_units = 0.0
        for k, part in enumerate(plan.parts):
            folder = work / part.name
            unit = part.cost(pixels) / part.steps
            if part_done(folder, part):
                say(f"[{k + 1}/{len(plan.parts)}] {part.name}: done, skipped")
                done_units += part.cost(pixels)
                bar.update(task, completed=done_units)
                continue
            say(f"[{k + 1}/{len(plan.parts)}] {part.name}: {part.what}, {part.steps} steps of batch {part.batch_size}")
            part_seed = seed + (part.what == "selector")   # the selection models differ from the oracles
            torch.manual_seed(part_seed)
            model, loss, inputs, labels = build_part(part, plan, data)
            weights = None if "balance" not in part.config else torch.as_tensor(balancing_weights(
                plan.graph, data.table, list(plan.graph.image.parents), part.config["balance"]))
            is_diff = part.what == "diffusion"
            cfg = tr.TrainConfig(steps=part.steps, batch_size=part.batch_size, lr=part.lr, seed=part_seed,
                                 save_every=save_every, warmup=min(300 if is_diff else 100, part.steps // 10),
                                 lr_schedule="cosine", ema_decay=tr.auto_ema_decay(part.steps) if is_diff else 0.0)
            extra = {"dataset": "folder", "split": data.split, "n_images": int(len(data.images)),
                     "data": f"{data.root} {data.digest}",
                     "command": command, "fit_part": part.name, "device": str(dev),
                     "torch_threads": torch.get_num_threads(), "processes": top.world}
            base = done_units

            def on_step(step: int, base=base, unit=unit, name=part.name, steps=part.steps) -> None:
                bar.update(task, completed=base + step * unit, description=f"fit {name} {step}/{steps}")

            tr.fit(model, loss, inputs, labels, cfg, folder, resume=folder.exists(), device=dev,
                   extra_config=extra, log=record, quiet=True, top=top,
                   mixed_precision=mp if part.what != "flow" else "no", on_step=on_step,
                   sample_weights=weights)
            done_units += part.cost(pixels)
    if top.is_main:
        pack_fit(plan, work, out, data, command, time.time() - t_start)
        log(str(out))
    return out


def default_options(plan: FitPlan) -> dict:
    """The packed inference defaults (before any tuning on validation data): 20 DDIM steps with exact inversion,
    guidance on the intervened parents only; the conditional mechanism at w = 1 (its own conditional), the paper
    mechanism at scale 4 per predictor."""
    parents = list(plan.graph.image.parents)
    base = {"steps": 20, "ratio": 1.0, "clip": False, "dynamic_norm": False, "inversion": "exact",
            "inversion_iters": 1, "guidance": "intervened"}
    if plan.mechanism == "conditional":
        return {**base, "scales": {}, "cfg_weights": {p: 1.0 for p in parents}}
    return {**base, "scales": {p: 4.0 for p in parents}}


def pack_fit(plan: FitPlan, work: Path, out: Path, data: FitData, command: str, seconds: float) -> None:
    """Pack the parts into ``out`` with a model card (plan, data, every part's training, held-out oracle figures)."""
    from ..scm.packaging import pack_scm

    names = {p.name: work / p.name for p in plan.parts}
    pick = lambda prefix: {n.split("/", 1)[1]: d for n, d in names.items() if n.startswith(prefix + "/")}  # noqa: E731
    defaults = default_options(plan)
    card = model_card(plan, work, data, command, seconds)
    pack_scm(out, plan.graph.to_dict(), names["diffusion"], pick("predictors"), defaults, oracles=pick("oracles"),
             flows=pick("flows"), overwrite=True, evaluation={"vae": names["eval/vae"]},
             extra_files={"MODEL_CARD.md": card})


def oracle_figures(plan: FitPlan, work: Path, data_dir: Path) -> list[str]:
    """Each oracle's accuracy (categorical) or MAE (continuous) on the held-out rows (``test``, else ``val``)."""
    from ..data.folder import has_split_column, load_folder, read_table
    from ..models import load_model

    if not has_split_column(data_dir):
        return ["- no held-out split in labels.csv: the oracles were not scored"]
    _, table, _ = read_table(data_dir)
    split = next((s for s in ("test", "val", "valid") if s in set(table["split"].tolist())), None)
    if split is None:
        return ["- no test or val rows in labels.csv: the oracles were not scored"]
    ds = load_folder(data_dir, split=split, masks=False)
    x = torch.as_tensor(ds.images) * 2 - 1
    lines = []
    for p in plan.graph.image.parents:
        model = load_model(work / "oracles" / p).eval()
        with torch.inference_mode():
            out = torch.cat([model(x[i:i + 256]) if plan.graph.variables[p].kind == "categorical"
                             else model.predict(x[i:i + 256]) for i in range(0, len(x), 256)])
        y = np.asarray(ds.table[p], dtype=np.float64)
        if plan.graph.variables[p].kind == "categorical":
            lines.append(f"- oracle `{p}`: accuracy {float((out.argmax(1).numpy() == y).mean()):.3f} on the "
                         f"{len(y)} `{split}` images")
        else:
            lines.append(f"- oracle `{p}`: MAE {float(np.abs(out.numpy() - y).mean()):.4g} on the {len(y)} `{split}` "
                         f"images (values span {y.min():.4g}..{y.max():.4g})")
    return lines


def model_card(plan: FitPlan, work: Path, data: FitData, command: str, seconds: float) -> str:
    """MODEL_CARD.md of a fitted SCM, generated from the plan, the data and the parts' trainer states."""
    import tempfile

    from ..scm.packaging import CARD_SUMMARY_HEADER, card_parts, training_summary
    from ..markdown import md_table

    with tempfile.TemporaryDirectory() as tmp:
        for p in plan.parts:    # card_parts reads packed parts: stage their summaries
            d = Path(tmp) / p.name
            d.mkdir(parents=True)
            (d / "training.json").write_text(json.dumps(training_summary(work / p.name)))
            (d / "model.safetensors").symlink_to((work / p.name / "model.safetensors").resolve())
        prose = {p.name: _PROSE[p.what].format(target=p.target) + (
            f" Batches drawn with balancing weights of power {p.config['balance']} over the image parents' cells "
            "(`diffscm.train.fit.balancing_weights`)." if "balance" in p.config else "") for p in plan.parts}
        parts_md, rows = card_parts(Path(tmp), [p.name for p in plan.parts], prose)
    g = plan.graph
    lines = ["# Model card", "", f"An SCM fitted by `diffscm fit` ({plan.mechanism} image mechanism, budget "
             f"`{plan.budget.name}`).", "", f"- command: `{command}`", f"- data: `{data.root}`, {data.digest}, split `{data.split}`, "
             f"{len(data.images)} images of {plan.channels}×{plan.size}×{plan.size}",
             f"- wall time of this run: {seconds / 60:.1f} min", "", "## Graph", ""]
    for v in g.variables.values():
        extra = f", {v.num_classes} classes" if v.kind == "categorical" else \
            (f", support [{v.low:g}, {v.high:g}]" if v.kind == "continuous" else "")
        lines.append(f"- `{v.name}` ({v.kind}{extra}) ← {', '.join(v.parents) or 'root'}")
    lines += ["", "## Figures", "", *oracle_figures(plan, work, data.root), "",
              "Counterfactual figures (effectiveness, composition, reversibility, CLD, realism): "
              "`diffscm evaluate --model THIS_FOLDER --data-dir DATA --json r.json --report runs/eval`.", "", "## Parts", "",
              md_table(CARD_SUMMARY_HEADER, rows), "", *parts_md]
    return "\n".join(lines) + "\n"


_PROSE = {
    "diffusion": "The image mechanism: a UNet ε-model (linear schedule, T = 1000; min-SNR-5 weighting, cosine decay, "
                 "EMA matched to the run).",
    "predictor": "Noise-aware predictor of `{target}` from x_t (the paper mechanism's anti-causal guidance).",
    "flow": "Conditional spline flow of `{target}` given its parents (exact abduction).",
    "oracle": "Clean-image oracle of `{target}`, for evaluation only (effectiveness); never used by inference.",
    "selector": "Selection model of `{target}` (the oracle's form, another seed): it chooses the guidance defaults on "
                "validation images; not packed.",
    "vae": "Unconditional VAE whose posteriors define CLD, for evaluation only.",
}
