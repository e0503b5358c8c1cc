"""Labelled image grids (Pillow only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def save_grid(rows: list[tuple[str, np.ndarray]], path: str | Path, scale: int = 2, label_width: int = 90,
              col_labels: list[str] | None = None) -> None:
    """Write a PNG with one labelled row per (label, uint8 N×H×W) entry."""
    h, w = rows[0][1].shape[1:3]
    n = max(r[1].shape[0] for r in rows)
    cell_h, cell_w = h * scale + 2, w * scale + 2
    top = 14 if col_labels else 0
    canvas = Image.new("L", (label_width + n * cell_w, top + len(rows) * cell_h), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if col_labels:
        for j, lab in enumerate(col_labels):
            draw.text((label_width + j * cell_w + 2, 1), lab, fill=0, font=font)
    for i, (label, imgs) in enumerate(rows):
        y = top + i * cell_h
        draw.text((4, y + cell_h // 2 - 6), label, fill=0, font=font)
        for j, im in enumerate(imgs):
            tile = Image.fromarray(np.asarray(im, dtype=np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_width + j * cell_w + 1, y + 1))
    canvas.save(path)
