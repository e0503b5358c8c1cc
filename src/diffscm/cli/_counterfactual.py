"""Implementation of ``diffscm counterfactual`` and ``diffscm demo`` (kept apart from argument parsing)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import from_model_range, load_mnist, to_model_range
from ..distributed import topology
from ..errors import DiffSCMError
from ..eval.viz import save_grid
from ..files import atomic_write_dir
from ..scm.core import SCM, abduct, act, predict
from ..scm.mechanisms import InferenceOptions
from ..service.factuals import do_value, resolve_do


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
                do_value(scm.graph.variables[c], rec[c], f"--do-file row {r}, column {c}")
            cells[c].append(rec[c])
    return np.asarray(idx, dtype=np.int64), cells


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
