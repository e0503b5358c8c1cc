"""``diffscm localize``: healthy counterfactuals and anomaly maps of your images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import check_out, load_scm
from .app import app


@app.command()
def localize(
    model: str = typer.Option(..., help="SCM folder (or shipped name, e.g. lesion-mnist) with a conditional ε-model and/or a predictor."),
    input: Path = typer.Option(..., "--input", help="An image (PNG/NPY/NPZ, C×H×W or H×W) or a folder of them."),
    out: Path = typer.Option(..., help="Output folder: per image NAME_cf.png, NAME_map.png (heat overlay), NAME_map.npy; localize.json."),
    target: str = typer.Option("healthy", help="Counterfactual class: healthy (= 0) or a class index."),
    cfg_scale: Optional[float] = typer.Option(None, help="Classifier-free guidance weight w (default: the model's)."),
    scale: Optional[float] = typer.Option(None, help="Anti-causal classifier guidance scale (default: the model's)."),
    steps: Optional[int] = typer.Option(None, help="DDIM grid size N."),
    ratio: Optional[float] = typer.Option(None, help="Sampling progression ratio L."),
    dynamic_norm: Optional[bool] = typer.Option(None, "--dynamic-norm/--no-dynamic-norm", help="Dynamic normalisation of x0-hat."),
    reduce: str = typer.Option("mean", help="Channel reduction of |x - x_cf|: mean or max."),
    sigma: float = typer.Option(0.0, min=0.0, help="Gaussian smoothing of the map (pixels)."),
    mask: Optional[Path] = typer.Option(None, help="Foreground mask (one file for all, or a folder with NAME.png/.npy)."),
    batch_size: Optional[int] = typer.Option(None, min=1),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
    device: str = typer.Option("auto"), quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Weakly supervised localisation: the healthy counterfactual of each image and its anomaly map |x - x_cf|."""
    from ._localize import collect_inputs, parse_target, run_localize

    check_out(out, overwrite)
    inputs = collect_inputs(input)
    scm = load_scm(model, device)
    mech = scm.image_mechanism
    name = mech.condition or next(iter(mech.predictors), None)
    if name is None:
        raise DiffSCMError(f"model {model} has neither a conditional diffusion model nor a predictor")
    k = parse_target(target, scm.graph.variables[name].num_classes)
    overrides = {"steps": steps, "ratio": ratio, "cfg_scale": cfg_scale, "dynamic_norm": dynamic_norm,
                 "batch_size": batch_size}
    opts = scm.options(**overrides)
    if scale is not None:
        opts.scales = {name: float(scale)}
    mech.grid(opts)
    records = run_localize(scm, inputs, k, opts, out, reduce, sigma, mask, progress=not quiet)
    typer.echo(f"{out} ({len(records)} images)")
