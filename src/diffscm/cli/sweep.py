"""``diffscm sweep``: one setting swept on validation images."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import cfg_weights_for, prepare_evaluation
from .app import app


@app.command()
def sweep(
    param: str = typer.Option("scale", help="Parameter to sweep: scale, steps, ratio, w or inversion_iters."),
    values: str = typer.Option("0,0.5,1,2,4,8", help="Comma-separated values."),
    model: str = typer.Option("mnist"), n: int = typer.Option(200, min=2), seed: int = typer.Option(0, min=0, max=2**31 - 1),
    split: str = typer.Option("valid", help="valid (choose settings here) or test."),
    steps: Optional[int] = typer.Option(None, help="DDIM grid size N (unless swept)."),
    ratio: Optional[float] = typer.Option(None, help="Ratio L (unless swept)."),
    scale: Optional[float] = typer.Option(None, help="Guidance scale s (unless swept)."),
    dynamic_norm: Optional[bool] = typer.Option(None, "--dynamic-norm/--no-dynamic-norm"),
    mechanism: Optional[str] = typer.Option(None, help="diffscm: image mechanism, paper or conditional."),
    inversion: Optional[str] = typer.Option(None, help="diffscm: abduction, ddim, fixed-point, exact or bdia."),
    inversion_iters: Optional[int] = typer.Option(None, min=0, max=100, help="diffscm: fixed-point iterations per step."),
    w: Optional[float] = typer.Option(None, "--w", help="diffscm: classifier-free weight of every parent (conditional mechanism; 1 = none)."),
    guidance: Optional[str] = typer.Option(None, help="diffscm: where the weights and scales act, all, intervened or changed."),
    judge: str = typer.Option("selection", help="Who scores: selection (a classifier apart from the evaluation oracle) or oracle."),
    batch_size: Optional[int] = typer.Option(None, min=1),
    json_out: Optional[Path] = typer.Option(None, "--json"), report: Optional[Path] = typer.Option(None),
    cache: Optional[Path] = typer.Option(None), no_cache: bool = typer.Option(False, "--no-cache"),
    n_boot: int = typer.Option(1000, min=10), data_dir: Optional[Path] = typer.Option(None),
    fid_reference: int = typer.Option(10000, min=2, help="Held-out valid images whose features are KID/FID's real set."),
    overwrite: bool = typer.Option(False), device: str = typer.Option("auto"), quiet: bool = typer.Option(False),
):
    """CLD, effectiveness and realism of Diff-SCM counterfactuals against one inference parameter, with plots and a
    grid; judged by a selection classifier that is not the evaluation oracle (``--judge``)."""
    from ..eval.protocols.mnist import JUDGES, SWEEP_PARAMS, default_cache, run_sweep
    from ._common import parse_list

    vals = parse_list(values, "--values", float)
    if param not in SWEEP_PARAMS:
        raise DiffSCMError(f"--param {param!r}: choose {', '.join(SWEEP_PARAMS)}")
    if judge not in JUDGES:
        raise DiffSCMError(f"--judge {judge!r}: use {' or '.join(JUDGES)}")
    integer = param in ("steps", "inversion_iters")
    if integer and any(v != int(v) or v < (param == "steps") for v in vals):
        raise DiffSCMError(f"--values {values!r}: {param} must be {'positive' if param == 'steps' else 'non-negative'} integers")
    scm, overrides = prepare_evaluation(split, json_out, report, overwrite, model, device,
                                         {"steps": steps, "ratio": ratio, "scale": scale, "dynamic_norm": dynamic_norm,
                                          "batch_size": batch_size, "mechanism": mechanism, "inversion": inversion,
                                          "inversion_iters": inversion_iters, "guidance": guidance}, w)
    for v in vals:  # validate every value before any work
        if param == "w":
            cfg_weights_for(scm, v)
        else:
            opts = scm.options(**{**overrides, param: int(v) if integer else v})
            scm.image_mechanism.grid(opts)
            scm.image_mechanism.mechanism(opts)
    results = run_sweep(scm, param, vals, overrides, n, seed, split, json_out, report,
                        None if no_cache else (cache or default_cache()), data_dir, progress=not quiet, n_boot=n_boot,
                        fid_reference=fid_reference, judge=judge)
    for r in results:
        typer.echo(json.dumps({param: r["value"], **{k: round(v["mean"], 4) for k, v in r["metrics"].items()}}))
