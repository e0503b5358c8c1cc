"""Implementation of ``diffscm localize`` and ``diffscm evaluate --task localization`` (parsing lives in :mod:`diffscm.cli`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data.folder import IMAGE_SUFFIXES, read_image, read_mask
from .errors import DiffSCMError
from .localize import REDUCTIONS, anomaly_map, healthy_counterfactual
from .models.io import atomic_write_dir
from .scm import SCM


def parse_target(target: str, num_classes: int) -> int:
    """``healthy`` = class 0; otherwise a class index."""
    if target.strip().lower() == "healthy":
        return 0
    try:
        k = int(target)
    except ValueError:
        raise DiffSCMError(f"--target {target!r}: use 'healthy' (class 0) or a class index") from None
    if not 0 <= k < num_classes:
        raise DiffSCMError(f"--target {k} is out of range 0..{num_classes - 1}")
    return k


def collect_inputs(path: Path) -> list[Path]:
    """One image file, or every image file (PNG/NPY/NPZ) of a folder, sorted."""
    if not path.exists():
        raise DiffSCMError(f"--input {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DiffSCMError(f"--input {path} holds no PNG/NPY/NPZ images")
    return files


def heat_overlay(image: np.ndarray, amap: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """RGB uint8: the image in grey with the anomaly map (``inferno``, 0..vmax) blended where it is high."""
    from matplotlib import colormaps

    grey = image.mean(0) if image.ndim == 3 else image
    vmax = float(amap.max()) if vmax is None else vmax
    a = np.clip(amap / vmax, 0, 1) if vmax > 0 else np.zeros_like(amap)
    heat = colormaps["inferno"](a)[..., :3]
    base = np.repeat(grey[..., None], 3, axis=2)
    alpha = a[..., None] * 0.8
    return np.round((base * (1 - alpha) + heat * alpha) * 255).astype(np.uint8)


def _save_png(arr: np.ndarray, path: Path, scale: int) -> None:
    img = Image.fromarray(arr)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def run_localize(scm: SCM, inputs: list[Path], target: int, opts, out: Path, reduce: str, sigma: float,
                 mask: Path | None, progress: bool = True, scale: int = 4) -> list[dict]:
    """Healthy counterfactuals + anomaly maps of ``inputs``; all outputs appear in ``out`` at once (atomic)."""
    if reduce not in REDUCTIONS:
        raise DiffSCMError(f"unknown --reduce {reduce!r} (use {' or '.join(REDUCTIONS)})")
    shape = tuple(scm.image_mechanism.diffusion.image_shape)
    images = []
    for p in inputs:
        a = read_image(p)
        if a.shape != shape:
            raise DiffSCMError(f"image {p} is {a.shape[0]}×{a.shape[1]}×{a.shape[2]}; this model needs "
                               f"{shape[0]}×{shape[1]}×{shape[2]} (channels×height×width)")
        images.append(a)
    masks = None
    if mask is not None:
        if mask.is_dir():
            found = []
            for p in inputs:
                cand = [mask / (p.stem + s) for s in (".png", ".npy")]
                hit = next((c for c in cand if c.exists()), None)
                if hit is None:
                    raise DiffSCMError(f"no foreground mask for {p.name} in {mask} ({p.stem}.png or .npy)")
                found.append(read_mask(hit))
            masks = np.stack(found)
        else:
            if not mask.exists():
                raise DiffSCMError(f"--mask {mask} does not exist")
            masks = np.repeat(read_mask(mask)[None], len(inputs), axis=0)
        if masks.shape[1:] != shape[1:]:
            raise DiffSCMError(f"foreground mask is {masks.shape[1]}×{masks.shape[2]}, images {shape[1]}×{shape[2]}")
    x = torch.as_tensor(np.stack(images)) * 2 - 1
    mech = scm.image_mechanism
    outs = []
    from .scm import _progress

    k_steps = len(mech.grid(opts)) - 1
    bs = opts.batch_size
    with _progress(progress) as bar:
        task = bar.add_task("localize", total=2 * k_steps * ((len(x) + bs - 1) // bs))
        for start in range(0, len(x), bs):
            xb = x[start:start + bs].to(scm.device)
            outs.append(healthy_counterfactual(mech, xb, target, opts, callback=lambda _i: bar.advance(task)).cpu())
    x_cf = (torch.cat(outs) + 1) / 2
    x01 = (x + 1) / 2
    maps = anomaly_map(x01, x_cf, reduce, sigma, masks)
    vmax = float(maps.max()) if maps.size else 1.0
    records = []

    def write(tmp: Path) -> None:
        for k, p in enumerate(inputs):
            cf = x_cf[k].numpy()
            cf_img = np.round(cf[0] * 255).astype(np.uint8) if cf.shape[0] == 1 else \
                np.round(np.moveaxis(cf[:3], 0, -1) * 255).astype(np.uint8)
            _save_png(cf_img, tmp / f"{p.stem}_cf.png", scale)
            _save_png(heat_overlay(x01[k].numpy(), maps[k], vmax), tmp / f"{p.stem}_map.png", scale)
            np.save(tmp / f"{p.stem}_map.npy", maps[k])
            records.append({"input": str(p), "counterfactual": f"{p.stem}_cf.png", "map": f"{p.stem}_map.npy",
                            "overlay": f"{p.stem}_map.png", "map_max": float(maps[k].max()),
                            "map_mean": float(maps[k].mean())})
        meta = {"target": target, "reduce": reduce, "sigma": sigma, "options": {**opts.__dict__},
                "model": str(scm.path), "overlay_vmax": vmax, "images": records}
        (tmp / "localize.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")

    atomic_write_dir(out, write)
    return records


def localization_table(results: dict) -> str:
    """Markdown table of :func:`diffscm.lesion_eval.evaluate_localization` results."""
    from .report import md_table

    def cell(s: dict) -> str:
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"

    rows = []
    for method, r in results["methods"].items():
        sm = r["summary"]
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        rows.append([method, cell(sm["dice"]), cell(sm["auprc"]), cell(sm["auroc"]), settings])
    return md_table(["method", "Dice (test)", "AUPRC (pixels)", "AUROC (images)", "settings"], rows)


def run_localization_eval(scm: SCM, methods: list[str], roots: list[Path], n_val: int, n_test: int, steps, ratio,
                          cfg_scale, scale, dynamic_norm, batch_size, cache: Path | None, json_out: Path | None,
                          report: Path | None, progress: bool = True, echo=print) -> dict:
    """``diffscm evaluate --task localization``: the lesion table over the seeds' dataset folders."""
    from .lesion_eval import METHODS, LocalizationModels, LocalizationProtocol, evaluate_localization
    from .report import write_text_atomic

    methods = methods or list(METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise DiffSCMError(f"unknown --method {bad[0]!r} for localization (choose from {', '.join(METHODS)})")
    if not roots:
        raise DiffSCMError("--task localization needs --lesion-data DIR (one folder per seed, e.g. from `diffscm data lesion-mnist`)")
    seeds = {}
    for k, root in enumerate(roots):
        info_file = Path(root) / "dataset.json"
        seed = json.loads(info_file.read_text()).get("seed", k) if info_file.is_file() else k
        if seed in seeds:
            raise DiffSCMError(f"--lesion-data {root} repeats seed {seed}")
        seeds[seed] = Path(root)
    models = LocalizationModels.from_scm(scm)
    proto = LocalizationProtocol.from_scm(scm, models.label, n_val=n_val, n_test=n_test, steps=steps, ratio=ratio,
                                          w=cfg_scale, classifier_scale=scale, dynamic_norm=dynamic_norm,
                                          batch_size=batch_size)
    proto.options()  # validate
    from .schedule import ddim_grid

    ddim_grid(proto.steps, proto.ratio)
    results = evaluate_localization(models, seeds, proto, methods, cache, progress)
    table = localization_table(results)
    echo(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(results, indent=2) + "\n")
    if report is not None:
        def write(tmp: Path) -> None:
            (tmp / "index.md").write_text("# Lesion localisation\n\n" + table + "\n")
            (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")

        atomic_write_dir(report, write)
    return results
