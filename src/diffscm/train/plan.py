"""Model + loss + data of each ``diffscm train`` job (MNIST and Morpho-MNIST), kept apart from argument parsing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import loop as tr
from ..data import to_model_range
from ..errors import DiffSCMError
from ..scm.conditioning import cond_spec, make_flow, mean_std
from ..scm.graph import MNIST_GRAPH, MORPHO_GRAPH, CausalGraph
from ..models.diffusion import DEFAULT_UNET
from ..models import (
    VAE,
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


def load_folder_training(data_dir: Path | None, target: str | None, where: dict[str, str] | None = None):
    """Training rows of a generic dataset folder (its ``train`` split if it has a split column), as uint8-free floats."""
    import hashlib

    from ..data.folder import LABELS_CSV, has_split_column, load_folder

    if data_dir is None:
        raise DiffSCMError("--dataset folder needs --data-dir: a folder with labels.csv and images/")
    has_split = has_split_column(data_dir)
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
        from ..data import load_mnist
        from ..data.mnist import MNIST_SHA256

        if target != "digit" or what == "flow":
            raise DiffSCMError("MNIST has one attribute: digit (and no flow to train)")
        x_u8, y = load_mnist(split, data_dir)
        attrs = {"digit": np.asarray(y)}
        extra = {"dataset": dataset, "split": split,
                 "data": f"mnist.pkl.gz sha256 {MNIST_SHA256}" if data_dir is None else f"IDX files in {data_dir}"}
        graph = None
    else:
        from ..data.morphomnist import load_morpho_folder, morpho_split

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
            m, s = mean_std(attrs[target])
            cfg.update({"target_kind": "continuous", "target_mean": m, "target_std": s})
        model = NoiseAwarePredictor(cfg)
        return TrainJob(model, tr.predictor_loss(model, alphas), x, y, extra)
    if what == "oracle":
        if kind == "categorical":
            model = Oracle({})
            return TrainJob(model, tr.oracle_loss(model), x, y, extra)
        m, s = mean_std(attrs[target])
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
