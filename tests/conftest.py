"""Shared fixtures: a tiny random-weight SCM folder and fake IDX data, both built in seconds."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffscm.models import VAE, Classifier, DiffusionModel, NoiseAwarePredictor, Oracle
from diffscm.packaging import pack_mnist_scm

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
