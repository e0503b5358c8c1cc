"""Model + loss + data of each ``diffscm train`` job (MNIST and Morpho-MNIST), kept apart from argument parsing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import training as tr
from .data import to_model_range
from .errors import DiffSCMError
from .graph import MNIST_GRAPH, MORPHO_GRAPH, CausalGraph
from .models.diffusion import DEFAULT_UNET
from .models import (
    VAE,
    AttributeFlow,
    Classifier,
    DiffusionModel,
    Judge,
    NoiseAwarePredictor,
    Oracle,
    RegressionOracle,
)

DATASETS = ("mnist", "morphomnist", "folder")


@dataclass
class TrainJob:
    model: torch.nn.Module
    loss: object
    inputs: torch.Tensor
    labels: torch.Tensor
    extra: dict = field(default_factory=dict)


def load_morpho_folder(data_dir: Path | None, split: str = "train") -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Images and attributes of a Morpho-MNIST folder, and its data hash. Two layouts are read: the one written by
    ``diffscm data morphomnist --out`` ({split}-images.npy + {split}-attributes.csv) and the one Morpho-MNIST is
    distributed in (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, t10k-morpho.csv; train-… likewise)."""
    import hashlib

    from .data.morphomnist import community_files, load_community_split, read_attributes_csv

    if data_dir is None:
        raise DiffSCMError("--dataset morphomnist needs --data-dir: a folder written by `diffscm data morphomnist --out` "
                           "or one in Morpho-MNIST's own layout")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DiffSCMError(f"--data-dir {data_dir} is not a folder")
    images_file, csv_file = data_dir / f"{split}-images.npy", data_dir / f"{split}-attributes.csv"
    ours = [f for f in (images_file, csv_file) if f.exists()]
    community = community_files(data_dir, split)
    if not ours and any(f.exists() or f.with_suffix("").exists() for f in community):
        images, attrs = load_community_split(data_dir, split)
        h = hashlib.sha256(images.tobytes())
        h.update(community[2].read_bytes())
        return images, attrs, h.hexdigest()
    for f in (images_file, csv_file):
        if not f.exists():
            raise DiffSCMError(f"{f} does not exist (write it with `diffscm data morphomnist --out {data_dir}`, or give "
                               f"a folder holding {community[0].name}, {community[1].name} and {community[2].name})")
    images = np.load(images_file, allow_pickle=False)
    attrs = read_attributes_csv(csv_file)
    if images.ndim != 3 or len(images) != len(attrs["digit"]):
        raise DiffSCMError(f"{images_file} ({images.shape}) does not match {csv_file} ({len(attrs['digit'])} rows)")
    h = hashlib.sha256(images.tobytes())
    h.update(csv_file.read_bytes())
    return images, attrs, h.hexdigest()


MORPHO_VALID = 2000   # the last images of the Morpho-MNIST training split, held out to choose settings


def morpho_split(x: np.ndarray, attrs: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``train`` (all but the last MORPHO_VALID images of the training split), ``valid`` (those) or ``train+valid``.
    A training split of at most 2·MORPHO_VALID images (a small build) is used whole for ``train``."""
    if split not in ("train", "valid", "train+valid"):
        raise DiffSCMError(f"unknown --split {split!r} for Morpho-MNIST (train, valid or train+valid)")
    if split == "train+valid" or (split == "train" and len(x) <= 2 * MORPHO_VALID):
        return x, attrs
    if len(x) <= 2 * MORPHO_VALID:
        raise DiffSCMError(f"the training split has {len(x)} images: too few to hold out {MORPHO_VALID} for validation")
    sl = slice(None, -MORPHO_VALID) if split == "train" else slice(-MORPHO_VALID, None)
    return x[sl], {k: v[sl] for k, v in attrs.items()}


def _stats(v: np.ndarray) -> tuple[float, float]:
    return float(np.mean(v)), float(np.std(v) + 1e-8)


def cond_spec(graph: CausalGraph, names, attrs: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Encoding of conditioning variables: categorical by class; continuous standardised with the data's stats, or
    (``attrs=None``, for a parent-conditioned ε-model) by the variable's support."""
    spec = []
    for n in names:
        v = graph.variables[n]
        if v.kind == "categorical":
            spec.append({"name": n, "kind": "categorical", "num_classes": v.num_classes})
        elif attrs is None:
            spec.append({"name": n, "kind": "continuous", "low": v.low, "high": v.high})
        else:
            m, s = _stats(attrs[n])
            spec.append({"name": n, "kind": "continuous", "mean": m, "std": s})
    return spec


def make_flow(graph: CausalGraph, name: str, table: dict[str, np.ndarray]) -> AttributeFlow:
    """An untrained flow for continuous variable ``name``, standardised with the table's statistics."""
    var = graph.variables[name]
    probe = AttributeFlow({"target": name, "low": var.low, "high": var.high})
    m, s = _stats(probe.unconstrain(torch.as_tensor(np.asarray(table[name]))).numpy())
    return AttributeFlow({"target": name, "low": var.low, "high": var.high, "mean": m, "std": s,
                          "parents": cond_spec(graph, var.parents, table)})


def load_folder_training(data_dir: Path | None, target: str | None, where: dict[str, str] | None = None):
    """Training rows of a generic dataset folder (its ``train`` split if it has a split column), as uint8-free floats."""
    import hashlib

    from .data.folder import LABELS_CSV, load_folder

    if data_dir is None:
        raise DiffSCMError("--dataset folder needs --data-dir: a folder with labels.csv and images/")
    probe = (Path(data_dir) / LABELS_CSV)
    has_split = probe.is_file() and "split" in probe.read_text().split("\n", 1)[0].split(",")
    ds = load_folder(data_dir, split="train" if has_split else None, label=target, masks=False)
    keep = np.ones(len(ds), dtype=bool)
    for col, val in (where or {}).items():
        if col not in ds.table:
            raise DiffSCMError(f"--where {col}={val}: no column {col!r} in {data_dir}/{LABELS_CSV}")
        keep &= np.asarray([str(v) for v in ds.table[col]]) == val
        if not keep.any():
            raise DiffSCMError(f"--where {col}={val} selects no training image")
    h = hashlib.sha256(ds.images.tobytes())
    h.update((Path(data_dir) / LABELS_CSV).read_bytes())
    x = torch.as_tensor(ds.images[keep]) * 2 - 1
    table = {k: v[keep] for k, v in ds.table.items()}
    extra = {"dataset": "folder", "split": "train" if has_split else "all", "n_images": int(keep.sum()),
             "data": f"{data_dir} images+labels sha256 {h.hexdigest()}",
             **({"where": dict(where)} if where else {})}
    return x, table, ds.info, extra


@dataclass
class DiffusionRecipe:
    """How a diffusion model is built and trained: conditioning, null-token dropout, loss weighting, UNet overrides."""

    schedule: str = "linear"
    conditional: bool = False
    p_uncond: float = 0.35
    p_all: float = 0.0
    min_snr_gamma: float = 0.0
    dropout: float = 0.0
    channels: tuple[int, ...] | None = None

    def unet(self, base: dict) -> dict:
        u = dict(base)
        if self.dropout:
            u["dropout"] = self.dropout
        if self.channels:
            u["block_out_channels"] = list(self.channels)
        return u

    def build(self, base_unet: dict, graph: CausalGraph, extra: dict | None = None) -> tuple[DiffusionModel, object]:
        """A parent-conditioned (``conditional``) or unconditional ε-model over ``graph``'s image, and its loss."""
        cfg = {"unet": self.unet(base_unet), "schedule": self.schedule, **(extra or {})}
        if self.conditional:
            cfg["parents"] = cond_spec(graph, graph.image.parents)
        model = DiffusionModel(cfg)
        return model, tr.diffusion_loss(model, self.p_uncond, self.min_snr_gamma, self.p_all)


def setup_training(what: str, dataset: str, *, split: str = "train", data_dir: Path | None = None, target: str | None = None,
                   schedule: str = "linear", conditional: bool = False, p_uncond: float = 0.35,
                   diffusion: Path | None = None, latent: int = 16, where: dict[str, str] | None = None,
                   recipe: DiffusionRecipe | None = None) -> TrainJob:
    """Build the model, its loss and the training tensors of one job."""
    recipe = recipe or DiffusionRecipe(schedule=schedule, conditional=conditional, p_uncond=p_uncond)
    if dataset not in DATASETS:
        raise DiffSCMError(f"unknown dataset {dataset!r} (available: {', '.join(DATASETS)})")
    if where and dataset != "folder":
        raise DiffSCMError("--where filters the rows of --dataset folder only")
    if dataset == "folder":
        return _setup_folder(what, data_dir, target, recipe, diffusion, latent, where)
    target = target or "digit"
    if dataset == "mnist":
        from .data import load_mnist
        from .data.mnist import MNIST_SHA256

        if target != "digit" or what == "flow":
            raise DiffSCMError("MNIST has one attribute: digit (and no flow to train)")
        x_u8, y = load_mnist(split, data_dir)
        attrs = {"digit": np.asarray(y)}
        extra = {"dataset": dataset, "split": split,
                 "data": f"mnist.pkl.gz sha256 {MNIST_SHA256}" if data_dir is None else f"IDX files in {data_dir}"}
        graph = None
    else:
        x_u8, attrs, digest = load_morpho_folder(data_dir, "train")
        x_u8, attrs = morpho_split(x_u8, attrs, split)
        extra = {"dataset": dataset, "split": split, "data": f"{data_dir} images+attributes sha256 {digest}",
                 "n_images": int(len(x_u8))}
        graph = CausalGraph.from_dict(MORPHO_GRAPH)
        if target not in graph.variables or graph.variables[target].kind == "image":
            raise DiffSCMError(f"unknown --target {target!r} (Morpho-MNIST has: digit, thickness, intensity)")
    x = to_model_range(x_u8)
    kind = "categorical" if target == "digit" else "continuous"
    y = torch.as_tensor(attrs[target]) if kind == "categorical" else torch.as_tensor(attrs[target], dtype=torch.float32)
    if what == "diffusion":
        g = graph or CausalGraph.from_dict(MNIST_GRAPH)
        model, loss = recipe.build(DEFAULT_UNET, g)
        parents = torch.stack([torch.as_tensor(attrs[p], dtype=torch.float32) for p in g.image.parents], 1)
        return TrainJob(model, loss, x, parents, extra)
    if what == "predictor":
        if diffusion is None:
            raise DiffSCMError("--diffusion DIR is required: the predictor is trained on that model's noise schedule")
        alphas, dcfg = tr.read_alphas(diffusion)
        cfg = {"target": target, "schedule": dcfg.get("schedule", "linear"),
               "num_train_timesteps": dcfg.get("num_train_timesteps", 1000)}
        if recipe.channels:
            cfg["channels"] = list(recipe.channels)
        if kind == "categorical":
            cfg["num_classes"] = 10
        else:
            m, s = _stats(attrs[target])
            cfg.update({"target_kind": "continuous", "target_mean": m, "target_std": s})
        model = NoiseAwarePredictor(cfg)
        return TrainJob(model, tr.predictor_loss(model, alphas), x, y, extra)
    if what == "oracle":
        if kind == "categorical":
            model = Oracle({})
            return TrainJob(model, tr.oracle_loss(model), x, y, extra)
        m, s = _stats(attrs[target])
        model = RegressionOracle({"target": target, "target_mean": m, "target_std": s})
        return TrainJob(model, tr.regression_oracle_loss(model), x, y, extra)
    if what == "judge":
        if graph is None:
            raise DiffSCMError("the benchmark's judges score Morpho-MNIST: use --dataset morphomnist")
        context = ["intensity"] if target == "thickness" else []
        model = Judge({"target": target, "context": context})
        labels = y if kind == "categorical" else \
            torch.stack([torch.as_tensor(attrs[n], dtype=torch.float32) for n in [target] + context], 1)
        return TrainJob(model, tr.judge_loss(model), x, labels, extra)
    if what == "classifier":
        model = Classifier({"channels": [16, 32], "hidden": 64})
        return TrainJob(model, tr.oracle_loss(model, max_shift=0), x, torch.as_tensor(attrs["digit"]), extra)
    if what == "flow":
        if graph is None:
            raise DiffSCMError("flows model continuous attributes: use --dataset morphomnist")
        var = graph.variables[target]
        if var.kind != "continuous":
            raise DiffSCMError(f"--target {target!r} is not continuous; flows model continuous attributes")
        model = make_flow(graph, target, attrs)
        pa = torch.stack([torch.as_tensor(attrs[p], dtype=torch.float32) for p in var.parents], 1) if var.parents \
            else torch.zeros(len(y), 0)
        return TrainJob(model, tr.flow_loss(model, list(var.parents)), y, pa, extra)
    # vae / cvae / autoencoder
    if what == "cvae" and graph is not None:
        names = list(graph.image.parents)
        model = VAE({"latent": latent, "cond": cond_spec(graph, names, attrs)})
        labels = torch.stack([torch.as_tensor(attrs[n], dtype=torch.float32) for n in names], 1)
        return TrainJob(model, tr.vae_loss(model), x, labels, extra)
    model = VAE({"latent": latent, "num_classes": 10 if what == "cvae" else 0, "variational": what != "autoencoder"})
    return TrainJob(model, tr.vae_loss(model), x, torch.as_tensor(attrs["digit"]), extra)


def _setup_folder(what, data_dir, target, recipe, diffusion, latent, where) -> TrainJob:
    x, table, info, extra = load_folder_training(data_dir, target, where)
    label = info.get("label")
    c, h, w = x.shape[1:]
    if h != w:
        raise DiffSCMError(f"images must be square, got {h}×{w}")
    if what in ("diffusion", "vae", "autoencoder") and not (what == "diffusion" and recipe.conditional):
        y = torch.as_tensor(table[label]) if label else torch.zeros(len(x), dtype=torch.long)
    else:
        if label is None:
            raise DiffSCMError(f"{what} needs a class column: pass --target COLUMN or set 'label' in dataset.json")
        y = torch.as_tensor(table[label])
    k = int(info.get("num_classes") or 0)
    if what == "diffusion":
        unet = {**DEFAULT_UNET, "sample_size": h, "in_channels": c, "out_channels": c}
        if h != 28:
            unet.update({"block_out_channels": [32, 64, 128], "norm_num_groups": 8})
        model = DiffusionModel({"unet": recipe.unet(unet), "schedule": recipe.schedule,
                                "num_classes": k if recipe.conditional else 0,
                                "label": label if recipe.conditional else None})
        return TrainJob(model, tr.diffusion_loss(model, recipe.p_uncond, recipe.min_snr_gamma), x, y, extra)
    if what in ("predictor", "classifier", "oracle"):
        if what == "predictor":
            if diffusion is None:
                raise DiffSCMError("--diffusion DIR is required: the predictor is trained on that model's noise schedule")
            alphas, dcfg = tr.read_alphas(diffusion)
            model = NoiseAwarePredictor({"target": label, "num_classes": k, "in_channels": c,
                                         "schedule": dcfg.get("schedule", "linear"),
                                         "num_train_timesteps": dcfg.get("num_train_timesteps", 1000)})
            return TrainJob(model, tr.predictor_loss(model, alphas), x, y, extra)
        model = Oracle({"num_classes": k, "in_channels": c, "image_size": h}) if what == "oracle" else \
            Classifier({"channels": [16, 32], "hidden": 64, "num_classes": k, "in_channels": c, "image_size": h})
        return TrainJob(model, tr.oracle_loss(model, max_shift=0 if what == "classifier" else 2), x, y, extra)
    if what in ("vae", "autoencoder"):
        model = VAE({"latent": latent, "variational": what == "vae", "in_channels": c, "size": h})
        return TrainJob(model, tr.vae_loss(model), x, y, extra)
    raise DiffSCMError(f"`train {what}` is not available for --dataset folder (diffusion, predictor, oracle, classifier, vae, autoencoder)")
