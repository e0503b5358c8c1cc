"""Implementation of ``diffscm counterfactual`` and ``diffscm demo`` (kept apart from argument parsing)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import from_model_range, load_mnist, to_model_range
from ..distributed import topology
from ..data.user_images import load_user_image
from ..errors import DiffSCMError
from ..eval.basics import random_targets
from ..scm.mechanisms import InferenceOptions
from ..files import atomic_write_dir
from ..scm.core import SCM, abduct, act, predict
from ..eval.viz import save_grid


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


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    """``["digit=7"]`` -> ``{"digit": "7"}`` with one-line errors."""
    out = {}
    for item in items:
        if "=" not in item:
            raise DiffSCMError(f"bad {flag} {item!r}: use NAME=VALUE")
        k, v = item.split("=", 1)
        k, v = k.strip(), v.strip()
        if not k or not v:
            raise DiffSCMError(f"bad {flag} {item!r}: use NAME=VALUE")
        if k in out:
            raise DiffSCMError(f"{flag} sets {k!r} twice")
        out[k] = v
    return out


def scale_items(items: list[str], names: list[str], base: dict[str, float], flag: str = "--scale",
                what: str = "predictor") -> dict[str, float]:
    """Apply ``--scale`` (or ``--w``) items — ``S`` (every name) or ``NAME=S`` — on top of ``base``."""
    scales = dict(base)
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            v = float(value)
        except ValueError:
            raise DiffSCMError(f"bad {flag} {item!r}: use a number or NAME=NUMBER") from None
        if sep and name not in names:
            raise DiffSCMError(f"{flag} {item!r}: no {what} for {name!r} (there are: {', '.join(names)})")
        for n in ([name] if sep else names):
            scales[n] = v
    return scales


def parse_scales(scm: SCM, items: list[str]) -> dict[str, float] | None:
    """``--scale`` items over the SCM's default scales; None if nothing given."""
    if not items:
        return None
    return scale_items(items, list(scm.image_mechanism.predictors), scm.defaults.scales)


def parse_weights(scm: SCM, items: list[str]) -> dict[str, float] | None:
    """``--w`` items — ``W`` (every parent of the ε-model) or ``NAME=W`` — over the SCM's defaults; None if none."""
    if not items:
        return None
    names = scm.image_mechanism.diffusion.parent_names
    if not names:
        raise DiffSCMError("--w needs a parent-conditioned diffusion model (the conditional mechanism)")
    return scale_items(items, names, scm.defaults.cfg_weights, "--w", "parent of the ε-model")


def _do_value(var, value: str, where: str) -> float:
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


def read_do_file(scm: SCM, path: Path, images: list[Path]) -> tuple[np.ndarray, dict[str, list[str]]]:
    """A ``--do-file`` CSV: the images it lists (split indices, or positions in ``images`` for a ``file`` column)
    and, per intervened variable, one cell per image ('' = not intervened). Errors name the row and column."""
    import csv

    if not path.is_file():
        raise DiffSCMError(f"--do-file {path} does not exist")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DiffSCMError(f"--do-file {path} is not a readable CSV ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DiffSCMError(f"--do-file {path} has no data rows")
    header = [h.strip() for h in rows[0]]
    key = "file" if images else "index"
    if key not in header:
        raise DiffSCMError(f"--do-file {path} needs a{'' if key == 'file' else 'n'} {key!r} column"
                           + (" (with --image)" if images else " (or --image files with a 'file' column)"))
    if len(set(header)) != len(header):
        raise DiffSCMError(f"--do-file {path} repeats a column name")
    known = [v for v in scm.graph.variables if v != scm.image_name]
    for col in header:
        if col != key and col not in known:
            raise DiffSCMError(f"--do-file {path} column {col!r} is not a variable of this model ({', '.join(known)})")
    names = {str(p): i for i, p in enumerate(images)}
    names.update({p.name: i for i, p in enumerate(images) if p.name not in names})
    idx, cells = [], {c: [] for c in header if c != key}
    for r, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise DiffSCMError(f"--do-file row {r}: {len(row)} cells for {len(header)} columns")
        rec = dict(zip(header, (c.strip() for c in row)))
        if key == "index":
            try:
                idx.append(int(rec["index"]))
            except ValueError:
                raise DiffSCMError(f"--do-file row {r}, column index: {rec['index']!r} is not an integer") from None
        else:
            if rec["file"] not in names:
                raise DiffSCMError(f"--do-file row {r}, column file: {rec['file']!r} is not one of the --image files")
            idx.append(names[rec["file"]])
        for c in cells:
            if rec[c]:
                _do_value(scm.graph.variables[c], rec[c], f"--do-file row {r}, column {c}")
            cells[c].append(rec[c])
    return np.asarray(idx, dtype=np.int64), cells


def resolve_do(scm: SCM, spec: dict[str, str], observed: dict[str, torch.Tensor], seed: int,
               per_image: dict[str, list[str]] | None = None) -> dict[str, torch.Tensor]:
    """Turn ``{"digit": "7"|"random"}`` (or per-image cells) into per-sample float tensors, NaN where a sample is not
    intervened on; ``random`` draws a value ≠ the factual one."""
    n = next(iter(observed.values())).shape[0]
    cells = per_image if per_image is not None else {k: [v] * n for k, v in spec.items()}
    out = {}
    for name, column in cells.items():
        var = scm.graph.variables.get(name)
        if var is None or var.kind == "image":
            known = ", ".join(v for v in scm.graph.variables if v != scm.image_name)
            raise DiffSCMError(f"unknown variable {name!r} in --do (this model has: {known})")
        vals = torch.tensor([_do_value(var, c, f"--do {name}") if c else float("nan") for c in column],
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


def _parse_observed(scm: SCM, observed: dict[str, str], n: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in observed.items():
        var = scm.graph.variables.get(name)
        if var is None or var.kind == "image":
            known = ", ".join(v for v in scm.graph.variables if v != scm.image_name)
            raise DiffSCMError(f"unknown variable {name!r} in --observed (this model has: {known})")
        named = var.class_index(value)
        try:
            v = float(value) if named is None else float(named)
        except ValueError:
            raise DiffSCMError(f"--observed {name}={value!r} is not a number"
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
                  data_dir: Path | None, notes: list[str]) -> tuple[np.ndarray, dict[str, torch.Tensor], np.ndarray | None]:
    """Factual images (uint8), every attribute's factual value and the split indices (None for the user's files).

    For user images, attributes not given with ``--observed`` are inferred: the digit by the anti-causal predictor at
    t = 0, thickness and intensity by the Morpho-MNIST morphometrics.
    """
    attr_names = [v for v in scm.graph.variables if v != scm.image_name]
    if images:
        diffusion = scm.image_mechanism.diffusion
        shape = diffusion.image_shape
        crop = diffusion.config.get("source") == "guided-diffusion"     # ImageNet photographs of any aspect
        x_u8 = np.stack([load_user_image(p, shape[1:], notes, shape[0], crop) for p in images])
        obs = _parse_observed(scm, observed, len(images))
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
            raise DiffSCMError(f"give the factual value of {missing[0]} with --observed {missing[0]}=VALUE")
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


def run_counterfactual(scm: SCM, x_u8: np.ndarray, observed: dict[str, torch.Tensor], do_spec: dict[str, str],
                       opts: InferenceOptions, out: Path, progress: bool = True,
                       per_image: dict[str, list[str]] | None = None, names: list[str] | None = None,
                       index: np.ndarray | None = None) -> dict:
    """Compute counterfactuals and write ``grid.png``, ``counterfactuals.npz``, ``values.csv`` and ``options.json``.

    ``do_spec`` intervenes on every image; ``per_image`` (from ``--do-file``) image by image; neither is the null
    intervention. Under ``torchrun``/``accelerate launch`` the batches are shared out over the processes and only
    rank 0 writes."""
    top = topology()
    do = resolve_do(scm, do_spec, observed, opts.seed, per_image)
    x = to_model_range(x_u8)
    t0 = time.time()
    res = scm.counterfactual({scm.image_name: x, **observed}, do, opts, progress=progress, top=top)
    elapsed = time.time() - t0
    cf = from_model_range(res[scm.image_name])
    summary = {"n": int(len(x_u8)), "seconds": round(elapsed, 2), "images_per_s": round(len(x_u8) / elapsed, 3),
               "processes": top.world}
    if not top.is_main:
        return summary
    arrays = {"factual": x_u8, "counterfactual": cf}
    for name, v in observed.items():
        arrays[name] = v.numpy()
        arrays[f"{name}_cf"] = res[name].numpy()
    if "digit" in observed:
        arrays["target"] = arrays["digit_cf"]        # the name the MNIST outputs have always used
    if scm.oracle is not None and "digit" in res:
        with torch.inference_mode():
            pred = scm.oracle(res[scm.image_name].to(scm.device)).argmax(1).cpu().numpy()
        summary["oracle_effectiveness"] = float((pred == arrays["target"]).mean())
    measured = [n for n in observed if n in ("thickness", "intensity")]
    if measured:
        from ..data import morphomnist as mm

        vals = mm.measure_batch(cf[:, 0] if cf.ndim == 4 else cf, workers=1)
        for n in measured:
            got = vals[:, mm.METRIC_COLUMNS.index(n)]
            arrays[f"{n}_measured"] = got
            summary[f"{n}_mae_measured"] = round(float(np.nanmean(np.abs(got - res[n].numpy()))), 4)

    def label(i: int) -> str:
        parts = []
        for name in observed:
            a, b = observed[name][i].item(), res[name][i].item()
            if a != b:
                parts.append(f"{name[0]}{a:.3g}>{b:.3g}" if name != "digit" else f"{int(a)}>{int(b)}")
        return " ".join(parts) or "="

    def values_csv() -> str:
        import csv
        import io

        ids = names if names else [str(i) for i in (index if index is not None else range(len(x_u8)))]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file" if names else "index"] + [c for n in observed for c in (n, f"{n}_cf")])
        for i, ident in enumerate(ids):
            w.writerow([ident, *(f"{v[i].item():.6g}" for n in observed for v in (observed[n], res[n]))])
        return buf.getvalue()

    def files(tmp: Path) -> None:
        np.savez_compressed(tmp / "counterfactuals.npz", **arrays)
        (tmp / "values.csv").write_text(values_csv())
        save_grid([("factual", x_u8), ("counterfact.", cf)], tmp / "grid.png",
                  col_labels=[label(i) for i in range(len(x_u8))])
        (tmp / "options.json").write_text(json.dumps({"do": do_spec, "options": opts.__dict__, "summary": summary},
                                                     indent=2) + "\n")

    atomic_write_dir(out, files)
    return summary


def run_demo(scm: SCM, n: int, opts: InferenceOptions, out: Path, data_dir: Path | None = None,
             progress: bool = True) -> dict:
    """do(digit = k) for k = 0..9 on the first ``n`` test images: one shared abduction, ten predictions."""
    x_all, y_all = load_mnist("test", data_dir)
    x_u8, digits = x_all[:n], torch.as_tensor(y_all[:n])
    x = to_model_range(x_u8).to(scm.device)
    observed = {scm.image_name: x, "digit": digits.to(scm.device)}
    t0 = time.time()
    noise = abduct(scm, observed, opts)
    rows, cfs = [("factual", x_u8)], []
    gen = torch.Generator(device=scm.device).manual_seed(opts.seed)
    from rich.progress import track

    for k in track(range(10), description="do(digit=k)", disable=not progress):
        values = act(scm, observed, noise, {"digit": torch.full((n,), k, device=scm.device)})
        img = predict(scm, noise, values, opts, generator=gen)
        cfs.append(img.cpu())
        rows.append((f"do(digit={k})", from_model_range(img)))
    elapsed = time.time() - t0
    cf = torch.stack(cfs, 1)  # n × 10 × C × H × W
    target = np.tile(np.arange(10), (n, 1))
    summary = {"n_images": n, "n_counterfactuals": 10 * n, "seconds": round(elapsed, 1)}
    if scm.oracle is not None:
        with torch.inference_mode():
            pred = scm.oracle(cf.flatten(0, 1).to(scm.device)).argmax(1).cpu().numpy().reshape(n, 10)
        summary["oracle_effectiveness"] = float((pred == target).mean())

    def files(tmp: Path) -> None:
        save_grid(rows, tmp / "grid.png", col_labels=[f"#{i}:{d}" for i, d in enumerate(digits.tolist())])
        np.savez_compressed(tmp / "counterfactuals.npz", factual=x_u8,
                            counterfactual=from_model_range(cf.flatten(0, 1)).reshape(n, 10, *x_u8.shape[1:]),
                            digit=digits.numpy(), target=target)
        (tmp / "summary.json").write_text(json.dumps({"options": opts.__dict__, "summary": summary}, indent=2) + "\n")

    atomic_write_dir(out, files)
    return summary
