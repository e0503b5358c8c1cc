"""Load any checkpoint folder by the ``kind`` in its ``config.json``."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DiffSCMError
from .adm import ADMClassifier
from .diffusion import DiffusionModel
from .flow import AttributeFlow
from .io import load_config
from .judge import Judge
from .predictor import NoiseAwarePredictor, Oracle, RegressionOracle
from .vae import VAE, Classifier

KINDS = {cls.kind: cls for cls in (DiffusionModel, NoiseAwarePredictor, Oracle, RegressionOracle, VAE, Classifier,
                                   AttributeFlow, Judge, ADMClassifier)}


def load_model(path: str | Path, device: torch.device | str = "cpu"):
    """Load any checkpoint folder by the ``kind`` in its config."""
    kind = load_config(path)["kind"]
    if kind not in KINDS:
        raise DiffSCMError(f"checkpoint {path} has unknown kind {kind!r}")
    return KINDS[kind].from_pretrained(path, device)
