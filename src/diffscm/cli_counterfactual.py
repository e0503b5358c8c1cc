"""Implementation of ``diffscm counterfactual`` and ``diffscm demo`` (kept apart from argument parsing)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .data import from_model_range, load_mnist, to_model_range
from .data.user_images import load_user_image
from .errors import DiffSCMError
from .evaluation import random_targets
from .mechanisms import InferenceOptions
from .models.io import atomic_write_dir
from .scm import SCM, abduct, act, predict
from .viz import save_grid


def parse_index(spec: str, n: int) -> np.ndarray:
    """``"0:16"``, ``"5"`` or ``"1,4,9"`` -> indices into a split of size ``n``."""
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


def resolve_do(scm: SCM, spec: dict[str, str], observed: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Turn ``{"digit": "7"|"random"}`` into per-sample tensors; ``random`` draws a value ≠ the factual one."""
    n = next(iter(observed.values())).shape[0]
    out = {}
    for name, value in spec.items():
        var = scm.graph.variables.get(name)
        if var is None or var.kind == "image":
            known = ", ".join(v for v in scm.graph.variables if v != scm.image_name)
            raise DiffSCMError(f"unknown variable {name!r} in --do (this model has: {known})")
        if value == "random":
            if var.kind != "categorical":
                raise DiffSCMError(f"--do {name}=random needs a categorical variable")
            out[name] = torch.as_tensor(random_targets(observed[name].numpy(), seed, var.num_classes))
            continue
        try:
            v = float(value)
        except ValueError:
            raise DiffSCMError(f"--do {name}={value!r} is not a number (or 'random')") from None
        var.check_value(v)
        out[name] = torch.full((n,), int(v) if var.kind == "categorical" else v,
                               dtype=torch.long if var.kind == "categorical" else torch.float32)
    return out


def infer_digit(scm: SCM, x: torch.Tensor) -> torch.Tensor:
    """Factual digit of unlabeled images: argmax of the anti-causal predictor at t = 0."""
    pred = scm.image_mechanism.predictors["digit"]
    with torch.inference_mode():
        return pred(x.to(scm.device), torch.zeros((), dtype=torch.long, device=scm.device)).argmax(1).cpu()


def load_factuals(scm: SCM, split: str | None, index: str | None, images: list[Path], observed: dict[str, str],
                  data_dir: Path | None, notes: list[str]) -> tuple[np.ndarray, torch.Tensor]:
    """Factual images (uint8) and digits from a split or the user's files."""
    if images:
        shape = scm.image_mechanism.diffusion.image_shape
        if shape[0] != 1:
            raise DiffSCMError("--image supports one-channel models only")
        x_u8 = np.stack([load_user_image(p, shape[1:], notes) for p in images])
        extra = set(observed) - {"digit"}
        if extra:
            raise DiffSCMError(f"unknown variable {sorted(extra)[0]!r} in --observed (this model has: digit)")
        if "digit" in observed:
            try:
                d = float(observed["digit"])
            except ValueError:
                raise DiffSCMError(f"--observed digit={observed['digit']!r} is not a number") from None
            scm.graph.variables["digit"].check_value(d)
            digits = torch.full((len(images),), int(d), dtype=torch.long)
        else:
            digits = infer_digit(scm, to_model_range(x_u8))
            notes.append("factual digit inferred by the anti-causal predictor at t=0: " + ",".join(map(str, digits.tolist())))
        return x_u8, digits
    if observed:
        raise DiffSCMError("--observed goes with --image; split images carry their own labels")
    x_all, y_all = load_mnist(split or "test", data_dir)
    idx = parse_index(index or "0:16", len(x_all))
    return x_all[idx], torch.as_tensor(y_all[idx])




def run_counterfactual(scm: SCM, x_u8: np.ndarray, digits: torch.Tensor, do_spec: dict[str, str],
                       opts: InferenceOptions, out: Path, progress: bool = True) -> dict:
    """Compute counterfactuals and write ``grid.png``, ``counterfactuals.npz`` and ``options.json`` to ``out``."""
    observed = {"digit": digits}
    do = resolve_do(scm, do_spec, observed, opts.seed)
    x = to_model_range(x_u8)
    t0 = time.time()
    res = scm.counterfactual({scm.image_name: x, **observed}, do, opts, progress=progress)
    elapsed = time.time() - t0
    cf = from_model_range(res[scm.image_name])
    target = res["digit"].numpy().astype(np.int64)
    summary = {"n": int(len(x_u8)), "seconds": round(elapsed, 2), "images_per_s": round(len(x_u8) / elapsed, 3)}
    if scm.oracle is not None:
        with torch.inference_mode():
            pred = scm.oracle(res[scm.image_name].to(scm.device)).argmax(1).cpu().numpy()
        summary["oracle_effectiveness"] = float((pred == target).mean())

    def files(tmp: Path) -> None:
        np.savez_compressed(tmp / "counterfactuals.npz", factual=x_u8, counterfactual=cf,
                            digit=digits.numpy().astype(np.int64), target=target)
        labels = [f"{d}>{t}" for d, t in zip(digits.tolist(), target.tolist())]
        save_grid([("factual", x_u8), ("counterfact.", cf)], tmp / "grid.png", col_labels=labels)
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
