"""Labelled image grids (Pillow only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _tiles(imgs: np.ndarray) -> np.ndarray:
    """uint8 N×H×W or N×C×H×W as N×H×W (grey; the first channel unless C = 3) or N×H×W×3 (colour)."""
    imgs = np.asarray(imgs, dtype=np.uint8)
    if imgs.ndim == 4:
        imgs = np.moveaxis(imgs, 1, -1) if imgs.shape[1] == 3 else imgs[:, 0]
    return imgs


def save_grid(rows: list[tuple[str, np.ndarray]], path: str | Path, scale: int = 2, label_width: int = 90,
              col_labels: list[str] | None = None) -> None:
    """Write a PNG with one labelled row per (label, uint8 N×H×W or N×C×H×W) entry: colour for C = 3, else the
    first channel in grey."""
    rows = [(label, _tiles(imgs)) for label, imgs in rows]
    colour = any(r[1].ndim == 4 for r in rows)
    h, w = rows[0][1].shape[1:3]
    n = max(r[1].shape[0] for r in rows)
    cell_h, cell_w = h * scale + 2, w * scale + 2
    top = 14 if col_labels else 0
    canvas = Image.new("RGB" if colour else "L", (label_width + n * cell_w, top + len(rows) * cell_h),
                       (255, 255, 255) if colour else 255)
    ink = (0, 0, 0) if colour else 0
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if col_labels:
        for j, lab in enumerate(col_labels):
            draw.text((label_width + j * cell_w + 2, 1), lab, fill=ink, font=font)
    for i, (label, imgs) in enumerate(rows):
        y = top + i * cell_h
        draw.text((4, y + cell_h // 2 - 6), label, fill=ink, font=font)
        for j, im in enumerate(imgs):
            tile = Image.fromarray(im).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile.convert(canvas.mode), (label_width + j * cell_w + 1, y + 1))
    canvas.save(path)
