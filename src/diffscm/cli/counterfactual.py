"""``diffscm counterfactual`` and ``diffscm demo``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import check_out, is_main, load_scm
from .app import app


@app.command()
def counterfactual(
    model: str = typer.Option("mnist", help="Shipped model name (mnist) or an SCM folder."),
    do: list[str] = typer.Option([], "--do", help="Intervention NAME=VALUE (repeatable); digit=random picks a new digit."),
    do_file: Optional[Path] = typer.Option(None, "--do-file", help="Per-image interventions: a CSV with an index (or file) column and one column per intervened variable; an empty cell leaves that variable alone."),
    null: bool = typer.Option(False, "--null", help="The null intervention: abduct, then predict under the factual values."),
    out: Path = typer.Option(..., help="Output folder: grid.png, counterfactuals.npz, values.csv, options.json."),
    split: str = typer.Option("test", help="Split to take factual images from (train, valid, test)."),
    index: Optional[str] = typer.Option(None, help="Images of the split: START:STOP, I or I,J,K (default 0:16)."),
    image: list[Path] = typer.Option([], "--image", help="Your own image file(s) instead of a split (PNG/JPEG/NPY)."),
    observed: list[str] = typer.Option([], "--observed", help="Factual values of your images, e.g. digit=3."),
    mechanism: Optional[str] = typer.Option(None, help="Image mechanism: paper (unconditional ε + anti-causal guidance) or conditional (parent-conditioned ε)."),
    inversion: Optional[str] = typer.Option(None, help="Abduction: ddim (explicit), fixed-point, exact (fixed-point + stored residuals; the null intervention returns the image) or bdia."),
    inversion_iters: Optional[int] = typer.Option(None, min=0, max=100, help="Fixed-point iterations per step (fixed-point, exact; bdia: of its first step)."),
    abduction: Optional[str] = typer.Option(None, help="factual (invert the decoding ε under the factual parents) or null (the unconditional ε)."),
    guidance: Optional[str] = typer.Option(None, help="Where the weights and scales act: all (every sample; abduction inverts the guided ε) intervened (only the parents whose value changes; abduction unguided) or changed (every parent, on the samples where any parent changes; abduction unguided)."),
    steps: Optional[int] = typer.Option(None, help="DDIM grid size N over [0, T)."),
    ratio: Optional[float] = typer.Option(None, help="Sampling progression ratio L: use the first floor(L*N) steps."),
    scale: list[str] = typer.Option([], "--scale", help="Guidance scale: S (every anti-causal predictor) or NAME=S (one parent; repeatable)."),
    w: list[str] = typer.Option([], "--w", help="Classifier-free weight of the conditional mechanism: W (every parent) or NAME=W; 1 = none."),
    eta: Optional[float] = typer.Option(None, help="DDIM eta of the prediction step (0 = deterministic)."),
    clip: Optional[bool] = typer.Option(None, "--clip/--no-clip", help="Clamp x0-hat to [-1, 1] while decoding."),
    dynamic_norm: Optional[bool] = typer.Option(None, "--dynamic-norm/--no-dynamic-norm", help="Dynamic normalisation of x0-hat."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1), batch_size: Optional[int] = typer.Option(None, min=1),
    data_dir: Optional[Path] = typer.Option(None, help="mnist: IDX folder instead of the package index; morphomnist: a folder written by `diffscm data morphomnist --out` or in Morpho-MNIST's own layout (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, t10k-morpho.csv)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
    device: str = typer.Option("auto"), quiet: bool = typer.Option(False, help="No progress bar."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the networks first (pays off on large runs; not bit-exact)."),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no, or bf16 / fp16 autocast of the networks (faster on GPUs; the null intervention is then exact only to that precision)."),
):
    """Counterfactual images: abduct (invert the image), act (do), predict (decode under the new parents). Several
    processes (`torchrun --nproc_per_node K -m diffscm.cli counterfactual …`) share the batches; the output is the same."""
    from ..service.factuals import load_factuals
    from ._counterfactual import parse_assignments, parse_scales, parse_weights, read_do_file, run_counterfactual

    if sum([bool(do), do_file is not None, null]) != 1:
        raise DiffSCMError("give exactly one of --do, --do-file or --null")
    if mixed_precision not in ("no", "bf16", "fp16"):
        raise DiffSCMError(f"--mixed-precision {mixed_precision!r}: use no, bf16 or fp16")
    do_spec = parse_assignments(do, "--do")
    obs_spec = parse_assignments(observed, "--observed")
    check_out(out, overwrite)
    scm = load_scm(model, device)
    if compile:
        scm.compile()
    opts = scm.options(steps=steps, ratio=ratio, scales=parse_scales(scm, scale), eta=eta, clip=clip,
                       dynamic_norm=dynamic_norm, seed=seed, batch_size=batch_size, mechanism=mechanism,
                       inversion=inversion, inversion_iters=inversion_iters, cfg_weights=parse_weights(scm, w),
                       abduction=abduction, guidance=guidance)
    scm.image_mechanism.grid(opts)  # validates steps/ratio before any work
    scm.image_mechanism.mechanism(opts)
    per_image = None
    if do_file is not None:
        if index is not None:
            raise DiffSCMError("--do-file lists the images to process: drop --index")
        rows, per_image = read_do_file(scm, do_file, image)
        if image:
            image = [image[i] for i in rows]
        else:
            index = rows
    notes: list[str] = []
    x_u8, observed_values, idx = load_factuals(scm, split, index, image, obs_spec, data_dir, notes)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    import contextlib

    import torch

    ctx = contextlib.nullcontext() if mixed_precision == "no" else \
        torch.autocast(scm.device.type, dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)
    with ctx:
        summary = run_counterfactual(scm, x_u8, observed_values, do_spec, opts, out, progress=not quiet,
                                     per_image=per_image, names=[str(p) for p in image] or None, index=idx)
    if is_main():
        typer.echo(json.dumps({"out": str(out), **summary}))


@app.command()
def demo(out: Path = typer.Option(Path("outputs/demo"), help="Output folder."),
         n: int = typer.Option(8, min=1, max=64, help="Number of test images."),
         model: str = typer.Option("mnist"), seed: int = typer.Option(0, min=0, max=2**31 - 1), device: str = typer.Option("auto"),
         overwrite: bool = typer.Option(False, help="Replace a non-empty --out."), quiet: bool = typer.Option(False),
         data_dir: Optional[Path] = typer.Option(None, help="IDX folder instead of the package index.")):
    """do(digit = k) for every k on real test digits with the shipped checkpoints; grid + .npz + summary."""
    from ._counterfactual import run_demo

    check_out(out, overwrite)
    scm = load_scm(model, device)
    opts = scm.options(seed=seed)
    summary = run_demo(scm, n, opts, out, data_dir=data_dir, progress=not quiet)
    typer.echo(f"wrote {out}/grid.png and {out}/counterfactuals.npz")
    for k, v in summary.items():
        typer.echo(f"  {k}: {v}")
