"""BraTS 2021 NIfTI volumes -> a 2-D slice dataset folder (see :mod:`diffscm.data.folder`).

Per patient folder ``ROOT/<ID>/`` with ``<ID>_flair``, ``_t1``, ``_t1ce``, ``_t2`` and ``_seg`` ``.nii[.gz]``:

1. each modality is normalised per volume: clipped to its [p_low, p_high] percentiles over brain voxels
   (non-zero) and scaled to [0, 1]; background stays 0;
2. axial slices (last axis) whose brain area is below ``min_brain`` of the slice are skipped;
3. slices are resized to ``size``×``size`` (bilinear with anti-aliasing; the mask by area ≥ ½);
4. slice label ``tumour`` = any tumour voxel (seg > 0) in the full-resolution slice; the mask is kept;
5. patients are split train/val/test at random (seeded), so no patient spans two splits.

Images are stored as uint8 C×H×W ``.npy`` (channels flair, t1, t1ce, t2), masks as PNG. The conversion is
resumable: finished patients are kept in ``OUT.partial/`` and skipped on a rerun; ``OUT`` appears only at the end.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DiffSCMError

MODALITIES = ("flair", "t1", "t1ce", "t2")


@dataclass
class BratsOptions:
    size: int = 64
    p_low: float = 1.0
    p_high: float = 99.0
    min_brain: float = 0.05
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for a corrupt file
        raise DiffSCMError(f"{path} is not a readable NIfTI file ({type(exc).__name__}: {exc})") from None


def _find_file(folder: Path, pid: str, suffix: str) -> Path:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{pid}_{suffix}{ext}"
        if p.exists():
            return p
    raise DiffSCMError(f"{folder} has no {pid}_{suffix}.nii.gz (BraTS 2021 layout: <ID>/<ID>_{{flair,t1,t1ce,t2,seg}}.nii.gz)")


def patients(root: Path) -> list[Path]:
    """Patient folders of a BraTS root (sub-folders holding a ``*_flair.nii[.gz]``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DiffSCMError(f"--root {root} is not a folder")
    found = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob(f"{p.name}_flair.nii*")))
    if not found:
        raise DiffSCMError(f"{root} holds no BraTS patient folders (<ID>/<ID>_flair.nii.gz)")
    return found


def normalise_volume(vol: np.ndarray, p_low: float, p_high: float) -> np.ndarray:
    """Clip to the [p_low, p_high] percentiles of the non-zero voxels and scale to [0, 1]; zeros stay 0."""
    brain = vol != 0
    if not brain.any():
        return np.zeros_like(vol, dtype=np.float32)
    lo, hi = np.percentile(vol[brain], [p_low, p_high])
    out = np.clip((vol - lo) / max(hi - lo, 1e-8), 0, 1).astype(np.float32)
    out[~brain] = 0
    return out


def patient_slices(folder: Path, opts: BratsOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One patient's kept axial slices: uint8 images (S×4×size×size), bool masks, labels (0/1), slice indices."""
    from skimage.transform import resize

    pid = folder.name
    vols = [normalise_volume(_nifti(_find_file(folder, pid, m)), opts.p_low, opts.p_high) for m in MODALITIES]
    seg = _nifti(_find_file(folder, pid, "seg"))
    for m, v in zip(MODALITIES, vols):
        if v.shape != seg.shape:
            raise DiffSCMError(f"{pid}: {m} volume is {v.shape}, the segmentation {seg.shape}")
    if seg.ndim != 3:
        raise DiffSCMError(f"{pid}: volumes must be 3-D, got {seg.ndim}-D")
    vol = np.stack(vols)                      # 4 × X × Y × Z
    brain_frac = (vol != 0).any(0).mean(axis=(0, 1))
    keep = np.flatnonzero(brain_frac >= opts.min_brain)
    s = opts.size
    imgs = np.zeros((len(keep), 4, s, s), dtype=np.uint8)
    masks = np.zeros((len(keep), s, s), dtype=bool)
    labels = np.zeros(len(keep), dtype=np.int64)
    for j, z in enumerate(keep):
        sl = vol[..., z]
        r = resize(sl, (4, s, s), order=1, anti_aliasing=True, preserve_range=True)
        imgs[j] = np.round(np.clip(r, 0, 1) * 255).astype(np.uint8)
        m = seg[..., z] > 0
        labels[j] = int(m.any())
        masks[j] = resize(m.astype(np.float32), (s, s), order=1, anti_aliasing=True) >= 0.5
    return imgs, masks, labels, keep


def split_patients(ids: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Patient id -> train/val/test, at random with the given fractions (each split non-empty when possible)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DiffSCMError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    order = [ids[k] for k in rng.permutation(len(ids))]
    n = len(ids)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    out = {}
    for k, pid in enumerate(order):
        out[pid] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
    return out


def convert_brats(root: Path, out: Path, opts: BratsOptions | None = None, progress: bool = True) -> dict:
    """Convert a BraTS root to a dataset folder at ``out`` (resumable through ``out.partial``); returns counts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from PIL import Image

    opts = opts or BratsOptions()
    out = Path(out)
    pts = patients(root)
    assign = split_patients([p.name for p in pts], opts.split, opts.seed)
    work = out.with_name(out.name + ".partial")
    settings = {"size": opts.size, "p_low": opts.p_low, "p_high": opts.p_high, "min_brain": opts.min_brain,
                "split": list(opts.split), "seed": opts.seed}
    if work.exists():
        prev = json.loads((work / "settings.json").read_text()) if (work / "settings.json").exists() else None
        if prev != settings:
            shutil.rmtree(work)   # settings changed: the partial work cannot be reused
    (work / "images").mkdir(parents=True, exist_ok=True)
    (work / "masks").mkdir(exist_ok=True)
    (work / "rows").mkdir(exist_ok=True)
    (work / "settings.json").write_text(json.dumps(settings))
    with Progress(TextColumn("[bold]BraTS"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress) as bar:
        task = bar.add_task("patients", total=len(pts))
        for p in pts:
            rows_file = work / "rows" / f"{p.name}.csv"
            if not rows_file.exists():
                imgs, masks, labels, zs = patient_slices(p, opts)
                lines = []
                for img, m, y, z in zip(imgs, masks, labels, zs):
                    name = f"{p.name}_z{z:03d}"
                    np.save(work / "images" / f"{name}.npy", img)
                    Image.fromarray(m.astype(np.uint8) * 255).save(work / "masks" / f"{name}.png")
                    lines.append(f"{name}.npy,{assign[p.name]},{y},{p.name},{z}")
                tmp = rows_file.with_suffix(".tmp")
                tmp.write_text("".join(line + "\n" for line in lines))
                tmp.replace(rows_file)
            bar.advance(task)
    rows = []
    for p in pts:
        rows += (work / "rows" / f"{p.name}.csv").read_text().splitlines()
    if not rows:
        raise DiffSCMError(f"no slice of {root} passed the brain-area filter (min_brain = {opts.min_brain})")
    (work / "labels.csv").write_text("file,split,tumour,patient,slice\n" + "".join(r + "\n" for r in rows))
    counts = {s: sum(1 for r in rows if r.split(",")[1] == s) for s in ("train", "val", "test")}
    info = {"name": "brats2021-2d", "label": "tumour", "num_classes": 2, "class_names": ["healthy", "tumour"],
            "channels": list(MODALITIES), "source": str(root), "settings": settings, "slices": counts,
            "patients": {s: sum(1 for v in assign.values() if v == s) for s in ("train", "val", "test")}}
    (work / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(work / "rows")
    (work / "settings.json").unlink()
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return info
