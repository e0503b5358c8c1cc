"""Model + loss + data of each ``diffscm train`` job (MNIST and Morpho-MNIST), kept apart from argument parsing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import training as tr
from .data import to_model_range
from .errors import DiffSCMError
from .graph import MORPHO_GRAPH, CausalGraph
from .models import (
    VAE,
    AttributeFlow,
    Classifier,
    DiffusionModel,
    NoiseAwarePredictor,
    Oracle,
    RegressionOracle,
)

DATASETS = ("mnist", "morphomnist")


@dataclass
class TrainJob:
    model: torch.nn.Module
    loss: object
    inputs: torch.Tensor
    labels: torch.Tensor
    extra: dict = field(default_factory=dict)


def load_morpho_folder(data_dir: Path | None, split: str = "train") -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Images and attributes of a folder written by ``diffscm data morphomnist --out``, and its data hash."""
    import hashlib

    from .data.morphomnist import read_attributes_csv

    if data_dir is None:
        raise DiffSCMError("--dataset morphomnist needs --data-dir: a folder written by `diffscm data morphomnist --out`")
    images_file, csv_file = Path(data_dir) / f"{split}-images.npy", Path(data_dir) / f"{split}-attributes.csv"
    for f in (images_file, csv_file):
        if not f.exists():
            raise DiffSCMError(f"{f} does not exist (write it with `diffscm data morphomnist --out {data_dir}`)")
    images = np.load(images_file, allow_pickle=False)
    attrs = read_attributes_csv(csv_file)
    if images.ndim != 3 or len(images) != len(attrs["digit"]):
        raise DiffSCMError(f"{images_file} ({images.shape}) does not match {csv_file} ({len(attrs['digit'])} rows)")
    h = hashlib.sha256(images.tobytes())
    h.update(csv_file.read_bytes())
    return images, attrs, h.hexdigest()


def _stats(v: np.ndarray) -> tuple[float, float]:
    return float(np.mean(v)), float(np.std(v) + 1e-8)


def cond_spec(graph: CausalGraph, names, attrs: dict[str, np.ndarray]) -> list[dict]:
    """Encoding of conditioning variables: one-hot categorical, standardised continuous (with the data's stats)."""
    spec = []
    for n in names:
        v = graph.variables[n]
        if v.kind == "categorical":
            spec.append({"name": n, "kind": "categorical", "num_classes": v.num_classes})
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


def setup_training(what: str, dataset: str, *, split: str = "train", data_dir: Path | None = None, target: str = "digit",
                   schedule: str = "linear", conditional: bool = False, p_uncond: float = 0.35,
                   diffusion: Path | None = None, latent: int = 16) -> TrainJob:
    """Build the model, its loss and the training tensors of one job."""
    if dataset not in DATASETS:
        raise DiffSCMError(f"unknown dataset {dataset!r} (available: {', '.join(DATASETS)})")
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
        extra = {"dataset": dataset, "split": "train", "data": f"{data_dir} images+attributes sha256 {digest}",
                 "n_images": int(len(x_u8))}
        graph = CausalGraph.from_dict(MORPHO_GRAPH)
        if target not in graph.variables or graph.variables[target].kind == "image":
            raise DiffSCMError(f"unknown --target {target!r} (Morpho-MNIST has: digit, thickness, intensity)")
    x = to_model_range(x_u8)
    kind = "categorical" if target == "digit" else "continuous"
    y = torch.as_tensor(attrs[target]) if kind == "categorical" else torch.as_tensor(attrs[target], dtype=torch.float32)
    if what == "diffusion":
        model = DiffusionModel({"schedule": schedule, "num_classes": 10 if conditional else 0})
        return TrainJob(model, tr.diffusion_loss(model, p_uncond), x, torch.as_tensor(attrs["digit"]), extra)
    if what == "predictor":
        if diffusion is None:
            raise DiffSCMError("--diffusion DIR is required: the predictor is trained on that model's noise schedule")
        alphas, dcfg = tr.read_alphas(diffusion)
        cfg = {"target": target, "schedule": dcfg.get("schedule", "linear"),
               "num_train_timesteps": dcfg.get("num_train_timesteps", 1000)}
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
