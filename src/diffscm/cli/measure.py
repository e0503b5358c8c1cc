"""``diffscm measure``: Morpho-MNIST morphometrics of images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from .app import app


@app.command()
def measure(images: Path = typer.Argument(..., help="uint8 N×H×W images (.npy)."),
            out: Path = typer.Option(..., help="CSV: index,thickness,intensity,slant,width,height,length,area."),
            workers: Optional[int] = typer.Option(None, min=1, help="Processes (default: all cores)."),
            overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Morpho-MNIST morphometrics of every image (our scikit-image/scipy re-implementation)."""
    import numpy as np

    from ..data.morphomnist import METRIC_COLUMNS, measure_batch

    if not images.exists():
        raise DiffSCMError(f"{images} does not exist")
    if out.exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    try:
        arr = np.load(images, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DiffSCMError(f"{images} is not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DiffSCMError(f"{images} must hold N×H×W images, got shape {arr.shape}")
    if not np.isfinite(arr.astype(np.float64)).all():
        raise DiffSCMError(f"{images} contains NaN or infinite values")
    values = measure_batch(arr, workers=workers, progress=True)
    lines = ["index," + ",".join(METRIC_COLUMNS)]
    lines += [f"{k}," + ",".join(f"{v:.6g}" for v in row) for k, row in enumerate(values)]
    from ..files import write_text_atomic

    write_text_atomic(out, "\n".join(lines) + "\n")
    typer.echo(str(out))
