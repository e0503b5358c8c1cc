"""A generic 2-D dataset users bring: a folder of images, a CSV of labels/attributes, optional pixel masks.

Layout::

    ROOT/labels.csv     header ``file,<columns…>``; optional ``split`` column (train/val/test)
    ROOT/images/FILE    one image per row: .png (8/16-bit, grey or colour), .npy or .npz (H×W or C×H×W)
    ROOT/masks/FILE     optional; same stem, .png or .npy; non-zero = lesion
    ROOT/dataset.json   optional: {"label": "lesion", "num_classes": 2, "class_names": [...], "channels": [...]}

Images are returned as float32 N×C×H×W in [0, 1] (uint8 / 255, uint16 / 65535, floats must lie in [0, 1]).
Every problem is reported as one :class:`DiffSCMError` line naming the file.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DiffSCMError
from ..files import atomic_write_dir

LABELS_CSV = "labels.csv"
INFO_JSON = "dataset.json"
IMAGE_SUFFIXES = (".png", ".npy", ".npz")
MASK_SUFFIXES = (".png", ".npy")


@dataclass
class FolderDataset:
    """Images (N×C×H×W float32 in [0, 1]), attribute columns, optional masks (N×H×W bool), and the file names."""

    root: Path
    files: list[str]
    images: np.ndarray
    table: dict[str, np.ndarray]
    masks: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def label(self) -> str | None:
        return self.info.get("label")

    @property
    def num_classes(self) -> int | None:
        return self.info.get("num_classes")


def _to_unit(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DiffSCMError(f"{path} contains NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise DiffSCMError(f"{path}: float images must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        return arr.astype(np.float32)
    raise DiffSCMError(f"{path} has dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                key = "image" if "image" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DiffSCMError(f"{path} holds several arrays ({', '.join(keys)}); name the image 'image'")
                return z[key]
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DiffSCMError(f"{path} is not a readable array file ({str(exc).splitlines()[0]})") from None


def read_image(path: str | Path) -> np.ndarray:
    """One image as float32 C×H×W in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DiffSCMError(f"image {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DiffSCMError(f"{path}: unsupported image type {suffix!r} (use {', '.join(IMAGE_SUFFIXES)})")
    if suffix == ".png":
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise DiffSCMError(f"image {path} cannot be read: {exc}") from None
        if img.mode in ("I;16", "I;16B", "I;16L"):
            arr = np.asarray(img, dtype=np.uint16)
        elif img.mode == "I":
            arr = np.asarray(img).astype(np.uint16)
        elif img.mode in ("L", "RGB", "RGBA", "LA"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("RGB"))
        arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    else:
        arr = _read_array(path)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise DiffSCMError(f"image {path} must be H×W or C×H×W, got shape {arr.shape}")
    return _to_unit(arr, path)


def read_mask(path: str | Path) -> np.ndarray:
    """One mask as bool H×W (non-zero = lesion)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        try:
            arr = np.asarray(Image.open(path))
        except (UnidentifiedImageError, OSError) as exc:
            raise DiffSCMError(f"mask {path} cannot be read: {exc}") from None
    else:
        arr = _read_array(path)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise DiffSCMError(f"mask {path} must be H×W, got shape {arr.shape}")
    return arr != 0


def _find(folder: Path, name: str, suffixes) -> Path | None:
    p = folder / name
    if p.is_file():
        return p
    for s in suffixes:
        q = (folder / name).with_suffix(s)
        if q.is_file():
            return q
    return None


def _parse_column(values: list[str]) -> np.ndarray:
    try:
        f = np.array([float(v) for v in values])
    except ValueError:
        return np.array(values)
    return f.astype(np.int64) if np.all(f == np.round(f)) else f


def read_table(root: str | Path, split: str | None = None) -> tuple[list[str], dict[str, np.ndarray], dict]:
    """The file names, the attribute columns (of one ``split``, if given) and ``dataset.json`` of a dataset folder,
    without reading any image."""
    root = Path(root)
    if not root.is_dir():
        raise DiffSCMError(f"dataset folder {root} does not exist")
    csv_path = root / LABELS_CSV
    if not csv_path.is_file():
        raise DiffSCMError(f"{root} has no {LABELS_CSV} (header: file,<labels…>)")
    info = {}
    if (root / INFO_JSON).is_file():
        try:
            info = json.loads((root / INFO_JSON).read_text())
        except json.JSONDecodeError as exc:
            raise DiffSCMError(f"{root / INFO_JSON} is not valid JSON ({exc.msg})") from None
    with csv_path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or "file" not in rows[0]:
        raise DiffSCMError(f"{csv_path} must have a header with a 'file' column")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    for k, r in enumerate(body):
        if len(r) != len(header):
            raise DiffSCMError(f"{csv_path} line {k + 2}: {len(r)} fields, header has {len(header)}")
    cols = {h: [r[i].strip() for r in body] for i, h in enumerate(header)}
    if split is not None:
        if "split" not in cols:
            raise DiffSCMError(f"{csv_path} has no 'split' column; cannot select split {split!r}")
        keep = [i for i, s in enumerate(cols["split"]) if s == split]
        if not keep:
            raise DiffSCMError(f"{csv_path} has no rows of split {split!r}")
        cols = {h: [v[i] for i in keep] for h, v in cols.items()}
    if not cols["file"]:
        raise DiffSCMError(f"{csv_path} lists no images")
    files = cols.pop("file")
    return files, {h: _parse_column(v) for h, v in cols.items()}, info


def has_split_column(root: str | Path) -> bool:
    """Whether the folder's labels.csv has a ``split`` column."""
    probe = Path(root) / LABELS_CSV
    return probe.is_file() and "split" in [h.strip() for h in probe.read_text().split("\n", 1)[0].split(",")]


def load_folder(root: str | Path, split: str | None = None, label: str | None = None,
                num_classes: int | None = None, masks: bool = True) -> FolderDataset:
    """Read and validate a dataset folder (optionally one ``split``); ``label`` must be an integer class column."""
    root = Path(root)
    csv_path = root / LABELS_CSV
    files, table, info = read_table(root, split)
    label = label or info.get("label")
    num_classes = num_classes or info.get("num_classes")
    if label is not None:
        if label not in table:
            raise DiffSCMError(f"{csv_path} has no column {label!r} (columns: {', '.join(table) or 'none'})")
        y = table[label]
        if y.dtype.kind != "i":
            raise DiffSCMError(f"label column {label!r} must hold integers 0..K-1")
        hi = num_classes if num_classes else int(y.max()) + 1
        bad = np.flatnonzero((y < 0) | (y >= hi))
        if len(bad):
            raise DiffSCMError(f"{csv_path}: {label} = {y[bad[0]]} of {files[bad[0]]} is out of range 0..{hi - 1}")
        info = {**info, "label": label, "num_classes": int(hi)}
    img_dir = root / "images"
    images, shape = [], None
    for f in files:
        p = _find(img_dir, f, IMAGE_SUFFIXES)
        if p is None:
            raise DiffSCMError(f"image {img_dir / f} listed in {LABELS_CSV} does not exist")
        a = read_image(p)
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise DiffSCMError(f"image {p} has shape {a.shape}, the first image {shape}: all images must match")
        images.append(a)
    mask_arr = None
    mask_dir = root / "masks"
    if masks and mask_dir.is_dir():
        ms = []
        for f in files:
            p = _find(mask_dir, f, MASK_SUFFIXES)
            if p is None:
                raise DiffSCMError(f"mask for {f} is missing in {mask_dir} (every image needs one, or remove the folder)")
            m = read_mask(p)
            if m.shape != shape[1:]:
                raise DiffSCMError(f"mask {p} is {m.shape[0]}×{m.shape[1]}, its image {shape[1]}×{shape[2]}")
            ms.append(m)
        mask_arr = np.stack(ms)
    return FolderDataset(root, files, np.stack(images), table, mask_arr, info)


def write_folder(root: str | Path, images: np.ndarray, table: dict[str, np.ndarray], masks: np.ndarray | None = None,
                 info: dict | None = None, fmt: str = "png", names: list[str] | None = None) -> Path:
    """Write a dataset folder atomically: images uint8 N×H×W / N×C×H×W (PNG, 1 or 3 channels) or float (NPY)."""

    n = len(images)
    names = names or [f"{k:06d}" for k in range(n)]
    if fmt not in ("png", "npy"):
        raise DiffSCMError(f"unknown image format {fmt!r} (png or npy)")

    def write(tmp: Path) -> None:
        (tmp / "images").mkdir()
        files = []
        for k in range(n):
            a = images[k]
            f = f"{names[k]}.{fmt}"
            if fmt == "png":
                a = a[0] if a.ndim == 3 and a.shape[0] == 1 else (np.moveaxis(a, 0, -1) if a.ndim == 3 else a)
                Image.fromarray(np.asarray(a, dtype=np.uint8)).save(tmp / "images" / f)
            else:
                np.save(tmp / "images" / f, a)
            files.append(f)
        if masks is not None:
            (tmp / "masks").mkdir()
            for k in range(n):
                Image.fromarray((masks[k] > 0).astype(np.uint8) * 255).save(tmp / "masks" / f"{names[k]}.png")
        cols = list(table)
        lines = [",".join(["file", *cols])]
        for k in range(n):
            lines.append(",".join([files[k], *(_fmt(table[c][k]) for c in cols)]))
        (tmp / LABELS_CSV).write_text("\n".join(lines) + "\n")
        if info:
            (tmp / INFO_JSON).write_text(json.dumps(info, indent=2) + "\n")

    atomic_write_dir(root, write)
    return Path(root)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)
