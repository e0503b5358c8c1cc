"""``diffscm explore``: counterfactuals in the browser, with an HTTP API."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import load_scm
from .app import app


@app.command()
def explore(
    model: str = typer.Option("mnist", help="Shipped model name (mnist, morphomnist, lesion-mnist) or an SCM folder."),
    data_dir: Optional[Path] = typer.Option(None, help="A dataset folder (images/, labels.csv) or a Morpho-MNIST folder to take the test images from; the shipped models have built-in ones."),
    split: str = typer.Option("test", help="Split to take the images from."),
    n_images: int = typer.Option(64, min=1, max=1000, help="How many images of the split the page offers."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0 picks a free one)."),
    max_steps: int = typer.Option(250, min=1, max=1000, help="Largest DDIM grid a client may ask for."),
    device: str = typer.Option("auto"),
):
    """Open a page to pick or upload an image, set do() on its parents with dropdowns and sliders, and see the
    counterfactual beside the factual (JSON API under /api/). The abducted latent is cached per image and settings,
    so moving a slider costs one decoding."""
    import socket

    from ..service.explorer import Explorer

    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"note: serving on {host}: anyone who can reach this address can use the model", err=True)
    try:   # a taken port is a one-line error before the model loads
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn binds: a just-closed port is free
            s.bind((host, port))
            port = s.getsockname()[1]
    except OSError as exc:
        raise DiffSCMError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    explorer = Explorer(load_scm(model, device), data_dir=data_dir, split=split, n_images=n_images,
                        max_steps=max_steps)
    import time

    from ..service.server import running

    try:
        with running(explorer, host, port) as url:
            typer.echo(f"diffscm explorer on {url}/  (Ctrl-C stops it)")
            while True:
                time.sleep(3600)
    finally:
        explorer.close()
