"""Users' own images (PNG/JPEG/NPY) validated and converted to the model's input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DiffSCMError


def load_user_image(path: str | Path, size: tuple[int, int], notes: list[str] | None = None) -> np.ndarray:
    """Load one grayscale image as uint8 H×W; converts colour and resizes square images (noted in ``notes``)."""
    path = Path(path)
    notes = notes if notes is not None else []
    if not path.exists():
        raise DiffSCMError(f"image {path} does not exist")
    if not path.is_file():
        raise DiffSCMError(f"image {path} is not a file")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DiffSCMError(f"image {path} is not a plain .npy array ({exc})") from None
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise DiffSCMError(f"image {path} must be a 2-D array, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            pass
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise DiffSCMError(f"image {path} contains NaN or infinite values")
            if arr.min() < 0 or arr.max() > 1:
                raise DiffSCMError(f"float image {path} must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
            arr = np.rint(arr * 255).astype(np.uint8)
        else:
            raise DiffSCMError(f"image {path} has dtype {arr.dtype}; use uint8 (0..255) or float in [0, 1]")
        img = Image.fromarray(arr)
    else:
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise DiffSCMError(f"image {path} cannot be read: {exc}") from None
        if img.mode != "L":
            notes.append(f"{path.name}: converted {img.mode} to grayscale")
            img = img.convert("L")
    if img.size != (size[1], size[0]):
        if img.size[0] != img.size[1]:
            raise DiffSCMError(f"image {path} is {img.size[0]}×{img.size[1]}; need a square image ({size[1]}×{size[0]})")
        notes.append(f"{path.name}: resized {img.size[0]}×{img.size[1]} to {size[1]}×{size[0]}")
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
