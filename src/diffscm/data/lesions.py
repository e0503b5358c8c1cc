"""Lesion-MNIST: real MNIST digits with synthetic, textured elliptical "lesions" and their exact masks.

A seeded benchmark for weakly supervised lesion localisation that runs without BraTS. Generator, per image
chosen to be lesioned (a random half of each split):

* centre: a uniformly drawn foreground pixel (intensity ≥ 0.5) plus a uniform sub-pixel jitter;
* shape: an ellipse with semi-axes a, b ~ U(2, 5) px and orientation θ ~ U(0, π), with a soft edge
  m = σ(6·(1 − r)) where r is the elliptical radius;
* texture: smooth Gaussian noise (σ = 1 px) mapped to τ = clip(0.75 + 0.25·z, 0.3, 1);
* polarity and contrast: dark (p = ½) x' = x·(1 − c·m·τ), or bright x' = x + (1 − x)·c·m·τ, c ~ U(0.5, 1);
* mask: the pixels with m ≥ ½ that the lesion changed by at least 0.1 (of the [0, 1] range). A draw whose
  mask has fewer than 4 pixels is redrawn, so every lesion is visible.

Dark lesions punch textured holes into strokes; bright ones swell a stroke into the background.
Label = 1 if lesioned else 0 (0 = healthy). Images are stored as uint8 (rounded). At another ``size`` than 28 the
digits are resized (bicubic) first and every length above (semi-axes, texture σ, minimum mask area by its square)
scales by size / 28.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SPLITS = {"train": "train", "val": "valid", "test": "test"}
MIN_MASK_PIXELS = 4


def insert_lesion(x: np.ndarray, rng: np.random.Generator, max_tries: int = 50,
                  scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """One lesion into ``x`` (H×W float in [0, 1]), its lengths scaled by ``scale``; returns (lesioned image, bool
    mask, parameters)."""
    h, w = x.shape
    fg = np.argwhere(x >= 0.5)
    if len(fg) == 0:
        fg = np.argwhere(x >= x.max() * 0.5) if x.max() > 0 else np.array([[h // 2, w // 2]])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(max_tries):
        cy, cx = fg[rng.integers(len(fg))] + rng.uniform(-0.5, 0.5, 2)
        a, b = rng.uniform(2.0, 5.0, 2) * scale
        theta = rng.uniform(0, np.pi)
        dark = bool(rng.random() < 0.5)
        c = rng.uniform(0.5, 1.0)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        m = 1.0 / (1.0 + np.exp(-6.0 * (1.0 - r)))
        z = gaussian_filter(rng.normal(size=(h, w)), scale)
        z = z / (z.std() + 1e-8)
        tau = np.clip(0.75 + 0.25 * z, 0.3, 1.0)
        y = x * (1 - c * m * tau) if dark else x + (1 - x) * c * m * tau
        y = np.round(np.clip(y, 0, 1) * 255) / 255
        mask = (m >= 0.5) & (np.abs(y - x) >= 0.1)
        if mask.sum() >= MIN_MASK_PIXELS * scale ** 2:
            return y, mask, {"cy": float(cy), "cx": float(cx), "a": float(a), "b": float(b), "theta": float(theta),
                             "dark": dark, "contrast": float(c)}
    return x.copy(), np.zeros_like(x, dtype=bool), {}


def make_lesion_split(images_u8: np.ndarray, seed: int, split_id: int = 0,
                      scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Lesion a random half of ``images_u8`` (N×H×W uint8), lesion lengths scaled by ``scale``. Returns uint8
    images, bool masks, labels (0/1), params."""
    rng = np.random.default_rng([seed, split_id, 7919])
    n = len(images_u8)
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.permutation(n)[: n // 2]] = True
    out = images_u8.copy()
    masks = np.zeros(images_u8.shape, dtype=bool)
    labels = np.zeros(n, dtype=np.int64)
    params: list[dict] = [{} for _ in range(n)]
    for k in np.flatnonzero(chosen):
        y, m, p = insert_lesion(images_u8[k].astype(np.float64) / 255.0, rng, scale=scale)
        if m.any():
            out[k] = np.round(y * 255).astype(np.uint8)
            masks[k], labels[k], params[k] = m, 1, p
    return out, masks, labels, params


def resize_digits(images_u8: np.ndarray, size: int) -> np.ndarray:
    """N×28×28 uint8 digits resized to N×size×size (bicubic, rounded)."""
    from PIL import Image

    if images_u8.shape[-1] == size:
        return images_u8
    return np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)) for x in images_u8])


def lesion_mnist(seed: int, counts: dict[str, int], offset_by_seed: bool = True, data_dir=None,
                 size: int = 28) -> dict[str, dict]:
    """Lesion-MNIST splits from real MNIST at ``size``×``size``: ``counts`` maps train/val/test to a number of images.

    train comes from MNIST train, val from MNIST valid and test from MNIST test. With ``offset_by_seed`` seed s
    uses the s-th block of ``count`` digits of val/test, so seeds evaluate on disjoint digits.
    """
    from .mnist import load_mnist

    out = {}
    for i, (split, n) in enumerate(counts.items()):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        x, digits = load_mnist(SPLITS[split], data_dir)
        start = seed * n if (offset_by_seed and split != "train") else 0
        if start + n > len(x):
            raise ValueError(f"{split}: {start + n} images needed, MNIST {SPLITS[split]} has {len(x)}")
        imgs, masks, labels, params = make_lesion_split(resize_digits(x[start:start + n], size), seed, i, size / 28)
        out[split] = {"images": imgs, "masks": masks, "lesion": labels, "digit": digits[start:start + n],
                      "source_index": np.arange(start, start + n), "params": params}
    return out
