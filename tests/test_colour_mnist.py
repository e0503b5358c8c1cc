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
    assert np.allclose(cm.hue_to_rgb(np.array([hue]))[0], colorsys.hsv_to_rgb(hue % 1.0, 1.0, 1.0))


def test_hue_mechanism_by_hand():
    assert np.allclose(cm.hue_mechanism(np.array([0, 3, 9]), np.array([0.0, 1.0, -2.5])),
                       [0.05, 0.35 + cm.SIGMA, 0.95 - 2.5 * cm.SIGMA])


def test_noise_is_truncated_and_hues_stay_in_support():
    u = cm.sample_noise(200_000, np.random.default_rng(0))
    assert np.abs(u).max() <= cm.TRUNCATE and abs(u.mean()) < 0.01
    assert 0.9 < u.std() < 1.0                           # a standard normal truncated at 2.5 sd has sd ≈ 0.96
    hue = cm.hue_mechanism(np.repeat(np.arange(10), 20_000), u)
    assert hue.min() >= 0.0 and hue.max() <= 1.0


def test_render_pads_and_colours_each_stroke_pixel():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 10, 12], digits[1, 0, 0] = 200, 255
    img = cm.render(digits, np.array([1 / 3, 0.6]))            # pure green; a blue-violet
    assert img.shape == (2, 3, 32, 32) and img.dtype == np.uint8
    assert img[0, :, 12, 14].tolist() == [0, 200, 0]          # shifted by the 2-px pad
    r, g, b = colorsys.hsv_to_rgb(0.6, 1.0, 1.0)
    assert img[1, :, 2, 2].tolist() == [round(255 * r), round(255 * g), round(255 * b)]
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
    assert {n: (v.kind, v.parents, v.num_classes, v.low, v.high) for n, v in a.variables.items()} == \
           {n: (v.kind, v.parents, v.num_classes, v.low, v.high) for n, v in b.variables.items()}


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
    monkeypatch.setattr(sys, "argv", ["diffscm", "data", "colour-mnist", "--out", str(out), "--data-dir", str(idx_dir)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
