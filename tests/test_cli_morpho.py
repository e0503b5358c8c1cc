"""Command line on Morpho-MNIST: data, measure, train flow, counterfactual with joint interventions; bad input."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from diffscm.data import load_mnist
from diffscm.data import morphomnist as mm

from test_cli import assert_one_line_error, assert_user_error, run_cli


@pytest.fixture
def morpho_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(mm, "morpho_cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def csv_dir(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("t10k-morpho.csv", 10000), ("train-morpho.csv", 60000)):
        t, i = mm.sample_attributes(n, rng)
        with (d / name).open("w") as f:
            f.write("index,thickness,intensity\n" + "".join(f"{k},{a},{b}\n" for k, (a, b) in enumerate(zip(t, i))))
    return d


def test_data_morphomnist_writes_images_and_attributes(monkeypatch, capsys, tmp_path, morpho_cache, csv_dir):
    out = tmp_path / "mm"
    res = run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "test", "--limit", "3", "--csv-dir", csv_dir,
                  "--out", out, "--workers", "1")
    assert res.code == 0, res.err
    x = np.load(out / "test-images.npy")
    assert x.shape == (3, 28, 28) and x.dtype == np.uint8
    rows = list(csv.DictReader((out / "test-attributes.csv").open()))
    assert list(rows[0]) == ["index", "digit", "thickness", "intensity"]
    t, i = mm.read_community_csv(csv_dir / "t10k-morpho.csv")
    _, y = load_mnist("test")
    assert [int(r["digit"]) for r in rows] == y[:3].tolist()
    assert float(rows[2]["thickness"]) == pytest.approx(t[2], rel=1e-6)
    src, _ = load_mnist("test")
    assert np.array_equal(x[1], mm.render(src[1], t[1], i[1]))
    # cached: a second call reuses the build (no work folder left behind)
    assert not list(morpho_cache.glob("*/work"))


def test_data_morphomnist_seeded_model_is_reproducible(monkeypatch, capsys, tmp_path, morpho_cache):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "train", "--limit", "2", "--seed", "5",
                       "--out", out, "--workers", "1").code == 0
    assert (a / "train-attributes.csv").read_text() == (b / "train-attributes.csv").read_text()


def test_data_morphomnist_bad_input(monkeypatch, capsys, tmp_path, morpho_cache):
    assert_user_error(run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "valid", "--out", tmp_path / "o"),
                      tmp_path / "o", "split")
    assert_user_error(run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "test", "--csv-dir", tmp_path,
                              "--out", tmp_path / "o"), tmp_path / "o", "t10k-morpho.csv")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "t10k-morpho.csv").write_text("index,thick\n0,1\n")
    assert_user_error(run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "test", "--csv-dir",
                              tmp_path / "bad", "--out", tmp_path / "o"), tmp_path / "o", "index,thickness,intensity")


def test_measure_writes_all_morphometrics(monkeypatch, capsys, tmp_path):
    x, _ = load_mnist("test")
    np.save(tmp_path / "x.npy", x[:3])
    out = tmp_path / "m.csv"
    res = run_cli(monkeypatch, capsys, "measure", tmp_path / "x.npy", "--out", out, "--workers", "1")
    assert res.code == 0, res.err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["index", "thickness", "intensity", "slant", "width", "height", "length", "area"]
    assert float(rows[0]["thickness"]) == pytest.approx(mm.measure(x[0])["thickness"], rel=1e-5)
    # existing output is kept
    assert_one_line_error(run_cli(monkeypatch, capsys, "measure", tmp_path / "x.npy", "--out", out), "already exists")
    assert out.read_text().startswith("index,thickness")


@pytest.mark.parametrize("content, words", [(None, ["does not exist"]), (b"not numpy", ["not a readable"]),
                                             ("1d", ["N×H×W"])])
def test_measure_bad_input(monkeypatch, capsys, tmp_path, content, words):
    f = tmp_path / "in.npy"
    if content == "1d":
        np.save(f, np.zeros(5))
    elif content is not None:
        f.write_bytes(content)
    out = tmp_path / "m.csv"
    assert_user_error(run_cli(monkeypatch, capsys, "measure", f, "--out", out), out, *words)


def test_train_flow_and_bad_target(monkeypatch, capsys, tmp_path, morpho_cache, csv_dir):
    data = tmp_path / "mm"
    assert run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "train", "--limit", "8", "--csv-dir", csv_dir,
                   "--out", data, "--workers", "1").code == 0
    out = tmp_path / "flow"
    res = run_cli(monkeypatch, capsys, "train", "flow", "--dataset", "morphomnist", "--data-dir", data, "--target",
                  "intensity", "--out", out, "--steps", "3", "--batch-size", "4")
    assert res.code == 0, res.err
    from diffscm.models import load_model

    flow = load_model(out)
    assert flow.config["parents"][0]["name"] == "thickness"
    res = run_cli(monkeypatch, capsys, "train", "judge", "--dataset", "morphomnist", "--data-dir", data, "--target",
                  "thickness", "--out", tmp_path / "judge", "--steps", "2", "--batch-size", "4")
    assert res.code == 0, res.err
    judge = load_model(tmp_path / "judge")
    assert judge.kind == "judge" and judge.config["context"] == ["intensity"]
    assert_user_error(run_cli(monkeypatch, capsys, "train", "judge", "--dataset", "mnist", "--out", tmp_path / "j2",
                              "--steps", "1"), tmp_path / "j2", "morphomnist")
    assert_user_error(run_cli(monkeypatch, capsys, "train", "flow", "--dataset", "morphomnist", "--data-dir", data,
                              "--target", "digit", "--out", tmp_path / "f2", "--steps", "1"), tmp_path / "f2", "continuous")
    assert_user_error(run_cli(monkeypatch, capsys, "train", "predictor", "--dataset", "morphomnist", "--data-dir", data,
                              "--target", "slant", "--out", tmp_path / "f3", "--steps", "1"), tmp_path / "f3", "slant")
    assert_user_error(run_cli(monkeypatch, capsys, "train", "diffusion", "--dataset", "morphomnist", "--out",
                              tmp_path / "f4", "--steps", "1"), tmp_path / "f4", "--data-dir")


def _png(path, img):
    Image.fromarray(img).save(path)
    return path


def test_counterfactual_joint_do_on_user_images(monkeypatch, capsys, tmp_path, tiny_morpho_scm):
    x, _ = load_mnist("test")
    files = [_png(tmp_path / f"{k}.png", mm.render(x[k], 2.0, 150.0)) for k in range(2)]
    out = tmp_path / "cf"
    res = run_cli(monkeypatch, capsys, "counterfactual", "--model", tiny_morpho_scm, "--image", files[0], "--image",
                  files[1], "--observed", "digit=7", "--do", "thickness=4.5", "--do", "intensity=120", "--out", out,
                  "--quiet")
    assert res.code == 0, res.err
    assert "measured by the morphometrics" in res.err
    with np.load(out / "counterfactuals.npz") as z:
        assert z["thickness_cf"].tolist() == [4.5, 4.5] and z["intensity_cf"].tolist() == [120.0, 120.0]
        assert z["thickness"] == pytest.approx([mm.measure(mm.render(x[k], 2.0, 150.0))["thickness"] for k in range(2)], abs=1e-4)
        assert z["counterfactual"].shape == (2, 28, 28)
    # do(thickness) alone: intensity follows through the flow
    out2 = tmp_path / "cf2"
    assert run_cli(monkeypatch, capsys, "counterfactual", "--model", tiny_morpho_scm, "--image", files[0], "--observed",
                   "digit=7", "--observed", "thickness=2", "--observed", "intensity=150", "--do", "thickness=3.5",
                   "--scale", "0.5", "--scale", "thickness=3", "--out", out2, "--quiet").code == 0
    with np.load(out2 / "counterfactuals.npz") as z:
        assert z["intensity_cf"][0] != pytest.approx(150.0)
    import json

    scales = json.loads((out2 / "options.json").read_text())["options"]["scales"]
    assert scales == {"digit": 0.5, "thickness": 3.0, "intensity": 0.5}


@pytest.mark.parametrize("args, words", [
    (["--do", "thickness=9"], ["thickness must lie in"]),
    (["--do", "intensity=20"], ["intensity must lie in"]),
    (["--do", "slant=0.1"], ["unknown variable", "slant"]),
    (["--do", "thickness=4", "--observed", "width=3"], ["unknown variable", "width"]),
    (["--do", "thickness=4", "--scale", "slant=2"], ["no predictor", "slant"]),
    (["--do", "thickness=4", "--scale", "thick"], ["bad --scale"]),
])
def test_counterfactual_morpho_bad_input(monkeypatch, capsys, tmp_path, tiny_morpho_scm, args, words):
    x, _ = load_mnist("test")
    f = _png(tmp_path / "a.png", x[0])
    out = tmp_path / "cf"
    res = run_cli(monkeypatch, capsys, "counterfactual", "--model", tiny_morpho_scm, "--image", f,
                  "--observed", "digit=7", "--observed", "thickness=2", "--observed", "intensity=200", *args,
                  "--out", out, "--quiet")
    assert_user_error(res, out, *words)


def test_pack_a_morpho_scm_from_a_yaml_graph(monkeypatch, capsys, tmp_path, tiny_morpho_scm):
    from pathlib import Path

    import json

    from diffscm.scm import SCM

    parts = tiny_morpho_scm.parent / "parts"
    graph = Path(__file__).resolve().parents[1] / "examples" / "graphs" / "morphomnist.yaml"
    out = tmp_path / "packed"
    args = ["pack", "--out", out, "--diffusion", parts / "diffusion", "--graph", graph,
            *[a for n in ("digit", "thickness", "intensity") for a in ("--predictor", f"{n}={parts / ('p_' + n)}")],
            *[a for n in ("digit", "thickness", "intensity") for a in ("--oracle", f"{n}={parts / ('o_' + n)}")],
            "--scale", "4", "--scale", "thickness=2.5", "--steps", "3"]
    res = run_cli(monkeypatch, capsys, *args)
    assert_user_error(res, out, "intensity", "needs a flow")     # a continuous variable with parents needs its flow
    res = run_cli(monkeypatch, capsys, *args, "--flow", f"thickness={parts / 'f_thickness'}",
                  "--flow", f"intensity={parts / 'f_intensity'}")
    assert res.code == 0, res.err
    cfg = json.loads((out / "scm.json").read_text())
    assert cfg["defaults"]["scales"] == {"digit": 4.0, "thickness": 2.5, "intensity": 4.0}
    scm = SCM.from_pretrained(out)
    assert set(scm.oracles) == {"digit", "thickness", "intensity"}
    assert set(scm.attribute_mechanisms) == {"digit", "thickness", "intensity"}
