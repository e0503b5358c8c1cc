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


def training_summary(ckpt: Path) -> dict | None:
    """Steps, wall time (summed over resumed segments) and final loss from a checkpoint's trainer state."""
    state = ckpt / "trainer_state.json"
    if not state.exists():
        return None
    meta = json.loads(state.read_text())
    wall, last = 0.0, 0.0
    for rec in meta["history"]:
        if rec["elapsed_s"] < last:  # a resumed segment restarts its clock
            wall += last
        last = rec["elapsed_s"]
    wall += last
    cfg = load_config(ckpt)
    return {"steps": meta["step"], "wall_seconds": round(wall, 1), "final_loss": meta["history"][-1]["loss"],
            "train": meta["train"], "segments": meta.get("segments", []), **{k: v for k, v in cfg.get("meta", {}).items() if k not in ("train", "step")}}


EVAL_KINDS = {"vae": "vae", "cvae": "vae", "autoencoder": "vae", "classifier": "classifier"}


def pack_mnist_scm(out: Path, diffusion: Path, predictor: Path, oracle: Path | None, defaults: dict,
                   overwrite: bool = False, extra_files: dict[str, str] | None = None,
                   evaluation: dict[str, Path] | None = None) -> None:
    """Copy weights + configs of each model and write ``scm.json`` for digit -> image.

    ``evaluation`` adds the harness's models (``vae`` for CLD; ``cvae``, ``autoencoder``, ``classifier`` for the
    baselines) under ``eval/``.
    """
    if Path(out).exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    parts = {"diffusion": (diffusion, "diffusion"), "predictor": (predictor, "predictor")}
    if oracle is not None:
        parts["oracle"] = (oracle, "oracle")
    for name, src in (evaluation or {}).items():
        if name not in EVAL_KINDS:
            raise DiffSCMError(f"unknown evaluation model {name!r} (expected {', '.join(EVAL_KINDS)})")
        parts[f"eval/{name}"] = (src, EVAL_KINDS[name])
    for _, (src, kind) in parts.items():
        load_config(src, expected_kind=kind)
    CausalGraph.from_dict(MNIST_GRAPH)
    cfg = {"graph": MNIST_GRAPH, "image": {"diffusion": "diffusion", "predictors": {"digit": "predictor"}},
           "defaults": defaults, "oracle": "oracle" if oracle is not None else None}
    if evaluation:
        cfg["evaluation"] = {name: f"eval/{name}" for name in evaluation}

    def write(tmp: Path) -> None:
        for name, (src, _) in parts.items():
            (tmp / name).mkdir(parents=True)
            for f in (CONFIG_NAME, WEIGHTS_NAME):
                shutil.copy(Path(src) / f, tmp / name / f)
            summary = training_summary(Path(src))
            if summary:
                (tmp / name / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "scm.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)

    atomic_write_dir(out, write)
