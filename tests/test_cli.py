"""The ``diffscm`` command line: counterfactuals from a split or the user's images, and one-line user errors.

Most tests call the real entry point :func:`diffscm.cli.main` in-process (``sys.argv`` patched, ``SystemExit``
caught); a few run the installed console script in a subprocess to check the real process exit codes.
Every call uses the tiny random SCM (``tiny_scm``), fake IDX files (``idx_dir``), ``--device cpu`` and ``--quiet``.

Contract for bad input: exit code 2, exactly one line on stderr starting with ``error:`` that names the
problem, and no output folder (nor a hidden ``.OUT.tmp-*`` / ``.OUT.old-*`` folder beside it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from diffscm import cli  # noqa: E402
from diffscm.data import load_mnist  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_real_cache(monkeypatch, tmp_path):
    """Nothing here may read or write the user's MNIST cache: point it at an empty folder."""
    monkeypatch.setenv("DIFFSCM_CACHE", str(tmp_path / "cache-must-stay-unused"))


# --------------------------------------------------------------------------- helpers

class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code!r}, stdout={self.out!r}, stderr={self.err!r})"


def run_cli(monkeypatch, capsys, *args) -> Result:
    """Run ``diffscm ARGS`` in-process through the console entry point; exit code as the real process would have.

    An exception escaping ``main`` becomes code 1 with its traceback on stderr, as in a real process.
    """
    monkeypatch.setattr(sys, "argv", ["diffscm", *map(str, args)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer installs its own hook; restore it afterwards
    capsys.readouterr()
    tb = ""
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 - report it the way the interpreter would
        code, tb = 1, traceback.format_exc()
    cap = capsys.readouterr()
    return Result(code, cap.out, cap.err + tb)


def cf_args(tiny_scm: Path, idx_dir: Path, out: Path, *extra, model: Path | None = None) -> list[str]:
    return ["counterfactual", "--model", str(model or tiny_scm), "--data-dir", str(idx_dir), "--device", "cpu",
            "--quiet", "--out", str(out), *map(str, extra)]


def leftovers(out: Path) -> list[Path]:
    """Hidden temp / backup folders of an atomic write of ``out``."""
    return sorted(out.parent.glob(f".{out.name}.tmp-*")) + sorted(out.parent.glob(f".{out.name}.old-*"))


def _tail(text: str, n: int = 4) -> str:
    lines = text.splitlines()
    return "\n".join(lines[-n:]) + (f"\n({len(lines)} lines in all)" if len(lines) > n else "")


def assert_one_line_error(res: Result, *keywords: str) -> str:
    if res.code != 2:
        pytest.fail(f"expected exit code 2, got {res.code}; stderr ends with:\n{_tail(res.err)}", pytrace=False)
    lines = res.err.splitlines()
    if len(lines) != 1:
        pytest.fail(f"expected exactly one line on stderr, got {len(lines)}:\n{_tail(res.err, 8)}", pytrace=False)
    line = lines[0]
    assert line.startswith("error:"), line
    for kw in keywords:
        assert kw.lower() in line.lower(), f"{kw!r} not in {line!r}"
    return line


def assert_user_error(res: Result, out: Path, *keywords: str) -> str:
    line = assert_one_line_error(res, *keywords)
    assert not out.exists(), f"{out} was created by a failing command ({line})"
    assert not leftovers(out), f"temp folders left behind: {leftovers(out)}"
    return line


def load_npz(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "counterfactuals.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def split_images(idx_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist("test", idx_dir)


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(path)
    return path


def digit_like(h: int = 28, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- happy paths: split images

def test_counterfactual_index_range_do_digit(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:6", "--do", "digit=7"))
    assert res.code == 0, res

    assert sorted(p.name for p in out.iterdir()) == ["counterfactuals.npz", "grid.png", "options.json", "values.csv"]
    assert not leftovers(out)
    png = (out / "grid.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    with Image.open(out / "grid.png") as im:
        im.verify()
    with Image.open(out / "grid.png") as im:
        assert im.format == "PNG" and im.size[0] > 28 and im.size[1] > 28

    z = load_npz(out)
    x_test, y_test = split_images(idx_dir)
    assert z["factual"].dtype == np.uint8 and z["factual"].shape == (6, 28, 28)
    assert z["counterfactual"].dtype == np.uint8 and z["counterfactual"].shape == (6, 28, 28)
    np.testing.assert_array_equal(z["factual"], x_test[:6])
    assert np.issubdtype(z["digit"].dtype, np.integer) and np.issubdtype(z["target"].dtype, np.integer)
    np.testing.assert_array_equal(z["digit"], y_test[:6])
    np.testing.assert_array_equal(z["digit"], np.arange(6))
    np.testing.assert_array_equal(z["target"], np.full(6, 7))

    opts = json.loads((out / "options.json").read_text())
    assert opts["do"] == {"digit": "7"}
    assert opts["options"]["steps"] == 4
    summary = json.loads(res.out.strip().splitlines()[-1])
    assert summary["out"] == str(out) and summary["n"] == 6


def test_counterfactual_do_random_differs_and_is_reproducible(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:6", "--do", "digit=random",
                                                    "--seed", "3"))
        assert res.code == 0, res
    a, b = load_npz(outs[0]), load_npz(outs[1])
    np.testing.assert_array_equal(a["digit"], np.arange(6))
    assert np.all(a["target"] != a["digit"]), a["target"]
    assert np.all((a["target"] >= 0) & (a["target"] <= 9))
    np.testing.assert_array_equal(a["target"], b["target"])
    np.testing.assert_array_equal(a["counterfactual"], b["counterfactual"])


@pytest.mark.parametrize("index, expected", [("1,3,5", [1, 3, 5]), ("7", [7])])
def test_counterfactual_index_list_and_single(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, index, expected):
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", index, "--do", "digit=2"))
    assert res.code == 0, res
    z = load_npz(out)
    x_test, y_test = split_images(idx_dir)
    n = len(expected)
    assert z["factual"].shape == z["counterfactual"].shape == (n, 28, 28)
    np.testing.assert_array_equal(z["factual"], x_test[expected])
    np.testing.assert_array_equal(z["digit"], y_test[expected])
    np.testing.assert_array_equal(z["target"], np.full(n, 2))


# --------------------------------------------------------------------------- happy paths: the user's images

@pytest.fixture
def user_images(tmp_path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    a_arr, b_arr = digit_like(seed=1), digit_like(seed=2)
    a = write_png(tmp_path / "a.png", a_arr)
    b = tmp_path / "b.npy"
    np.save(b, b_arr)
    return a, b, a_arr, b_arr


def test_counterfactual_user_images_observed_digit(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, user_images):
    a, b, a_arr, b_arr = user_images
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--image", a, "--image", b,
                                                "--observed", "digit=3", "--do", "digit=7"))
    assert res.code == 0, res
    assert "inferred" not in res.err
    z = load_npz(out)
    assert z["factual"].dtype == np.uint8 and z["factual"].shape == (2, 28, 28)
    np.testing.assert_array_equal(z["factual"][0], a_arr)
    np.testing.assert_array_equal(z["factual"][1], b_arr)
    assert z["counterfactual"].dtype == np.uint8 and z["counterfactual"].shape == (2, 28, 28)
    np.testing.assert_array_equal(z["digit"], [3, 3])
    np.testing.assert_array_equal(z["target"], [7, 7])
    assert (out / "grid.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "options.json").exists()


def test_counterfactual_user_images_digit_inferred_note(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path,
                                                        user_images):
    a, b, _, _ = user_images
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--image", a, "--image", b,
                                                "--do", "digit=7"))
    assert res.code == 0, res
    notes = [ln for ln in res.err.splitlines() if ln.startswith("note:")]
    assert any("infer" in ln for ln in notes), res.err
    z = load_npz(out)
    assert z["digit"].shape == (2,) and np.all((z["digit"] >= 0) & (z["digit"] <= 9))
    assert str(z["digit"][0]) in notes[0]


def test_counterfactual_user_image_rgb_is_converted(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    rgb = write_png(tmp_path / "rgb.png", digit_like(seed=3), mode="RGB")
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--image", rgb, "--observed", "digit=1",
                                                "--do", "digit=4"))
    assert res.code == 0, res
    assert any(ln.startswith("note:") and "rgb.png" in ln and "RGB" in ln for ln in res.err.splitlines()), res.err
    z = load_npz(out)
    assert z["factual"].shape == (1, 28, 28) and z["factual"].dtype == np.uint8


def test_counterfactual_user_image_56px_is_resized(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    big = write_png(tmp_path / "big.png", digit_like(56, 56, seed=4))
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--image", big, "--observed", "digit=1",
                                                "--do", "digit=4"))
    assert res.code == 0, res
    assert any(ln.startswith("note:") and "big.png" in ln and "56" in ln for ln in res.err.splitlines()), res.err
    assert load_npz(out)["factual"].shape == (1, 28, 28)


# --------------------------------------------------------------------------- bad input: exit 2, one line, no folder

def _copy_model(tiny_scm: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_scm, dst)
    return dst


def _corrupt_weights(m: Path) -> None:
    w = m / "diffusion" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])


def _drop_config(m: Path) -> None:
    (m / "diffusion" / "config.json").unlink()


def _drop_scm_json(m: Path) -> None:
    (m / "scm.json").unlink()


def _other_architecture(m: Path) -> None:
    cfg_file = m / "diffusion" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["unet"]["block_out_channels"] = [16, 32]
    cfg_file.write_text(json.dumps(cfg))


def _predictor_as_diffusion(m: Path) -> None:
    shutil.rmtree(m / "diffusion")
    shutil.copytree(m / "predictor", m / "diffusion")


BAD_MODELS = {
    "corrupt-weights": (_corrupt_weights, ("corrupt",)),
    "missing-config": (_drop_config, ("config.json",)),
    "missing-scm-json": (_drop_scm_json, ("scm.json",)),
    "other-architecture": (_other_architecture, ("architecture",)),
    "predictor-as-diffusion": (_predictor_as_diffusion, ("predictor",)),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_folder(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, case):
    break_it, keywords = BAD_MODELS[case]
    model = _copy_model(tiny_scm, tmp_path)
    break_it(model)
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:2", "--do", "digit=7",
                                                model=model))
    assert_user_error(res, out, *keywords)


def test_missing_model_folder(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--do", "digit=7",
                                                model=tmp_path / "no_such_model"))
    assert_user_error(res, out, "no_such_model")


BAD_ARGS = {
    # interventions
    "do-unknown-variable": (["--do", "colour=3"], ("colour",)),
    "do-digit-10": (["--do", "digit=10"], ("digit", "0..9")),
    "do-digit-minus-1": (["--do", "digit=-1"], ("digit", "0..9")),
    "do-digit-2.5": (["--do", "digit=2.5"], ("digit", "integer")),
    "do-digit-inf": (["--do", "digit=inf"], ("digit",)),
    "do-digit-nan": (["--do", "digit=nan"], ("digit",)),
    "do-digit-seven": (["--do", "digit=seven"], ("seven", "number")),
    "do-malformed": (["--do", "digit"], ("NAME=VALUE",)),
    "do-twice": (["--do", "digit=1", "--do", "digit=2"], ("twice",)),
    # --index
    "index-abc": (["--do", "digit=7", "--index", "abc"], ("--index", "abc")),
    "index-empty": (["--do", "digit=7", "--index", "5:2"], ("--index", "no image")),
    "index-out-of-range": (["--do", "digit=7", "--index", "0:999"], ("--index", "range")),
    "index-negative": (["--do", "digit=7", "--index", "-1"], ("--index", "-1")),
    # sampling options
    "steps-0": (["--do", "digit=7", "--steps", "0"], ("steps",)),
    "ratio-0": (["--do", "digit=7", "--ratio", "0"], ("ratio",)),
    "ratio-1.5": (["--do", "digit=7", "--ratio", "1.5"], ("ratio",)),
    # usage errors caught by the parser
    "unknown-option": (["--do", "digit=7", "--bogus", "1"], ("--bogus",)),
    "missing-do": ([], ("--do",)),
    "observed-without-image": (["--do", "digit=7", "--observed", "digit=3"], ("--observed",)),
    "seed-too-large": (["--do", "digit=7", "--index", "0:1", "--seed", str(10**17)], ("seed",)),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, case):
    extra, keywords = BAD_ARGS[case]
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, *extra))
    assert_user_error(res, out, *keywords)


def _npy(arr: np.ndarray):
    def make(d: Path) -> Path:
        p = d / "x.npy"
        np.save(p, arr)
        return p
    return make


def _float_nan() -> np.ndarray:
    a = np.full((28, 28), 0.5, dtype=np.float32)
    a[3, 4] = np.nan
    return a


def _text_png(d: Path) -> Path:
    p = d / "x.png"
    p.write_text("this is not an image\n")
    return p


BAD_IMAGES = {
    "npy-28x28x3": (_npy(np.zeros((28, 28, 3), np.uint8)), ("x.npy", "shape")),
    "npy-2x28x28": (_npy(np.zeros((2, 28, 28), np.uint8)), ("x.npy", "shape")),
    "npy-nan": (_npy(_float_nan()), ("x.npy", "nan")),
    "npy-float-outside-0-1": (_npy(np.full((28, 28), 2.0, np.float32)), ("x.npy", "[0, 1]")),
    "npy-int64": (_npy(np.zeros((28, 28), np.int64)), ("x.npy", "int64")),
    "text-named-png": (_text_png, ("x.png",)),
    "missing-file": (lambda d: d / "missing.png", ("missing.png", "exist")),
    "png-28x40": (lambda d: write_png(d / "tall.png", digit_like(40, 28)), ("tall.png", "square")),
    "png-40x28": (lambda d: write_png(d / "wide.png", digit_like(28, 40)), ("wide.png", "square")),
    "folder-named-npy": (lambda d: (d / "dir.npy").mkdir() or d / "dir.npy", ("dir.npy",)),
    "folder-named-png": (lambda d: (d / "dir.png").mkdir() or d / "dir.png", ("dir.png",)),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, case):
    make, keywords = BAD_IMAGES[case]
    img = make(tmp_path)
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--image", img, "--observed", "digit=3",
                                                "--do", "digit=7"))
    assert_user_error(res, out, *keywords)


@pytest.mark.parametrize("observed, keywords", [("digit=12", ("digit", "0..9")), ("colour=1", ("colour",)),
                                                ("digit=three", ("three",)), ("digit=inf", ("digit",))])
def test_bad_observed(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, user_images, observed, keywords):
    a, b, _, _ = user_images
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--image", a, "--image", b,
                                                "--observed", observed, "--do", "digit=7"))
    assert_user_error(res, out, *keywords)


def test_existing_output_needs_overwrite(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")

    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:2", "--do", "digit=7"))
    assert_one_line_error(res, "--overwrite")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["keep.txt", "sub", "sub/data.bin"]
    assert (out / "keep.txt").read_text() == "precious\n"
    assert (out / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    assert not leftovers(out)

    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:2", "--do", "digit=7",
                                                "--overwrite"))
    assert res.code == 0, res
    assert sorted(p.name for p in out.iterdir()) == ["counterfactuals.npz", "grid.png", "options.json", "values.csv"]
    assert load_npz(out)["target"].tolist() == [7, 7]
    assert not leftovers(out)


def test_existing_empty_output_is_fine(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:1", "--do", "digit=7"))
    assert res.code == 0, res
    assert (out / "counterfactuals.npz").exists()


def test_output_path_is_a_file(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    out.write_text("precious\n")
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:1", "--do", "digit=7"))
    assert_one_line_error(res, str(out))
    assert out.read_text() == "precious\n"
    assert not leftovers(out)


def test_output_parent_is_a_file(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    parent = tmp_path / "afile"
    parent.write_text("precious\n")
    out = parent / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:1", "--do", "digit=7"))
    assert_one_line_error(res, str(parent))
    assert parent.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("cache")) == ["afile"]


# --------------------------------------------------------------------------- pack

def test_pack_missing_diffusion_folder(monkeypatch, capsys, tiny_scm, tmp_path):
    out = tmp_path / "packed"
    res = run_cli(monkeypatch, capsys, "pack", "--out", out, "--diffusion", tmp_path / "no_such_diffusion",
                  "--predictor", tiny_scm / "predictor", "--scale", "1.0")
    assert_user_error(res, out, "no_such_diffusion")


# --------------------------------------------------------------------------- the real process

def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("diffscm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "diffscm.cli"]


def run_process(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "DIFFSCM_CACHE": str(cwd / "cache-must-stay-unused")}
    return subprocess.run([*_console_script(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_process_happy_path_exit_0(tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_process(*cf_args(tiny_scm, idx_dir, out, "--index", "0:2", "--do", "digit=7"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["counterfactuals.npz", "grid.png", "options.json", "values.csv"]


def test_process_bad_do_exit_2_one_line(tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_process(*cf_args(tiny_scm, idx_dir, out, "--index", "0:2", "--do", "digit=10"), cwd=tmp_path)
    assert_user_error(Result(proc.returncode, proc.stdout, proc.stderr), out, "digit")




def test_demo_writes_grid_and_npz(tiny_scm, idx_dir, tmp_path, monkeypatch, capsys):
    """`diffscm demo`: factual row + one row per target digit, and an npz of n × 10 counterfactuals."""
    out = tmp_path / "demo"
    res = run_cli(monkeypatch, capsys, "demo", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 3, "--out", out,
                  "--quiet", "--device", "cpu")
    assert res.code == 0, res
    z = load_npz(out)
    assert z["factual"].shape == (3, 28, 28) and z["counterfactual"].shape == (3, 10, 28, 28)
    assert (z["target"] == np.arange(10)).all() and z["digit"].tolist() == [0, 1, 2]
    assert Image.open(out / "grid.png").size[1] > 11 * 28
    assert "oracle_effectiveness" in res.out
    again = run_cli(monkeypatch, capsys, "demo", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 3, "--out", out,
                    "--quiet", "--device", "cpu")
    assert_one_line_error(again, "--overwrite")


def test_train_bad_mixed_precision(monkeypatch, capsys, idx_dir, tmp_path):
    out = tmp_path / "ck"
    res = run_cli(monkeypatch, capsys, "train", "oracle", "--data-dir", idx_dir, "--steps", 1, "--out", out,
                  "--mixed-precision", "fp16")
    assert_one_line_error(res, "--mixed-precision", "fp16")
    assert not out.exists()
