"""``diffscm fit``: a whole SCM from a graph file and a dataset folder, in one command."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import check_out
from .app import app


@app.command()
def fit(graph: Path = typer.Argument(..., help="Graph file (YAML/JSON): variables, kinds, supports, parents; optional `mechanism: paper`."),
        data_dir: Path = typer.Option(..., help="Dataset folder: images/, labels.csv (file, one column per variable, optional split), optional dataset.json."),
        out: Path = typer.Option(..., help="SCM folder to write (the parts train in OUT.parts, or --work)."),
        budget: str = typer.Option("standard", help="quick, standard or full: the steps of every model (see the model card)."),
        mechanism: Optional[str] = typer.Option(None, help="conditional (parent-conditioned ε-model) or paper (unconditional ε-model with anti-causal predictors); default: the graph's, else conditional."),
        work: Optional[Path] = typer.Option(None, help="Folder of the trained parts and their checkpoints (default OUT.parts)."),
        resume: bool = typer.Option(False, help="Continue an interrupted fit: finished parts are skipped, the others resume from their checkpoints."),
        overwrite: bool = typer.Option(False, help="Replace an existing OUT."),
        steps_scale: float = typer.Option(1.0, min=1e-6, help="Multiply every part's steps (e.g. 0.01 for a smoke test)."),
        batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size of every image model (default 128)."),
        balance: Optional[float] = typer.Option(None, help="Power in [0, 1] of the image model's balancing weights, which draw rare combinations of its parents more often (0: uniform batches; default 0.5 where an image parent causes another, else 0)."),
        seed: int = typer.Option(0, min=0, max=2**31 - 1),
        save_every: int = typer.Option(200, min=1, help="Checkpoint every this many steps."),
        device: str = typer.Option("auto"),
        quiet: bool = typer.Option(False, help="No progress display.")):
    """Fit every mechanism of an SCM (image mechanism, predictors, flows) and its evaluation models (oracles, CLD's
    VAE), pack them with a model card, then choose the guidance defaults on the `val` rows with selection models
    (not the oracles). Data-parallel under `torchrun` or `accelerate launch`."""
    from ..device import pick_device
    from ..distributed import topology
    from ..eval.tune import tune_fitted
    from ..scm.graph import CausalGraph
    from ..train.fit import fit_scm, work_dir

    check_out(out, True)   # an existing OUT is fit_scm's to judge (--overwrite or --resume)
    g = CausalGraph.from_file(graph)
    fit_scm(g, data_dir, out, budget=budget, mechanism=mechanism, work=work, resume=resume, overwrite=overwrite,
            device=device, steps_scale=steps_scale, batch_size=batch_size, balance=balance, seed=seed, save_every=save_every,
            progress=not quiet, log=lambda s: typer.echo(s, err=True))
    if topology().is_main:
        tune_fitted(out, data_dir, work_dir(out, work), log=lambda s: typer.echo(s, err=True),
                    device=str(pick_device(device)))
