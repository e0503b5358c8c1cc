"""Training loops for the diffusion model, the noise-aware predictor and the oracle.

One loop (:func:`fit`) owns batching, AdamW, EMA, logging, progress and resumable, atomic checkpoints;
each model kind contributes only its loss. A checkpoint folder holds the shippable weights
(``config.json`` + ``model.safetensors``; the EMA copy for the diffusion model) and the resume state
(``trainer_state.safetensors`` + ``trainer_state.json``: raw weights, optimiser moments, RNG, step).
"""
from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from ..distributed import Topology, block, gather_rows
from ..errors import DiffSCMError
from ..models import DiffusionModel, NoiseAwarePredictor, Oracle
from ..models.base import Pretrained
from ..files import atomic_write_dir
from ..models.io import CONFIG_NAME, WEIGHTS_NAME, load_config

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


@dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 200
    seed: int = 0
    ema_decay: float = 0.0  # 0 disables EMA
    save_every: int = 500
    log_every: int = 50
    grad_clip: float = 1.0
    lr_schedule: str = "constant"   # or "cosine": decay to min_lr_ratio·lr after the warm-up
    min_lr_ratio: float = 0.05

    def lr_at(self, step: int) -> float:
        """Learning rate of the step after ``step`` completed steps: linear warm-up, then constant or cosine decay."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.lr_schedule == "cosine":
            frac = min(1.0, (step - self.warmup) / max(self.steps - self.warmup, 1))
            return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        return self.lr


def auto_ema_decay(steps: int) -> float:
    """EMA decay matched to the run length: an averaging window of about a tenth of the run, within [0.99, 0.9999]."""
    return min(0.9999, max(0.99, 1.0 - 10.0 / steps))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for name, v in meta["scalars"].items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class _LossModule(torch.nn.Module):
    """The model plus its loss as one module, so DistributedDataParallel sees the whole loss computation in forward."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.loss_fn(x, y, gen)


def fit(model: Pretrained, loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
        images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, out: str | Path, *,
        resume: bool = False, device: torch.device = torch.device("cpu"), extra_config: dict | None = None,
        log: Callable[[str], None] = print, quiet: bool = False, top: Topology | None = None,
        mixed_precision: str = "no", on_step: Callable[[int], None] | None = None,
        sample_weights: torch.Tensor | None = None) -> dict:
    """Train ``model`` on (images, labels) with ``loss_fn(x, y, generator)``; checkpoint to ``out``; return the final log.

    Several processes (``top``; launched by ``torchrun`` or ``accelerate launch``) train data-parallel: the model is
    wrapped by accelerate in DistributedDataParallel, every rank draws the same global batch of ``cfg.batch_size``
    indices and takes its contiguous share, gradients are averaged, and rank 0 alone writes checkpoints.
    ``mixed_precision="bf16"`` runs the loss under bf16 autocast (weights and optimiser stay float32).
    ``on_step(step)`` is called after every step (a caller's own progress display). ``sample_weights`` (one per
    image) draws each batch's indices with replacement in proportion to them, instead of uniformly.
    """
    out = Path(out)
    top = top or Topology()
    if mixed_precision not in ("no", "bf16"):
        raise DiffSCMError(f"mixed precision {mixed_precision!r}: use no or bf16")
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise DiffSCMError(f"learning-rate schedule {cfg.lr_schedule!r}: use constant or cosine")
    if cfg.batch_size % top.world:
        raise DiffSCMError(f"batch size {cfg.batch_size} does not split evenly over {top.world} processes")
    n = images.shape[0]
    if sample_weights is not None and (sample_weights.shape != (n,) or not bool((sample_weights >= 0).all())
                                       or not float(sample_weights.sum()) > 0):
        raise DiffSCMError(f"sample weights must be {n} non-negative values with a positive sum")
    model.to(device).train()
    net: torch.nn.Module = _LossModule(model, loss_fn)
    if top.distributed:
        from accelerate import Accelerator

        net = Accelerator(cpu=device.type == "cpu").prepare_model(net)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(cfg.seed)                       # global batch indices: same on every rank
    dev_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 1_000_003 * top.rank)  # per-rank noise
    share = block(cfg.batch_size, top)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")
    if mixed_precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16() and top.is_main:
        log("warning: this CPU has no native bf16 instructions (AVX512-BF16 or AMX); bf16 autocast is emulated and "
            "runs many times slower than float32: use --mixed-precision no")
    step, history, segments = 0, [], []
    if resume and (out / STATE_JSON).exists():
        meta = json.loads((out / STATE_JSON).read_text())
        if meta["config"] != model.config:
            raise DiffSCMError(f"cannot resume {out}: it was trained with another model config")
        tensors = load_file(str(out / STATE_TENSORS))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _unflatten_optimizer(opt, {k: v.to(device) for k, v in tensors.items()}, meta["optimizer"])
        gen.set_state(tensors["rng.cpu"])
        dev_key = "rng.dev" if top.rank == 0 else f"rng.dev.{top.rank}"
        if device.type == "cpu" and dev_key in tensors and meta.get("world", 1) == top.world:
            dev_gen.set_state(tensors[dev_key])
        step, history = meta["step"], meta["history"]
        if meta.get("world", 1) != top.world:
            log(f"note: {out} was trained with {meta.get('world', 1)} process(es), resuming with {top.world}: "
                "the per-rank noise streams restart")
        segments = meta.get("segments") or [{"command": load_config(out).get("meta", {}).get("command"),
                                             "start_step": 0, "end_step": step}]
        log(f"resumed {out} at step {step}")
    elif resume:
        log(f"nothing to resume in {out}; starting fresh")
    elif (out / CONFIG_NAME).exists():
        raise DiffSCMError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")

    images, labels = images.to(device), labels.to(device)
    segments.append({"command": (extra_config or {}).get("command"), "start_step": step, "end_step": step,
                     "device": str(device), "torch_threads": torch.get_num_threads(), "processes": top.world,
                     "mixed_precision": mixed_precision, "started": time.strftime("%Y-%m-%d %H:%M")})

    def save() -> None:
        dev_states = None
        if top.distributed and device.type == "cpu":  # every rank's noise stream, for an exact resume (collective)
            dev_states = gather_rows(dev_gen.get_state()[None], top)
        if not top.is_main:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        opt_t, opt_meta = _flatten_optimizer(opt)
        tensors.update(opt_t)
        tensors["rng.cpu"] = gen.get_state()
        tensors["rng.dev"] = dev_gen.get_state().cpu() if device.type == "cpu" else gen.get_state()
        for r in range(1, top.world if dev_states is not None else 1):
            tensors[f"rng.dev.{r}"] = dev_states[r].cpu()
        shipped = (ema if ema is not None else model).state_dict()
        config = {"kind": model.kind, **model.config, "meta": {"train": asdict(cfg), "step": step, **(extra_config or {})}}
        segments[-1]["end_step"] = step
        meta = {"step": step, "history": history, "config": model.config, "optimizer": opt_meta, "train": asdict(cfg),
                "segments": segments, "world": top.world}

        def write(tmp: Path) -> None:
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            save_file({k: v.detach().contiguous().cpu() for k, v in shipped.items()}, str(tmp / WEIGHTS_NAME))
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")

        atomic_write_dir(out, write)

    t0, running, seen = time.time(), 0.0, 0
    t_log = time.perf_counter()
    # SIGINT/SIGTERM in a single process: finish the step, checkpoint it, then stop with a one-line error.
    # (Several processes checkpoint collectively, so there a signal keeps its usual meaning.)
    stop: list[str] = []
    handlers = {}
    if not top.distributed and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda signum, frame: stop.append(signal.Signals(signum).name))
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                      disable=quiet or not top.is_main) as bar:
            task = bar.add_task(f"train {model.kind}", total=cfg.steps, completed=step, loss=float("nan"))
            while step < cfg.steps:
                idx = (torch.randint(n, (cfg.batch_size,), generator=gen) if sample_weights is None else
                       torch.multinomial(sample_weights, cfg.batch_size, replacement=True, generator=gen))
                idx = idx[share.start:share.stop].to(device)
                lr = cfg.lr_at(step)
                for g in opt.param_groups:
                    g["lr"] = lr
                with autocast:
                    loss = net(images[idx], labels[idx], dev_gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                if ema is not None:
                    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                    with torch.no_grad():
                        for pe, pm in zip(ema.parameters(), model.parameters()):
                            pe.lerp_(pm, 1 - decay)
                        for be, bm in zip(ema.buffers(), model.buffers()):
                            be.copy_(bm)
                running += loss.item()
                seen += 1
                bar.update(task, completed=step, loss=loss.item())
                if on_step is not None:
                    on_step(step)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    mean_loss = running / seen
                    if top.distributed:
                        buf = torch.tensor([mean_loss], dtype=torch.float64, device=device)
                        torch.distributed.all_reduce(buf)
                        mean_loss = float(buf) / top.world
                    now = time.perf_counter()
                    rec = {"step": step, "loss": mean_loss, "lr": lr, "elapsed_s": round(time.time() - t0, 1),
                           "images_per_s": round(seen * cfg.batch_size / (now - t_log), 1)}
                    t_log = now
                    history.append(rec)
                    if top.is_main:
                        log(json.dumps(rec))
                    running, seen = 0.0, 0
                if step % cfg.save_every == 0 or step == cfg.steps or stop:
                    save()
                if stop:
                    raise DiffSCMError(f"stopped by {stop[0]} at step {step} of {cfg.steps}; the checkpoint in {out} "
                                       "continues with --resume")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return history[-1] if history else {}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AVX512-BF16 or AMX). On Linux the CPU flags decide: oneDNN
    also reports bf16 support on AVX-512 CPUs without them, where bf16 is emulated and slower than float32.
    Elsewhere, oneDNN's answer (False where torch cannot tell)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = None
    if flags is not None and "flags" in flags:
        return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def drop_parents(y: torch.Tensor, p: float, p_all: float, gen: torch.Generator) -> torch.Tensor:
    """Null-token dropout of (N, P) parent values: each parent independently set to ∅ (NaN) with probability ``p``,
    and all of a sample's parents at once with probability ``p_all``."""
    drop = torch.rand(y.shape, device=y.device, generator=gen) < p
    drop |= (torch.rand(y.shape[0], device=y.device, generator=gen) < p_all)[:, None]
    return y.float().masked_fill(drop, float("nan"))


def diffusion_loss(model: DiffusionModel, p_uncond: float = 0.0, min_snr_gamma: float = 0.0, p_all: float = 0.0):
    """ε-prediction MSE on q(x_t | x_0), t ~ U{0..T-1}.

    A class-conditional model's label is dropped to ∅ with probability ``p_uncond``; a parent-conditioned model's
    parents (``y`` of shape (N, P)) each with ``p_uncond``, and all at once with ``p_all``. ``min_snr_gamma`` > 0
    weights each sample by min(SNR_t, γ)/SNR_t (Hang et al. 2023, for ε-prediction).
    """
    def loss(x0, y, gen):
        T = model.config["num_train_timesteps"]
        t = torch.randint(T, (x0.shape[0],), device=x0.device, generator=gen)
        eps = torch.randn(x0.shape, device=x0.device, generator=gen)
        a = model.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        cond = None
        if model.parent_names:
            cond = drop_parents(y.view(y.shape[0], -1), p_uncond, p_all, gen)
        elif model.num_classes:
            drop = torch.rand(x0.shape[0], device=x0.device, generator=gen) < p_uncond
            cond = torch.where(drop, torch.full_like(y, model.null_label), y)
        err = (model(xt, t, cond).float() - eps).pow(2).flatten(1).mean(1)
        if min_snr_gamma > 0:
            snr = model.alphas_cumprod[t] / (1 - model.alphas_cumprod[t])
            err = err * snr.clamp(max=min_snr_gamma) / snr
        return err.mean()
    return loss


def predictor_loss(model: NoiseAwarePredictor, alphas_cumprod: torch.Tensor):
    """Cross-entropy (or Gaussian NLL) of the parent from x_t ~ q(x_t | x_0) at t ~ U{0..T-1}."""
    def loss(x0, y, gen):
        T = alphas_cumprod.shape[0]
        t = torch.randint(T, (x0.shape[0],), device=x0.device, generator=gen)
        eps = torch.randn(x0.shape, device=x0.device, generator=gen)
        a = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return -model.log_prob(xt, t, y).mean()
    return loss


def oracle_loss(model: Oracle, max_shift: int = 2):
    """Cross-entropy on clean images with random shifts of up to ``max_shift`` pixels."""
    def loss(x0, y, gen):
        return F.cross_entropy(model(_shifted(x0, max_shift, gen)), y)
    return loss


def regression_oracle_loss(model, max_shift: int = 2):
    """MSE of the standardised attribute from clean images (random shifts keep thickness and intensity)."""
    def loss(x0, y, gen):
        z = (y.float() - model.config["target_mean"]) / model.config["target_std"]
        return F.mse_loss(model(_shifted(x0, max_shift, gen)), z)
    return loss


def judge_loss(model):
    """The benchmark judges' objectives: cross-entropy (digit) or MSE on the [−1, 1]-scaled value; ``y`` holds the
    target then the context attributes, column by column (the digit judge: the labels)."""
    from ..models.judge import to_unit

    target = model.config["target"]

    def loss(x0, y, gen):
        if target == "digit":
            return F.cross_entropy(model(x0), y)
        y = y.float()
        return F.mse_loss(model(x0, y[:, 1:] if model.config["context"] else None), to_unit(y[:, 0], target))
    return loss


def _shifted(x0: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if not max_shift:
        return x0
    pad = F.pad(x0, [max_shift] * 4, value=-1.0)
    dx, dy = (int(v) for v in torch.randint(2 * max_shift + 1, (2,), generator=gen, device=x0.device))
    return pad[:, :, dy:dy + x0.shape[2], dx:dx + x0.shape[3]]


def flow_loss(model, parent_names: list[str]):
    """Negative log-likelihood of an attribute flow; ``y`` holds the parents' values column by column."""
    def loss(v, y, gen):
        return -model.log_prob(v, {n: y[:, j] for j, n in enumerate(parent_names)}).mean()
    return loss


def load_init(model: torch.nn.Module, path: str | Path) -> dict:
    """Copy every tensor of the checkpoint at ``path`` whose name and shape match into ``model``."""
    from ..models.io import load_tensors

    src = load_tensors(path)
    own = model.state_dict()
    loaded = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise DiffSCMError(f"--init {path}: no tensor matches this model")
    model.load_state_dict(loaded, strict=False)
    return {"from": str(path), "tensors": len(loaded), "skipped": sorted(set(own) - set(loaded))}


def vae_loss(model):
    """Negative ELBO (or reconstruction BCE of an autoencoder) of :class:`diffscm.models.VAE`; labels condition a cVAE."""
    def loss(x0, y, gen):
        return model.loss(x0, y if model.conditional else None, gen)
    return loss


def read_alphas(diffusion_dir: str | Path) -> tuple[torch.Tensor, dict]:
    """ᾱ table of a trained diffusion checkpoint (the predictor must train on the same schedule)."""
    from ..schedule import make_alphas_cumprod

    cfg = load_config(diffusion_dir, expected_kind="diffusion")
    return make_alphas_cumprod(cfg.get("schedule", "linear"), cfg.get("num_train_timesteps", 1000)).float(), cfg
