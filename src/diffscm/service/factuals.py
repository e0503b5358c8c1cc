"""Factual images and values, and interventions, as the command line and the explorer server read them.

Images come from a split (the built-in MNIST and Morpho-MNIST ones, or a dataset folder) or from the user's files;
the factual values a file lacks are inferred where a model can (the anti-causal predictor at t = 0, the Morpho-MNIST
morphometrics). Intervention values are numbers, class names or ``random``, checked against each variable's support.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import load_mnist, to_model_range
from ..data.user_images import load_user_image
from ..errors import DiffSCMError
from ..eval.basics import random_targets
from ..scm.core import SCM


def parse_index(spec: "str | np.ndarray", n: int) -> np.ndarray:
    """``"0:16"``, ``"5"`` or ``"1,4,9"`` -> indices into a split of size ``n``; an array (from ``--do-file``) is
    checked against ``n``, naming the offending row."""
    if isinstance(spec, np.ndarray):
        bad = np.flatnonzero((spec < 0) | (spec >= n))
        if bad.size:
            raise DiffSCMError(f"--do-file row {bad[0] + 1}, column index: {spec[bad[0]]} is out of range for a split "
                               f"of {n} images")
        return spec
    try:
        if ":" in spec:
            parts = spec.split(":")
            if len(parts) != 2:
                raise ValueError
            a = int(parts[0]) if parts[0] else 0
            b = int(parts[1]) if parts[1] else n
            idx = np.arange(a, b)
        else:
            idx = np.array([int(s) for s in spec.split(",")])
    except ValueError:
        raise DiffSCMError(f"bad --index {spec!r}: use START:STOP, I or I,J,K") from None
    if idx.size == 0:
        raise DiffSCMError(f"--index {spec!r} selects no image")
    if idx.min() < 0 or idx.max() >= n:
        raise DiffSCMError(f"--index {spec!r} is out of range for a split of {n} images")
    return idx


def do_value(var, value: str, where: str) -> float:
    """One intervention value (a number, or NaN for ``random``), checked against the variable's support."""
    if value == "random":
        if var.kind != "categorical":
            raise DiffSCMError(f"{where}: random needs a categorical variable")
        return float("nan")
    named = var.class_index(value)
    if named is not None:
        return float(named)
    try:
        v = float(value)
    except ValueError:
        also = " or a class name" if var.categories else ""
        raise DiffSCMError(f"{where}: {value!r} is not a number{also} (or 'random')") from None
    try:
        var.check_value(v)
    except DiffSCMError as exc:
        raise DiffSCMError(f"{where}: {exc}") from None
    return v


def attribute(scm: SCM, name: str, flag: str):
    """The graph's attribute ``name``; a one-line error naming ``flag`` when the model has none."""
    var = scm.graph.variables.get(name)
    if var is None or var.kind == "image":
        known = ", ".join(v for v in scm.graph.variables if v != scm.image_name)
        raise DiffSCMError(f"unknown variable {name!r} in {flag} (this model has: {known})")
    return var


def resolve_do(scm: SCM, spec: dict[str, str], observed: dict[str, torch.Tensor], seed: int,
               per_image: dict[str, list[str]] | None = None, flag: str = "--do") -> dict[str, torch.Tensor]:
    """Turn ``{"digit": "7"|"random"}`` (or per-image cells) into per-sample float tensors, NaN where a sample is not
    intervened on; ``random`` draws a value ≠ the factual one."""
    n = next(iter(observed.values())).shape[0]
    cells = per_image if per_image is not None else {k: [v] * n for k, v in spec.items()}
    out = {}
    for name, column in cells.items():
        var = attribute(scm, name, flag)
        vals = torch.tensor([do_value(var, c, f"{flag} {name}") if c else float("nan") for c in column],
                            dtype=torch.float64)
        rand = torch.tensor([c == "random" for c in column])
        if rand.any():
            drawn = torch.as_tensor(random_targets(observed[name].numpy(), seed, var.num_classes), dtype=torch.float64)
            vals = torch.where(rand, drawn, vals)
        if not torch.isnan(vals).all():
            out[name] = vals.float() if var.kind != "categorical" else vals
    return out


def infer_class(scm: SCM, name: str, x: torch.Tensor) -> torch.Tensor:
    """Factual class of unlabeled images: argmax of the parent's anti-causal predictor at t = 0."""
    pred = scm.image_mechanism.predictors[name]
    outs = []
    with torch.inference_mode():
        for chunk in x.split(max(1, scm.defaults.batch_size)):
            outs.append(pred(chunk.to(scm.device), torch.zeros((), dtype=torch.long, device=scm.device)).argmax(1).cpu())
    return torch.cat(outs)


def parse_observed(scm: SCM, observed: dict[str, str], n: int, flag: str = "--observed") -> dict[str, torch.Tensor]:
    """``{name: value}`` strings (numbers or class names) -> per-image tensors of the factual values."""
    out = {}
    for name, value in observed.items():
        var = attribute(scm, name, flag)
        named = var.class_index(value)
        try:
            v = float(value) if named is None else float(named)
        except ValueError:
            raise DiffSCMError(f"{flag} {name}={value!r} is not a number"
                               + (" or a class name" if var.categories else "")) from None
        var.check_value(v)
        out[name] = torch.full((n,), int(v) if var.kind == "categorical" else v,
                               dtype=torch.long if var.kind == "categorical" else torch.float32)
    return out


def _morpho_split(scm: SCM, split: str | None, index: str | None, data_dir: Path | None,
                  notes: list[str]) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    from ..data import morphomnist as mm

    split = split or "test"
    if split not in ("train", "test"):
        raise DiffSCMError(f"unknown --split {split!r} for Morpho-MNIST (use train or test)")
    if data_dir is not None:
        from ..data.morphomnist import load_morpho_folder

        x_all, attrs, _ = load_morpho_folder(data_dir, split)
        idx = parse_index("0:16" if index is None else index, len(x_all))
    else:
        n_split = 60000 if split == "train" else 10000
        idx = parse_index("0:16" if index is None else index, n_split)
        notes.append(f"Morpho-MNIST {split} images regenerated from MNIST with DeepSCM's model, seed 0 (cached); "
                     "pass --data-dir for another build")
        x_all, attrs, _ = mm.load_split(split, seed=0, limit=int(idx.max()) + 1, progress=False)
    obs = {k: torch.as_tensor(v[idx], dtype=torch.long if k == "digit" else torch.float32) for k, v in attrs.items()}
    return x_all[idx], obs, idx


def _folder_split(scm: SCM, split: str | None, index: str | None, data_dir: Path,
                  attr_names: list[str]) -> tuple[np.ndarray, dict[str, torch.Tensor], np.ndarray]:
    """Images and attribute columns of one split of a dataset folder (every row where it has no split column)."""
    from ..data.folder import LABELS_CSV, has_split_column, load_folder, read_table

    split = (split or "test") if has_split_column(data_dir) else None
    files, table, _ = read_table(data_dir, split)
    scm.graph.check_table(files, table, str(data_dir / LABELS_CSV))
    idx = parse_index("0:16" if index is None else index, len(files))
    ds = load_folder(data_dir, split=split, masks=False)
    shape = tuple(scm.image_mechanism.diffusion.image_shape)
    if ds.images.shape[1:] != shape:
        raise DiffSCMError(f"images of {data_dir} are {'×'.join(map(str, ds.images.shape[1:]))}, the model's "
                           f"{'×'.join(map(str, shape))}")
    x_u8 = np.round(ds.images[idx] * 255).astype(np.uint8)
    x_u8 = x_u8[:, 0] if x_u8.shape[1] == 1 else x_u8          # grey as N×H×W, as elsewhere
    obs = {n: torch.as_tensor(ds.table[n][idx], dtype=torch.long if scm.graph.variables[n].kind == "categorical"
                              else torch.float32) for n in attr_names}
    return x_u8, obs, idx


def load_factuals(scm: SCM, split: str | None, index: str | None, images: list[Path], observed: dict[str, str],
                  data_dir: Path | None, notes: list[str], observed_flag: str = "--observed"
                  ) -> tuple[np.ndarray, dict[str, torch.Tensor], np.ndarray | None]:
    """Factual images (uint8), every attribute's factual value and the split indices (None for the user's files).
    ``observed_flag`` names the given values in errors (the CLI's ``--observed``, the API's ``observed``).

    For user images, attributes not given with ``--observed`` are inferred: the digit by the anti-causal predictor at
    t = 0, thickness and intensity by the Morpho-MNIST morphometrics.
    """
    attr_names = [v for v in scm.graph.variables if v != scm.image_name]
    if images:
        diffusion = scm.image_mechanism.diffusion
        shape = diffusion.image_shape
        crop = diffusion.config.get("source") == "guided-diffusion"     # ImageNet photographs of any aspect
        x_u8 = np.stack([load_user_image(p, shape[1:], notes, shape[0], crop) for p in images])
        obs = parse_observed(scm, observed, len(images), observed_flag)
        for name in scm.graph.image.parents:
            var = scm.graph.variables[name]
            if name not in obs and var.kind == "categorical" and name in scm.image_mechanism.predictors:
                obs[name] = infer_class(scm, name, to_model_range(x_u8))
                shown = [var.categories[i] if var.categories else str(i) for i in obs[name].tolist()]
                notes.append(f"factual {name} inferred by the anti-causal predictor at t=0: " + ",".join(shown))
        measured = [n for n in attr_names if n not in obs and n in ("thickness", "intensity")]
        if measured:
            from ..data import morphomnist as mm

            vals = mm.measure_batch(x_u8[:, 0] if x_u8.ndim == 4 else x_u8, workers=1)
            for n in measured:
                v = vals[:, mm.METRIC_COLUMNS.index(n)]
                var = scm.graph.variables[n]
                obs[n] = torch.as_tensor(np.clip(v, var.low, var.high), dtype=torch.float32)
            notes.append("factual " + ", ".join(measured) + " measured by the morphometrics: " + "; ".join(
                ",".join(f"{x:.2f}" for x in obs[n].tolist()) for n in measured))
        missing = [n for n in attr_names if n not in obs]
        if missing:
            raise DiffSCMError(f"give the factual value of {missing[0]} with {observed_flag} {missing[0]}=VALUE"
                               if observed_flag.startswith("--") else
                               f"give the factual value of {missing[0]} in {observed_flag}")
        return x_u8, obs, None
    if observed:
        raise DiffSCMError("--observed goes with --image; split images carry their own labels")
    if data_dir is not None and (Path(data_dir) / "labels.csv").is_file():
        return _folder_split(scm, split, index, Path(data_dir), attr_names)
    if set(attr_names) == {"digit"}:
        x_all, y_all = load_mnist(split or "test", data_dir)
        idx = parse_index("0:16" if index is None else index, len(x_all))
        return x_all[idx], {"digit": torch.as_tensor(y_all[idx])}, idx
    if set(attr_names) == {"digit", "thickness", "intensity"}:
        return _morpho_split(scm, split, index, data_dir, notes)
    raise DiffSCMError("this model has no built-in dataset: pass --image files with --observed values")
