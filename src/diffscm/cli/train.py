"""``diffscm train``: one model of an SCM (resumable checkpoints)."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import parse_where
from .app import app


class TrainWhat(str, Enum):
    diffusion = "diffusion"
    predictor = "predictor"
    oracle = "oracle"
    vae = "vae"
    cvae = "cvae"
    autoencoder = "autoencoder"
    classifier = "classifier"
    flow = "flow"
    judge = "judge"


@app.command()
def train(what: TrainWhat = typer.Argument(..., help="diffusion, predictor, oracle, flow; evaluation/baselines: vae (CLD), cvae, autoencoder, classifier; judge (the counterfactual benchmark's Morpho-MNIST judges)"),
          dataset: str = typer.Option("mnist", help="Dataset: mnist, morphomnist or folder (a generic dataset folder, --data-dir)."),
          out: Path = typer.Option(..., help="Checkpoint folder (config.json + model.safetensors)."),
          steps: int = typer.Option(10000, min=1), batch_size: int = typer.Option(64, min=1),
          lr: float = typer.Option(2e-4, min=0.0), seed: int = typer.Option(0, min=0, max=2**31 - 1),
          resume: bool = typer.Option(False, help="Continue the checkpoint in --out."),
          split: str = typer.Option("train", help="Training split: train or train+valid (MNIST: 50k, valid = the other 10k; Morpho-MNIST: all but the last 2000 images, which valid holds)."),
          data_dir: Optional[Path] = typer.Option(None, help="mnist: IDX folder instead of the package index; morphomnist: a folder written by `diffscm data morphomnist --out` or in Morpho-MNIST's own layout (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, t10k-morpho.csv, train-… likewise; required)."),
          target: Optional[str] = typer.Option(None, help="predictor/oracle/flow: the variable to model (digit, thickness, intensity; folder: a class column, default dataset.json's label)."),
          where: list[str] = typer.Option([], help="folder: train only on rows with COLUMN=VALUE (e.g. lesion=0 for healthy-only); repeatable."),
          init: Optional[Path] = typer.Option(None, help="Start from this checkpoint's weights (tensors of matching shape)."),
          schedule: str = typer.Option("linear", help="Noise schedule of a new diffusion model: linear or cosine."),
          conditional: bool = typer.Option(False, help="Diffusion: conditioned on every parent of the image (mnist, morphomnist) or on the class column (folder), each with its own null token."),
          p_uncond: float = typer.Option(0.35, "--cond-dropout", "--p-uncond", min=0.0, max=1.0, help="Diffusion: probability of dropping each parent (or the label) to ∅."),
          p_all: float = typer.Option(0.0, "--cond-dropout-all", min=0.0, max=1.0, help="Diffusion: probability of dropping all parents at once (the unconditional model)."),
          min_snr_gamma: float = typer.Option(0.0, "--min-snr-gamma", min=0.0, help="Diffusion: min-SNR-γ loss weighting (5 is the usual choice; 0 = plain MSE)."),
          dropout: float = typer.Option(0.0, min=0.0, max=0.9, help="Diffusion: dropout in the UNet's residual blocks."),
          channels: Optional[str] = typer.Option(None, help="Diffusion: UNet block widths, e.g. 32,64,64; predictor: its block widths (default: the built-in architectures)."),
          lr_schedule: str = typer.Option("constant", help="Learning rate after the warm-up: constant or cosine (decays to 5%)."),
          warmup: int = typer.Option(200, min=0, help="Linear warm-up steps."),
          diffusion: Optional[Path] = typer.Option(None, help="Predictor: the diffusion checkpoint whose schedule it learns."),
          ema_decay: str = typer.Option("0.999", help="Diffusion: EMA decay of the sampling weights, or auto (matched to --steps: 1 − 10/steps within [0.99, 0.9999])."),
          latent: int = typer.Option(16, min=1, help="VAE/cVAE/autoencoder: latent dimension."),
          save_every: int = typer.Option(250, min=1), device: str = typer.Option("auto"),
          mixed_precision: str = typer.Option("no", help="bf16: the loss under bf16 autocast (GPUs, or CPUs with native bf16; weights stay float32)."),
          quiet: bool = typer.Option(False, help="No progress bar.")):
    """Train a model with resumable, atomic checkpoints. Data-parallel over several processes or GPUs when started
    with `torchrun --nproc_per_node K -m diffscm.cli train …` or `accelerate launch -m diffscm.cli train …`."""
    import torch

    from ..train import loop as tr
    from ..distributed import device_for, topology
    from ..train.plan import DiffusionRecipe, setup_training

    if mixed_precision not in ("no", "bf16"):
        raise DiffSCMError(f"--mixed-precision {mixed_precision!r}: use no or bf16")
    if lr_schedule not in ("constant", "cosine"):
        raise DiffSCMError(f"--lr-schedule {lr_schedule!r}: use constant or cosine")
    try:
        ema = tr.auto_ema_decay(steps) if ema_decay == "auto" else float(ema_decay)
        widths = tuple(int(c) for c in channels.split(",")) if channels else None
    except ValueError:
        raise DiffSCMError(f"--ema-decay {ema_decay!r} / --channels {channels!r}: expected a number or auto / "
                           "comma-separated integers") from None
    if not 0.0 <= ema < 1.0:
        raise DiffSCMError(f"--ema-decay must lie in [0, 1), got {ema_decay}")
    recipe = DiffusionRecipe(schedule=schedule, conditional=conditional, p_uncond=p_uncond, p_all=p_all,
                             min_snr_gamma=min_snr_gamma, dropout=dropout, channels=widths)
    top = topology()
    dev = device_for(top, device)
    torch.manual_seed(seed)
    job = setup_training(what.value, dataset, split=split, data_dir=data_dir, target=target, diffusion=diffusion,
                         latent=latent, where=parse_where(where), recipe=recipe)
    if init is not None and not (resume and (out / tr.STATE_JSON).exists()):
        job.extra["init"] = tr.load_init(job.model, init)   # a resumed run continues its own weights instead
    cfg = tr.TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, save_every=save_every, warmup=warmup,
                         lr_schedule=lr_schedule, ema_decay=ema if what == TrainWhat.diffusion else 0.0)
    extra = {**job.extra, "command": " ".join(["diffscm", *sys.argv[1:]]), "device": str(dev),
             "torch_threads": torch.get_num_threads(), "processes": top.world}
    tr.fit(job.model, job.loss, job.inputs, job.labels, cfg, out, resume=resume, device=dev, extra_config=extra,
           log=lambda s: typer.echo(s, err=True), quiet=quiet, top=top, mixed_precision=mixed_precision)
    if top.is_main:
        typer.echo(str(out))
