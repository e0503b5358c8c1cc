"""Implementation of ``diffscm localize``: healthy counterfactuals and anomaly maps of the given images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.folder import IMAGE_SUFFIXES, read_image, read_mask
from ..errors import DiffSCMError
from ..eval.figures import heat_overlay
from ..eval.localize import REDUCTIONS, anomaly_map, healthy_counterfactual
from ..files import atomic_write_dir
from ..scm.core import SCM


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
    from ..progress import make_progress

    k_steps = len(mech.grid(opts)) - 1
    bs = opts.batch_size
    with make_progress(progress) as bar:
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
