"""Morpho-MNIST (Castro et al., 2019) regenerated from real MNIST: morphometrics, perturbations, DeepSCM's data model.

* :func:`measure` — thickness, intensity, slant, width, height, length, area of an image (upsampled ×4 and truncated to
  uint8, binarised at ≥ min + ½(max − min), medial axis with its distance map — Morpho-MNIST's own procedure);
* :func:`set_thickness` — dilate/erode the ×16-upsampled binary digit with a disk to reach a stroke thickness;
* :func:`set_intensity` — rescale so the median foreground intensity becomes ``i`` (0–255);
* :func:`sample_attributes` — DeepSCM's model t = 0.5 + Gamma(10, rate 5), i = 64 + 191·σ(n), n ~ N(2(t − 2.5), 0.5);
* :func:`render` / :func:`true_counterfactual` — the generator itself, so true counterfactual images are computable;
* :func:`build_split` — the dataset (cached, resumable, all cores), optionally with the community (t, i) values.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage, signal
from skimage import morphology, transform

from ..errors import DiffSCMError

THRESHOLD = 0.5
MEASURE_SCALE = 4
PERTURB_SCALE = 16
BOUND_FRAC = 0.02
METRIC_COLUMNS = ("thickness", "intensity", "slant", "width", "height", "length", "area")
ATTRIBUTE_COLUMNS = ("index", "digit", "thickness", "intensity")
COMMUNITY_CSV = {"train": "train-morpho.csv", "test": "t10k-morpho.csv"}
COMMUNITY_PREFIX = {"train": "train", "test": "t10k"}
GENERATOR_VERSION = 2


@lru_cache(maxsize=1)
def _medial_axis_tables() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's medial-axis lookup tables (removability and cornerness of each 3×3 pattern), which
    ``skimage.morphology.medial_axis`` rebuilds on every call (≈ 0.2 s)."""
    from skimage.morphology import _skeletonize as sk

    eight = ndimage.generate_binary_structure(2, 2)
    pats = [sk._pattern_of(k) for k in range(512)]
    no_centre = [sk._pattern_of(k & ~(2 ** 4)) for k in range(512)]
    removable = (np.arange(512) & 2 ** 4).astype(bool) & (
        np.array([ndimage.label(a, eight)[1] != ndimage.label(b, eight)[1] for a, b in zip(pats, no_centre)])
        | np.array([p.sum() < 3 for p in pats]))
    corner = np.array([9 - p.sum() for p in pats])
    return np.ascontiguousarray(removable, dtype=np.uint8), corner


def medial_axis(binary: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``skimage.morphology.medial_axis(binary, return_distance=True, rng=seed)``, the same pixels and distances,
    computed on the foreground's bounding box (plus a background margin) with the lookup tables built once."""
    binary = np.asarray(binary, dtype=bool)
    skel, dist = np.zeros_like(binary), np.zeros(binary.shape)
    rows, cols = np.nonzero(binary.any(1))[0], np.nonzero(binary.any(0))[0]
    if len(rows) == 0:
        return skel, dist
    r0, r1 = max(rows[0] - 2, 0), min(rows[-1] + 3, binary.shape[0])
    c0, c1 = max(cols[0] - 2, 0), min(cols[-1] + 3, binary.shape[1])
    crop = binary[r0:r1, c0:c1]
    try:
        from skimage.morphology._skeletonize import _table_lookup
        from skimage.morphology._skeletonize_various_cy import _skeletonize_loop
    except ImportError:                      # another scikit-image layout: the public function, slower
        s, d = morphology.medial_axis(crop, return_distance=True, rng=seed)
    else:
        removable, corner = _medial_axis_tables()
        d = ndimage.distance_transform_edt(crop)
        score = _table_lookup(crop, corner)
        i, j = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
        tie = np.random.default_rng(seed).permutation(np.arange(crop.sum()))
        order = np.ascontiguousarray(np.lexsort((tie, score[crop], d[crop])), dtype=np.int32)
        out = np.ascontiguousarray(crop, np.uint8)
        _skeletonize_loop(out, np.ascontiguousarray(i[crop], dtype=np.intp),
                          np.ascontiguousarray(j[crop], dtype=np.intp), order, removable)
        s = out.astype(bool)
    skel[r0:r1, c0:c1], dist[r0:r1, c0:c1] = s, d
    return skel, dist


class Morphology:
    """Binary morphology of a grayscale image at ``scale`` × resolution, as Morpho-MNIST's ``ImageMorphology``:
    bicubic pyramid upsampling (a uint8 image is truncated back to uint8), threshold ``>=`` min + ½(max − min),
    medial axis with its distance map."""

    def __init__(self, image: np.ndarray, scale: int = MEASURE_SCALE, threshold: float = THRESHOLD):
        img = np.asarray(image)
        if img.ndim != 2:
            raise DiffSCMError(f"expected one 2-D image, got shape {img.shape}")
        self.scale = scale
        if scale > 1:
            up = 255.0 * transform.pyramid_expand(img.astype(np.float64) / 255.0, upscale=scale, order=3)
            self.hires = up.astype(np.uint8) if img.dtype == np.uint8 else up
        else:
            self.hires = img
        lo, hi = float(self.hires.min()), float(self.hires.max())
        self.binary = self.hires >= lo + threshold * (hi - lo)
        self.skeleton, self.distance = medial_axis(self.binary)

    @property
    def thickness(self) -> float:
        """Mean stroke thickness in original pixels: 2 · mean(distance on the medial axis) / scale."""
        if not self.skeleton.any():
            return float("nan")
        return float(2.0 * self.distance[self.skeleton].mean() / self.scale)

    def downscale(self, hires: np.ndarray) -> np.ndarray:
        """A [0, 1] high-resolution image back to the original size as uint8 (bicubic pyramid, truncated)."""
        down = transform.pyramid_reduce(np.asarray(hires, dtype=np.float64), downscale=self.scale, order=3)
        return (255.0 * down).astype(np.uint8)


def intensity(image: np.ndarray) -> float:
    """Median of the pixels at or above min + ½(max − min) (on the image's own scale, 0–255 for uint8)."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = img.min(), img.max()
    return float(np.median(img[img >= lo + THRESHOLD * (hi - lo)]))


def _shape_metrics(m: Morphology) -> dict[str, float]:
    ys, xs = np.nonzero(m.binary)
    if len(xs) < 2:
        return {"slant": float("nan"), "width": float("nan"), "height": float("nan")}
    yc, xc = ys - ys.mean(), xs - xs.mean()
    mu02, mu11 = (yc ** 2).mean(), (xc * yc).mean()
    shear = mu11 / mu02                      # x ≈ shear · y: the digit's lean
    xd = xc - shear * yc                     # deslanted columns
    q = (BOUND_FRAC, 1 - BOUND_FRAC)
    x0, x1 = np.quantile(xd, q)
    y0, y1 = np.quantile(yc, q)
    return {"slant": float(np.arctan(-shear)), "width": float((x1 - x0) / m.scale), "height": float((y1 - y0) / m.scale)}


def measure(image: np.ndarray, scale: int = MEASURE_SCALE) -> dict[str, float]:
    """Morphometrics of one image: thickness/width/height/length in pixels, area in px², slant in radians."""
    m = Morphology(image, scale)
    out = {"thickness": m.thickness, "intensity": intensity(image)}
    out.update(_shape_metrics(m))
    out["length"] = float(m.skeleton.sum() / scale)
    out["area"] = float(m.binary.sum() / scale ** 2)
    return out


@lru_cache(maxsize=None)
def _disk(radius: int, scale: int) -> np.ndarray:
    """Structuring element of radius ``radius`` (hires px): the support of a ×``scale`` disk pyramid-reduced, as in
    DeepSCM's ``SetThickness`` (slightly rounder and larger than ``skimage.morphology.disk``)."""
    d = transform.pyramid_reduce(morphology.disk(scale * radius, dtype=np.float64), downscale=scale, order=1)
    return d > 0


def _dilate(binary: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    return signal.fftconvolve(binary.astype(np.float32), footprint.astype(np.float32), mode="same") > 0.5


def _erode(binary: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    # outside the image counts as background, as in scipy.ndimage.binary_erosion's default
    conv = signal.fftconvolve(binary.astype(np.float32), footprint.astype(np.float32), mode="same")
    return conv > footprint.sum() - 0.5


def set_thickness(image: np.ndarray, target: float, scale: int = PERTURB_SCALE) -> np.ndarray:
    """Thin or thicken the stroke to mean thickness ``target`` (px); returns a uint8 image.

    The ×``scale`` binary digit is dilated or eroded with a disk of radius ⌊scale·|Δ|/2⌋ hires pixels (Δ = target −
    measured thickness), then pyramid-downscaled — DeepSCM's ``SetThickness``; morphology by FFT convolution for speed.
    """
    if not np.isfinite(target) or target <= 0:
        raise DiffSCMError(f"thickness must be a positive number, got {target}")
    m = Morphology(image, scale)
    delta = target - m.thickness
    radius = int(scale * abs(delta) / 2.0) if np.isfinite(delta) else 0
    if radius == 0:
        hires = m.binary
    elif delta > 0:
        hires = _dilate(m.binary, _disk(radius, scale))
    else:
        hires = _erode(m.binary, _disk(radius, scale))
    return m.downscale(hires.astype(np.float64))


def set_intensity(image: np.ndarray, target: float) -> np.ndarray:
    """Scale ``image`` so its median foreground intensity is ``target``; clip to 0..255 (float)."""
    if not np.isfinite(target) or not 0 < target <= 255:
        raise DiffSCMError(f"intensity must lie in (0, 255], got {target}")
    img = np.asarray(image, dtype=np.float64)
    ref = intensity(img)
    if ref <= 0:
        return np.zeros_like(img)
    return np.clip(img * (target / ref), 0.0, 255.0)


def render(digit_image: np.ndarray, thickness: float, intensity_value: float) -> np.ndarray:
    """The Morpho-MNIST generator: intensity-rescale(set_thickness(MNIST digit, t), i) as uint8 (truncated, as DeepSCM)."""
    return set_intensity(set_thickness(digit_image, thickness), intensity_value).astype(np.uint8)


def intensity_from_noise(thickness, noise):
    """i = 64 + 191 · σ(2(t − 2.5) + n), with n the (zero-mean) exogenous deviation."""
    return 64.0 + 191.0 / (1.0 + np.exp(-(2.0 * (np.asarray(thickness, dtype=np.float64) - 2.5) + noise)))


def intensity_noise(thickness, intensity_value):
    """The abducted deviation e = logit((i − 64)/191) − 2(t − 2.5) of the data model."""
    p = (np.asarray(intensity_value, dtype=np.float64) - 64.0) / 191.0
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p)) - 2.0 * (np.asarray(thickness, dtype=np.float64) - 2.5)


def sample_attributes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DeepSCM's model: t = 0.5 + Gamma(shape 10, rate 5); n ~ N(2(t − 2.5), 0.5); i = 64 + 191·σ(n)."""
    t = 0.5 + rng.gamma(10.0, 1.0 / 5.0, size=n)
    noise = rng.normal(0.0, 0.5, size=n)
    return t, intensity_from_noise(t, noise)


def true_counterfactual_values(thickness, intensity_value, do_thickness=None, do_intensity=None):
    """Counterfactual (t', i') under do(t) and/or do(i): i' keeps the factual's abducted deviation unless set."""
    t = np.asarray(thickness, dtype=np.float64)
    i = np.asarray(intensity_value, dtype=np.float64)
    t_new = t if do_thickness is None else np.broadcast_to(np.asarray(do_thickness, dtype=np.float64), t.shape)
    if do_intensity is not None:
        i_new = np.broadcast_to(np.asarray(do_intensity, dtype=np.float64), t.shape)
    elif do_thickness is not None:
        i_new = intensity_from_noise(t_new, intensity_noise(t, i))
    else:
        i_new = i
    return np.array(t_new), np.array(i_new)


def _render_many(args) -> np.ndarray:
    digits, t, i = args
    return np.stack([render(d, a, b) for d, a, b in zip(digits, t, i)]) if len(digits) else np.zeros((0, 28, 28), np.uint8)


def _measure_many(images) -> np.ndarray:
    rows = []
    for im in images:
        m = measure(im)
        rows.append([m[c] for c in METRIC_COLUMNS])
    return np.array(rows, dtype=np.float64).reshape(-1, len(METRIC_COLUMNS))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _parallel(fn, jobs: list, workers: int, progress: bool, label: str, sizes: list[int]) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    out = [None] * len(jobs)
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), disable=not progress) as bar:
        task = bar.add_task(label, total=sum(sizes))
        if workers <= 1:
            for k, job in enumerate(jobs):
                out[k] = fn(job)
                bar.advance(task, sizes[k])
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
                from concurrent.futures import as_completed

                for fut in as_completed(futures):
                    k = futures[fut]
                    out[k] = fut.result()
                    bar.advance(task, sizes[k])
    return out


def render_batch(digits: np.ndarray, thickness: np.ndarray, intensity_value: np.ndarray, workers: int | None = None,
                 progress: bool = False, chunk: int = 250) -> np.ndarray:
    """:func:`render` over many images on ``workers`` processes (uint8 N×28×28)."""
    n = len(digits)
    workers = workers or default_workers()
    starts = list(range(0, n, chunk))
    jobs = [(digits[s:s + chunk], thickness[s:s + chunk], intensity_value[s:s + chunk]) for s in starts]
    parts = _parallel(_render_many, jobs, workers, progress, "render", [len(j[0]) for j in jobs])
    return np.concatenate(parts) if parts else np.zeros((0, 28, 28), np.uint8)


def measure_batch(images: np.ndarray, workers: int | None = None, progress: bool = False, chunk: int = 250) -> np.ndarray:
    """Morphometrics of many images, columns :data:`METRIC_COLUMNS` (N×7 float64), on ``workers`` processes."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise DiffSCMError(f"expected images of shape (N, H, W), got {images.shape}")
    workers = workers or default_workers()
    jobs = [images[s:s + chunk] for s in range(0, len(images), chunk)]
    parts = _parallel(_measure_many, jobs, workers, progress, "measure", [len(j) for j in jobs])
    return np.concatenate(parts) if parts else np.zeros((0, len(METRIC_COLUMNS)))


# ------------------------------------------------------------------ dataset

def read_community_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(thickness, intensity) per image from a community ``*-morpho.csv`` (columns index, thickness, intensity)."""
    path = Path(path)
    if not path.exists():
        raise DiffSCMError(f"{path} does not exist")
    try:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        idx = np.array([int(r["index"]) for r in rows])
        t = np.array([float(r["thickness"]) for r in rows])
        i = np.array([float(r["intensity"]) for r in rows])
    except (KeyError, ValueError, TypeError) as exc:
        raise DiffSCMError(f"{path} is not a Morpho-MNIST CSV with index,thickness,intensity ({exc})") from None
    if not np.array_equal(idx, np.arange(len(idx))):
        raise DiffSCMError(f"{path}: the index column must run 0..N-1 in order")
    return t, i


def community_files(data_dir: str | Path, split: str) -> tuple[Path, Path, Path]:
    """The community layout of one split: (images IDX, labels IDX, morpho CSV) paths, whether or not they exist."""
    d, prefix = Path(data_dir), COMMUNITY_PREFIX[split]
    return (d / f"{prefix}-images-idx3-ubyte.gz", d / f"{prefix}-labels-idx1-ubyte.gz", d / COMMUNITY_CSV[split])


def load_community_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A split in the layout Morpho-MNIST is distributed in (``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``, ``t10k-morpho.csv``; ``train-…`` likewise; the IDX files may also be
    uncompressed): images uint8 N×28×28 and attributes {digit, thickness, intensity}."""
    from .mnist import find_idx, read_idx

    if split not in COMMUNITY_PREFIX:
        raise DiffSCMError(f"unknown split {split!r} (use train or test)")
    d, prefix = Path(data_dir), COMMUNITY_PREFIX[split]
    img_file = find_idx(d, f"{prefix}-images-idx3-ubyte")
    lab_file = find_idx(d, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_file), read_idx(lab_file).astype(np.int64)
    t, i = read_community_csv(d / COMMUNITY_CSV[split])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DiffSCMError(f"{img_file} holds images of shape {images.shape[1:]}, expected 28×28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DiffSCMError(f"{lab_file} has {len(labels)} labels for the {len(images)} images of {img_file.name}")
    if len(t) != len(images):
        raise DiffSCMError(f"{d / COMMUNITY_CSV[split]} has {len(t)} rows for the {len(images)} images of {img_file.name}")
    if labels.min() < 0 or labels.max() > 9:
        raise DiffSCMError(f"{lab_file} has labels outside 0–9")
    return images, {"digit": labels, "thickness": t, "intensity": i}


def write_attributes_csv(path: Path, digits: np.ndarray, t: np.ndarray, i: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ATTRIBUTE_COLUMNS)
        for k, (d, a, b) in enumerate(zip(digits, t, i)):
            w.writerow([k, int(d), f"{a:.7g}", f"{b:.7g}"])


def read_attributes_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of an ``{split}-attributes.csv`` as arrays (digit int64, thickness/intensity float64)."""
    path = Path(path)
    if not path.exists():
        raise DiffSCMError(f"{path} does not exist")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    try:
        return {"digit": np.array([int(r["digit"]) for r in rows], dtype=np.int64),
                "thickness": np.array([float(r["thickness"]) for r in rows]),
                "intensity": np.array([float(r["intensity"]) for r in rows])}
    except (KeyError, ValueError) as exc:
        raise DiffSCMError(f"{path} is not an attributes CSV with columns {','.join(ATTRIBUTE_COLUMNS)} ({exc})") from None


def _mnist_split(split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
    from .mnist import load_mnist

    return load_mnist("train+valid" if split == "train" else "test", data_dir)


def split_seed(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if split == "train" else 1])


def dataset_key(split: str, seed: int, csv_file: Path | None, limit: int | None) -> str:
    src = hashlib.sha256(csv_file.read_bytes()).hexdigest()[:16] if csv_file else f"seed{seed}"
    blob = json.dumps({"v": GENERATOR_VERSION, "split": split, "src": src, "limit": limit}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def morpho_cache_dir() -> Path:
    from .mnist import cache_dir

    return cache_dir() / "morphomnist"


def build_split(split: str, seed: int = 0, csv_dir: str | Path | None = None, limit: int | None = None,
                data_dir=None, workers: int | None = None, progress: bool = True, chunk: int = 1000) -> Path:
    """Build (or reuse) the cached ``split`` and return its folder holding ``{split}-images.npy`` + ``-attributes.csv``.

    Work is saved chunk by chunk, so an interrupted build resumes where it stopped.
    """
    if split not in ("train", "test"):
        raise DiffSCMError(f"unknown split {split!r} (use train or test)")
    if limit is not None and limit < 1:
        raise DiffSCMError(f"--limit must be at least 1, got {limit}")
    csv_file = Path(csv_dir) / COMMUNITY_CSV[split] if csv_dir is not None else None
    if csv_file is not None and not csv_file.exists():
        raise DiffSCMError(f"{csv_file} does not exist (--csv-dir must hold {COMMUNITY_CSV[split]})")
    x, y = _mnist_split(split, data_dir)
    if csv_file is not None:
        t, i = read_community_csv(csv_file)
        if len(t) != len(x):
            raise DiffSCMError(f"{csv_file} has {len(t)} rows for {len(x)} MNIST {split} images")
    else:
        t, i = sample_attributes(len(x), split_seed(seed, split))
    n = len(x) if limit is None else min(limit, len(x))
    folder = morpho_cache_dir() / f"{split}-{dataset_key(split, seed, csv_file, limit)}"
    images_file = folder / f"{split}-images.npy"
    if images_file.exists() and (folder / f"{split}-attributes.csv").exists():
        return folder
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, chunk))
    todo = [s for s in starts if not (work / f"{s:06d}.npy").exists()]
    if todo:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        workers = workers or default_workers()
        done0 = n - sum(min(chunk, n - s) for s in todo)
        sub = 50
        with Progress(TextColumn(f"[bold]morpho-mnist {split}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), disable=not progress) as bar, ProcessPoolExecutor(workers) as pool:
            task = bar.add_task("render", total=n, completed=done0)
            for s in todo:
                e = min(s + chunk, n)
                futs = [pool.submit(_render_many, (x[a:min(a + sub, e)], t[a:min(a + sub, e)], i[a:min(a + sub, e)]))
                        for a in range(s, e, sub)]
                parts = []
                for f in futs:
                    parts.append(f.result())
                    bar.advance(task, len(parts[-1]))
                tmp = work / f"{s:06d}.tmp.npy"
                np.save(tmp, np.concatenate(parts))
                tmp.replace(work / f"{s:06d}.npy")
    images = np.concatenate([np.load(work / f"{s:06d}.npy") for s in starts])
    tmp = folder / f"{split}-images.tmp.npy"
    np.save(tmp, images)
    write_attributes_csv(folder / f"{split}-attributes.tmp.csv", y[:n], t[:n], i[:n])
    (folder / f"{split}-attributes.tmp.csv").replace(folder / f"{split}-attributes.csv")
    tmp.replace(images_file)
    (folder / "source.json").write_text(json.dumps({"split": split, "n": n, "seed": seed if csv_file is None else None,
                                                    "csv": str(csv_file) if csv_file else None,
                                                    "generator_version": GENERATOR_VERSION}, indent=1) + "\n")
    for f in work.glob("*.npy"):
        f.unlink()
    work.rmdir()
    return folder


def load_split(split: str, seed: int = 0, csv_dir=None, limit: int | None = None, data_dir=None,
               progress: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(images uint8 N×28×28, attributes {digit, thickness, intensity}, source MNIST digits) — built if not cached."""
    folder = build_split(split, seed, csv_dir, limit, data_dir, progress=progress)
    images = np.load(folder / f"{split}-images.npy")
    attrs = read_attributes_csv(folder / f"{split}-attributes.csv")
    x, _ = _mnist_split(split, data_dir)
    return images, attrs, x[:len(images)]


def load_morpho_folder(data_dir: Path | None, split: str = "train") -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Images and attributes of a Morpho-MNIST folder, and its data hash. Two layouts are read: the one written by
    ``diffscm data morphomnist --out`` ({split}-images.npy + {split}-attributes.csv) and the one Morpho-MNIST is
    distributed in (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, t10k-morpho.csv; train-… likewise)."""
    if data_dir is None:
        raise DiffSCMError("--dataset morphomnist needs --data-dir: a folder written by `diffscm data morphomnist --out` "
                           "or one in Morpho-MNIST's own layout")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DiffSCMError(f"--data-dir {data_dir} is not a folder")
    images_file, csv_file = data_dir / f"{split}-images.npy", data_dir / f"{split}-attributes.csv"
    ours = [f for f in (images_file, csv_file) if f.exists()]
    community = community_files(data_dir, split)
    if not ours and any(f.exists() or f.with_suffix("").exists() for f in community):
        images, attrs = load_community_split(data_dir, split)
        h = hashlib.sha256(images.tobytes())
        h.update(community[2].read_bytes())
        return images, attrs, h.hexdigest()
    for f in (images_file, csv_file):
        if not f.exists():
            raise DiffSCMError(f"{f} does not exist (write it with `diffscm data morphomnist --out {data_dir}`, or give "
                               f"a folder holding {community[0].name}, {community[1].name} and {community[2].name})")
    images = np.load(images_file, allow_pickle=False)
    attrs = read_attributes_csv(csv_file)
    if images.ndim != 3 or len(images) != len(attrs["digit"]):
        raise DiffSCMError(f"{images_file} ({images.shape}) does not match {csv_file} ({len(attrs['digit'])} rows)")
    h = hashlib.sha256(images.tobytes())
    h.update(csv_file.read_bytes())
    return images, attrs, h.hexdigest()


MORPHO_VALID = 2000   # the last images of the Morpho-MNIST training split, held out to choose settings


def morpho_split(x: np.ndarray, attrs: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``train`` (all but the last MORPHO_VALID images of the training split), ``valid`` (those) or ``train+valid``.
    A training split of at most 2·MORPHO_VALID images (a small build) is used whole for ``train``."""
    if split not in ("train", "valid", "train+valid"):
        raise DiffSCMError(f"unknown --split {split!r} for Morpho-MNIST (train, valid or train+valid)")
    if split == "train+valid" or (split == "train" and len(x) <= 2 * MORPHO_VALID):
        return x, attrs
    if len(x) <= 2 * MORPHO_VALID:
        raise DiffSCMError(f"the training split has {len(x)} images: too few to hold out {MORPHO_VALID} for validation")
    sl = slice(None, -MORPHO_VALID) if split == "train" else slice(-MORPHO_VALID, None)
    return x[sl], {k: v[sl] for k, v in attrs.items()}


def write_morpho_folder(out: Path, train_dir: Path, test_dir: Path, source: dict, graph: dict) -> Path:
    """A dataset folder (train / val / test, columns digit, thickness, intensity, source_index) from the built
    splits of :func:`build_split`; ``val`` is the training split's last :data:`MORPHO_VALID` images. ``graph`` (the
    Morpho-MNIST graph) goes into its dataset.json."""
    from .folder import write_folder

    images, names, table = [], [], {"split": [], "digit": [], "thickness": [], "intensity": [], "source_index": []}
    for sp, folder in (("train", train_dir), ("test", test_dir)):
        x = np.load(folder / f"{sp}-images.npy")
        a = read_attributes_csv(folder / f"{sp}-attributes.csv")
        n = len(x)
        rows = ["test"] * n if sp == "test" else ["train"] * max(0, n - MORPHO_VALID) + ["val"] * min(n, MORPHO_VALID)
        images.append(x)
        names += [f"{r}-{k:05d}" for k, r in enumerate(rows)]
        table["split"] += rows
        table["digit"] += a["digit"].tolist()
        table["thickness"] += a["thickness"].tolist()
        table["intensity"] += a["intensity"].tolist()
        table["source_index"] += list(range(n))
    info = {"name": "morphomnist", "label": "digit", "num_classes": 10, "generator": "diffscm.data.morphomnist",
            "generator_version": GENERATOR_VERSION, **source, "graph": graph}
    return write_folder(out, np.concatenate(images), {k: np.asarray(v) for k, v in table.items()}, info=info,
                        names=names)
