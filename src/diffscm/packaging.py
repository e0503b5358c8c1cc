"""Assemble trained checkpoints into an SCM folder (``scm.json`` + one sub-folder per model)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import DiffSCMError
from .graph import CausalGraph
from .models.io import CONFIG_NAME, WEIGHTS_NAME, atomic_write_dir, load_config

MNIST_GRAPH = {"variables": [
    {"name": "digit", "kind": "categorical", "num_classes": 10, "parents": []},
    {"name": "image", "kind": "image", "parents": ["digit"]},
]}


def pack_mnist_scm(out: Path, diffusion: Path, predictor: Path, oracle: Path | None, defaults: dict,
                   overwrite: bool = False, extra_files: dict[str, str] | None = None) -> None:
    """Copy weights + configs of each model and write ``scm.json`` for digit -> image."""
    if Path(out).exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    parts = {"diffusion": (diffusion, "diffusion"), "predictor": (predictor, "predictor")}
    if oracle is not None:
        parts["oracle"] = (oracle, "oracle")
    for _, (src, kind) in parts.items():
        load_config(src, expected_kind=kind)
    CausalGraph.from_dict(MNIST_GRAPH)
    cfg = {"graph": MNIST_GRAPH, "image": {"diffusion": "diffusion", "predictors": {"digit": "predictor"}},
           "defaults": defaults, "oracle": "oracle" if oracle is not None else None}

    def write(tmp: Path) -> None:
        for name, (src, _) in parts.items():
            (tmp / name).mkdir()
            for f in (CONFIG_NAME, WEIGHTS_NAME):
                shutil.copy(Path(src) / f, tmp / name / f)
        (tmp / "scm.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)

    atomic_write_dir(out, write)
