"""Shared fixtures: a tiny random-weight SCM folder and fake IDX data, both built in seconds."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffscm.scm.graph import MORPHO_GRAPH
from diffscm.models import VAE, AttributeFlow, Classifier, DiffusionModel, Judge, NoiseAwarePredictor, Oracle, RegressionOracle
from diffscm.scm.packaging import pack_mnist_scm, pack_scm

torch.set_num_threads(1)

TINY_UNET = {
    "sample_size": 28, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "norm_num_groups": 4,
}


def make_tiny_scm(root: Path, seed: int = 0, scale: float = 1.0, steps: int = 4) -> Path:
    torch.manual_seed(seed)
    DiffusionModel({"unet": TINY_UNET}).save_pretrained(root / "parts" / "diffusion")
    NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4}).save_pretrained(root / "parts" / "predictor")
    Oracle({}).save_pretrained(root / "parts" / "oracle")
    small = {"latent": 4, "channels": [4, 8]}
    VAE(small).save_pretrained(root / "parts" / "vae")
    VAE({**small, "num_classes": 10}).save_pretrained(root / "parts" / "cvae")
    VAE({**small, "variational": False}).save_pretrained(root / "parts" / "autoencoder")
    Classifier({"channels": [4, 8], "hidden": 16}).save_pretrained(root / "parts" / "classifier")
    out = root / "scm"
    pack_mnist_scm(out, root / "parts" / "diffusion", root / "parts" / "predictor", root / "parts" / "oracle",
                   {"steps": steps, "ratio": 1.0, "scales": {"digit": scale}, "clip": True, "dynamic_norm": False,
                    "batch_size": 8},
                   evaluation={k: root / "parts" / k for k in ("vae", "cvae", "autoencoder", "classifier")})
    return out


def make_tiny_morpho_scm(root: Path, seed: int = 0, steps: int = 3) -> Path:
    """Morpho-MNIST SCM (thickness -> intensity; digit, thickness, intensity -> image) with random tiny weights."""
    torch.manual_seed(seed)
    parts = root / "parts"
    DiffusionModel({"unet": TINY_UNET}).save_pretrained(parts / "diffusion")
    tiny = {"channels": [8, 16], "temb_dim": 16, "groups": 4}
    NoiseAwarePredictor(tiny).save_pretrained(parts / "p_digit")
    NoiseAwarePredictor({**tiny, "target": "thickness", "target_kind": "continuous", "target_mean": 2.5,
                         "target_std": 0.6}).save_pretrained(parts / "p_thickness")
    NoiseAwarePredictor({**tiny, "target": "intensity", "target_kind": "continuous", "target_mean": 170.0,
                         "target_std": 40.0}).save_pretrained(parts / "p_intensity")
    small = {"channels": [4, 8], "hidden": 16}
    Oracle(small).save_pretrained(parts / "o_digit")
    RegressionOracle({**small, "target": "thickness", "target_mean": 2.5, "target_std": 0.6}).save_pretrained(parts / "o_thickness")
    RegressionOracle({**small, "target": "intensity", "target_mean": 170.0, "target_std": 40.0}).save_pretrained(parts / "o_intensity")
    AttributeFlow({"target": "thickness", "low": 0.5, "high": 7.0, "hidden": [8], "transforms": 2}).save_pretrained(parts / "f_thickness")
    AttributeFlow({"target": "intensity", "low": 64.0, "high": 255.0, "hidden": [8], "transforms": 2,
                   "parents": [{"name": "thickness", "kind": "continuous", "mean": 2.5, "std": 0.6}]}).save_pretrained(parts / "f_intensity")
    VAE({"latent": 4, "channels": [4, 8]}).save_pretrained(parts / "vae")
    cond = [{"name": "digit", "kind": "categorical", "num_classes": 10},
            {"name": "thickness", "kind": "continuous", "mean": 2.5, "std": 0.6},
            {"name": "intensity", "kind": "continuous", "mean": 170.0, "std": 40.0}]
    VAE({"latent": 4, "channels": [4, 8], "cond": cond}).save_pretrained(parts / "cvae")
    names = ("digit", "thickness", "intensity")
    for n in names:
        Judge({"target": n, "context": ["intensity"] if n == "thickness" else [], "width": 2}).save_pretrained(parts / f"j_{n}")
    out = root / "morpho_scm"
    pack_scm(out, MORPHO_GRAPH, parts / "diffusion", {n: parts / f"p_{n}" for n in names},
             {"steps": steps, "ratio": 1.0, "scales": {"digit": 1.0, "thickness": 1.0, "intensity": 1.0}, "clip": False,
              "dynamic_norm": False, "batch_size": 8},
             oracles={n: parts / f"o_{n}" for n in names},
             flows={n: parts / f"f_{n}" for n in ("thickness", "intensity")},
             evaluation={"vae": parts / "vae", "cvae": parts / "cvae",
                         **{f"judge-{n}": parts / f"j_{n}" for n in names}})
    return out


def make_tiny_conditional_scm(root: Path, seed: int = 0, steps: int = 4) -> Path:
    """digit -> image SCM whose ε-model is conditioned on the digit (random, non-zero parent embedding)."""
    torch.manual_seed(seed)
    parts = root / "parts"
    model = DiffusionModel({"unet": TINY_UNET, "parents": [{"name": "digit", "kind": "categorical", "num_classes": 10}]})
    torch.nn.init.normal_(model.parent_embedding.out[1].weight, std=0.5)
    model.save_pretrained(parts / "diffusion")
    NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4}).save_pretrained(parts / "predictor")
    Oracle({}).save_pretrained(parts / "oracle")
    out = root / "cond_scm"
    pack_mnist_scm(out, parts / "diffusion", parts / "predictor", parts / "oracle",
                   {"steps": steps, "ratio": 1.0, "scales": {"digit": 0.0}, "clip": False, "dynamic_norm": False,
                    "batch_size": 8, "inversion": "exact", "inversion_iters": 2})
    return out


@pytest.fixture(scope="session")
def tiny_conditional_scm(tmp_path_factory) -> Path:
    return make_tiny_conditional_scm(tmp_path_factory.mktemp("tiny_cond"))


@pytest.fixture(scope="session")
def tiny_morpho_scm(tmp_path_factory) -> Path:
    return make_tiny_morpho_scm(tmp_path_factory.mktemp("tiny_morpho"))


@pytest.fixture(scope="session")
def tiny_scm(tmp_path_factory) -> Path:
    """Folder of a digit -> image SCM with random tiny weights (4 DDIM steps)."""
    return make_tiny_scm(tmp_path_factory.mktemp("tiny"))


def write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """Standard MNIST file names holding random digits (50 010 train, 20 test) for --data-dir."""
    d = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (50010, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 50010))
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    return d


LESION_GRAPH = {"variables": [
    {"name": "lesion", "kind": "categorical", "num_classes": 2, "parents": []},
    {"name": "image", "kind": "image", "parents": ["lesion"]},
]}


def make_tiny_lesion_scm(root: Path, seed: int = 0, steps: int = 4) -> Path:
    """lesion -> image SCM: conditional ε-model (random label embeddings), lesion predictor, healthy-only
    diffusion model and VAE, all tiny and random."""
    torch.manual_seed(seed)
    parts = root / "parts"
    cond = DiffusionModel({"unet": TINY_UNET, "num_classes": 2, "label": "lesion"})
    torch.nn.init.normal_(cond.unet.class_embedding.weight)
    cond.save_pretrained(parts / "cond")
    DiffusionModel({"unet": TINY_UNET}).save_pretrained(parts / "healthy")
    NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4, "target": "lesion",
                         "num_classes": 2}).save_pretrained(parts / "predictor")
    VAE({"latent": 4, "channels": [4, 8]}).save_pretrained(parts / "vae")
    out = root / "lesion_scm"
    pack_scm(out, LESION_GRAPH, parts / "cond", {"lesion": parts / "predictor"},
             {"steps": steps, "ratio": 0.75, "scales": {"lesion": 0.0}, "cfg_scale": 3.0, "clip": False,
              "dynamic_norm": True, "batch_size": 8, "abduction": "null"},
             evaluation={"vae": parts / "vae", "healthy-diffusion": parts / "healthy"})
    return out


@pytest.fixture(scope="session")
def tiny_lesion_scm(tmp_path_factory) -> Path:
    return make_tiny_lesion_scm(tmp_path_factory.mktemp("lesion"))
