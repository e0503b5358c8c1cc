"""Colour-MNIST: the hue mechanism, the renderer against hand-computed colours, and the built folder."""
from __future__ import annotations

import colorsys
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffscm.data import colour_mnist as cm
from diffscm.data.folder import load_folder
from diffscm.errors import DiffSCMError
from diffscm.scm.graph import CausalGraph

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hue", [0.0, 0.05, 1 / 6, 0.25, 0.5, 0.6, 5 / 6, 0.95, 1.0])
def test_hue_to_rgb_matches_colorsys(hue):
    assert np.allclose(cm.hue_to_rgb(np.array([hue]))[0], colorsys.hsv_to_rgb(cm.WHEEL * hue, 1.0, 1.0))


def test_distinct_hues_have_distinct_colours():
    rgb = cm.hue_to_rgb(np.linspace(0, 1, 101))
    gaps = np.abs(rgb[:, None] - rgb[None]).max(-1) + np.eye(101)
    assert gaps.min() > 0.04                               # 0.01 apart in hue differ by at least 0.05 in a channel


def test_hue_mechanism_by_hand():
    assert np.allclose(cm.hue_mechanism(np.array([0, 3, 9]), np.array([0.0, 1.0, -2.5])),
                       [0.05, 0.35 + cm.SIGMA, 0.95 - 2.5 * cm.SIGMA])
    # the uniform share takes its own hue; a counterfactual digit can push the band past the support: clipped
    assert np.allclose(cm.hue_mechanism(np.array([0, 3, 9, 0]), np.array([0.0, 1.0, 2.0, -2.0]),
                                        np.array([0.7, 0.2, 0.3, 0.9]), np.array([True, False, False, False])),
                       [0.7, 0.35 + cm.SIGMA, 1.0, 0.0])


def test_noise_is_truncated_and_hues_stay_in_support():
    digit = np.repeat(np.arange(10), 20_000)
    noise = cm.sample_noise(digit, np.random.default_rng(0))
    u = noise["u_hue"]
    assert np.abs(u).max() <= cm.TRUNCATE
    mid = (digit >= 2) & (digit <= 7)                    # bands far from the bounds: only the 2.5-sd truncation
    assert abs(u[mid].mean()) < 0.01 and 0.9 < u[mid].std() < 1.0   # a normal truncated at 2.5 sd: sd ≈ 0.96
    assert u[digit == 0].min() >= -0.05 / cm.SIGMA - 1e-12          # digit 0's band (mean 0.05) stays above 0
    assert abs(noise["uniform"].mean() - cm.P_UNIFORM) < 0.002
    hue = cm.hue_mechanism(digit, **noise)
    assert hue.min() >= 0.0 and hue.max() <= 1.0
    assert np.allclose(hue[noise["uniform"]], noise["u_uniform"][noise["uniform"]])
    band = ~noise["uniform"]
    assert np.allclose(hue[band], (digit[band] + 0.5) / 10 + cm.SIGMA * u[band])   # no clipping on sampled noise


def test_render_pads_and_colours_each_stroke_pixel():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 10, 12], digits[1, 0, 0] = 200, 255
    img = cm.render(digits, np.array([0.4, 0.6]))              # 120°: pure green; 180°: cyan
    assert img.shape == (2, 3, 32, 32) and img.dtype == np.uint8
    assert img[0, :, 12, 14].tolist() == [0, 200, 0]          # shifted by the 2-px pad
    assert img[1, :, 2, 2].tolist() == [0, 255, 255]
    assert img.sum() == img[0, :, 12, 14].sum() + img[1, :, 2, 2].sum()   # the background stays black


@pytest.mark.parametrize("digits, hue, words", [
    (np.zeros((2, 32, 32)), np.zeros(2), "28 x 28"),
    (np.zeros((2, 28, 28)), np.zeros(3), "one hue per digit"),
    (np.zeros((2, 28, 28)), np.array([0.5, 1.2]), "[0, 1]"),
])
def test_render_bad_inputs(digits, hue, words):
    with pytest.raises(DiffSCMError, match=words.replace("[", r"\[").replace("]", r"\]")):
        cm.render(digits, hue)


def test_example_graph_is_the_generator_graph():
    spec = yaml.safe_load((ROOT / "examples/graphs/colour-mnist.yaml").read_text())
    a, b = CausalGraph.from_dict(spec), CausalGraph.from_dict(cm.GRAPH)
    assert {n: (v.kind, v.parents, v.num_classes, v.low, v.high, v.oracle_view) for n, v in a.variables.items()} == \
           {n: (v.kind, v.parents, v.num_classes, v.low, v.high, v.oracle_view) for n, v in b.variables.items()}


def test_cli_builds_a_folder_that_loads(idx_dir, tmp_path, monkeypatch, capsys):
    from diffscm import cli

    out = tmp_path / "cmnist"
    monkeypatch.setattr(sys, "argv", ["diffscm", "data", "colour-mnist", "--out", str(out), "--data-dir", str(idx_dir),
                                      "--train", "30", "--val", "5", "--test", "7", "--seed", "3"])
    cli.main()
    ds = load_folder(out, split="train")
    assert ds.images.shape == (30, 3, 32, 32) and ds.info["label"] == "digit"
    assert CausalGraph.from_dict(ds.info["graph"]).variables["hue"].parents == ("digit",)
    from diffscm.data import load_mnist

    x, y = load_mnist("train", idx_dir)
    assert np.array_equal(ds.table["digit"], y[:30])
    # the images are the generator's: rendering the listed digits in the listed hues gives them back (PNG is lossless)
    hue = ds.table["hue"]
    stored = np.round(ds.images * 255).astype(int)                 # load_folder gives [0, 1] floats
    assert np.abs(stored - cm.render(x[:30], hue).astype(int)).max() <= 1   # hue stored to 6 digits
    assert len(load_folder(out, split="test").files) == 7
    # true counterfactuals: the factual hue gives the stored image back; a new hue recolours the same strokes;
    # a new digit has none
    test = load_folder(out, split="test")
    src, d, h = test.table["source_index"], test.table["digit"], test.table["hue"]
    img, ok = cm.true_counterfactuals("test", src, d, {"digit": d, "hue": h}, idx_dir)
    assert ok.all() and np.abs(img.astype(int) - np.round(test.images * 255).astype(int)).max() <= 1
    new = {"digit": np.where(np.arange(7) == 0, (d + 1) % 10, d), "hue": np.full(7, 0.4)}   # 0.4: pure green
    img, ok = cm.true_counterfactuals("test", src, d, new, idx_dir)
    assert ok.tolist() == [False] + [True] * 6
    grey = np.round(test.images * 255).astype(int).max(1)          # the strokes, whatever their colour
    assert np.array_equal(img[:, 1], grey) and not img[:, [0, 2]].any()
    monkeypatch.setattr(sys, "argv", ["diffscm", "data", "colour-mnist", "--out", str(out), "--data-dir", str(idx_dir)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err


def test_cli_writes_mnist_as_a_dataset_folder(idx_dir, tmp_path, monkeypatch, capsys):
    from diffscm import cli
    from diffscm.data import load_mnist

    out = tmp_path / "mnist"
    monkeypatch.setattr(sys, "argv", ["diffscm", "data", "mnist", "--out", str(out), "--data-dir", str(idx_dir),
                                      "--train", "12", "--val", "0", "--test", "5"])
    cli.main()
    tr, te = load_folder(out, split="train"), load_folder(out, split="test")
    x, y = load_mnist("test", idx_dir)
    assert tr.images.shape == (12, 1, 28, 28) and te.images.shape == (5, 1, 28, 28)
    assert np.array_equal(np.round(te.images[:, 0] * 255).astype(np.uint8), x[:5])       # PNG is lossless
    assert np.array_equal(te.table["digit"], y[:5]) and set(tr.table["split"]) == {"train"}
    assert CausalGraph.from_dict(tr.info["graph"]).image.parents == ("digit",)
    monkeypatch.setattr(sys, "argv", ["diffscm", "data", "mnist", "--out", str(out), "--data-dir", str(idx_dir)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
