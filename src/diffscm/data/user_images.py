"""Users' own images (PNG/JPEG/NPY) validated and converted to the model's input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DiffSCMError


def load_user_image(path: str | Path, size: tuple[int, int], notes: list[str] | None = None, channels: int = 1,
                    crop: bool = False) -> np.ndarray:
    """Load one image as uint8 H×W (``channels`` 1) or 3×H×W (``channels`` 3); converts the colour mode and resizes
    square images (noted in ``notes``). ``crop``: any aspect ratio, resized and centre-cropped as guided-diffusion
    prepares ImageNet (:func:`center_crop`)."""
    if channels not in (1, 3):
        raise DiffSCMError(f"--image supports one- and three-channel models, not {channels} channels")
    mode = "L" if channels == 1 else "RGB"
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
        if channels == 1 and arr.ndim != 2:
            raise DiffSCMError(f"image {path} must be a 2-D array, got shape {arr.shape}")
        if channels == 3:
            if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
                arr = np.moveaxis(arr, 0, -1)                   # C×H×W -> H×W×C
            if arr.ndim != 3 or arr.shape[-1] != 3:
                raise DiffSCMError(f"image {path} must be an H×W×3 or 3×H×W array, got shape {arr.shape}")
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
    if img.mode != mode:
        notes.append(f"{path.name}: converted {img.mode} to {'grayscale' if mode == 'L' else 'RGB'}")
        img = img.convert(mode)
    if crop and img.size != (size[1], size[0]):
        notes.append(f"{path.name}: resized and centre-cropped {img.size[0]}×{img.size[1]} to {size[1]}×{size[0]}")
        img = center_crop(img, size[0])
    if img.size != (size[1], size[0]):
        if img.size[0] != img.size[1]:
            raise DiffSCMError(f"image {path} is {img.size[0]}×{img.size[1]}; need a square image ({size[1]}×{size[0]})")
        notes.append(f"{path.name}: resized {img.size[0]}×{img.size[1]} to {size[1]}×{size[0]}")
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr if arr.ndim == 2 else np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def center_crop(img, size: int):
    """guided-diffusion's ImageNet preprocessing (``center_crop_arr``): halve by box filtering while the short side is
    at least twice ``size``, resize the short side to ``size`` (bicubic), crop the centre. A PIL image in, one out."""
    while min(*img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(*img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))
