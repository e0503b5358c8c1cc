"""The counterfactual benchmark's Morpho-MNIST protocol: the intervention draw, the judges, scoring end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffscm.data import morphomnist as mm
from diffscm.models import Judge
from diffscm.models.judge import RANGES, from_unit, to_unit
from diffscm.eval.protocols.morpho import CFBENCH, cfbench_edges, draw_cfbench, to_bins
from test_cli import run_cli


def _attrs(n=500, seed=0):
    t, i = mm.sample_attributes(n, np.random.default_rng(seed))
    return {"digit": np.random.default_rng(seed).integers(0, 10, n), "thickness": t, "intensity": i}


def test_draw_lands_in_another_bin_every_time():
    attrs, pool = _attrs(), _attrs(3000, seed=1)
    for seed in range(3):
        do = draw_cfbench(attrs, pool, seed)
        assert set(do) == set(CFBENCH)
        for n in ("thickness", "intensity"):
            edges = cfbench_edges(n)
            assert (to_bins(do[n][n], edges) != to_bins(attrs[n], edges)).all()
            assert np.isin(do[n][n], pool[n]).all()          # a value the test set holds
        assert (do["digit"]["digit"] != attrs["digit"]).all() and set(do["digit"]["digit"]) <= set(range(10))
    a, b = draw_cfbench(attrs, pool, 0), draw_cfbench(attrs, pool, 0)
    assert np.array_equal(a["thickness"]["thickness"], b["thickness"]["thickness"])


def test_bins_are_nine_equal_bins_of_the_benchmark_range():
    e = cfbench_edges("intensity")
    assert len(e) == 10 and np.allclose(np.diff(e), (RANGES["intensity"][1] - RANGES["intensity"][0]) / 9)
    assert np.allclose(to_unit(torch.as_tensor(e), "intensity").numpy(), np.linspace(-1, 1, 10))


def test_judge_scaling_round_trips_and_the_thickness_judge_needs_its_context():
    v = torch.tensor([0.9, 2.5, 6.2])
    assert torch.allclose(from_unit(to_unit(v, "thickness"), "thickness"), v)
    j = Judge({"target": "thickness", "context": ["intensity"]}).eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert j.predict(x, torch.tensor([[100.0], [150.0], [200.0]])).shape == (3,)
    with pytest.raises(ValueError, match="context"):
        j(x)
    assert Judge({"target": "digit"}).eval().predict(x).shape == (3,)


def test_cfbench_end_to_end_on_a_tiny_scm(monkeypatch, capsys, tmp_path, tiny_morpho_scm):
    """Random tiny models on a 10k-image test folder: every column present, sane ranges, the published rows."""
    rng = np.random.default_rng(0)
    t, i = mm.sample_attributes(10000, rng)
    d = tmp_path / "mm"
    d.mkdir()
    np.save(d / "test-images.npy", rng.integers(0, 256, (10000, 28, 28)).astype(np.uint8))
    mm.write_attributes_csv(d / "test-attributes.csv", rng.integers(0, 10, 10000), t, i)
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", tiny_morpho_scm, "--protocol", "cfbench", "--data-dir", d,
                  "--n", 4, "--seeds", "0", "--comp-n", 2, "--method", "diffscm", "--method", "cvae", "--n-boot", 20,
                  "--cache", tmp_path / "cache", "--quiet", "--json", tmp_path / "r.json", "--report", tmp_path / "rep")
    assert res.code == 0, res.err
    data = json.loads((tmp_path / "r.json").read_text())
    for name in ("diffscm", "cvae"):
        r = data["results"][name]
        for kind in CFBENCH:
            m = r["interventions"][kind]
            assert 0 <= m["digit_accuracy"]["mean"] <= 1 and m["thickness_mae"]["mean"] >= 0
            assert ("true_cf_mae" in m) == (kind != "digit")
            assert m["cld"]["ci_low"] <= m["cld"]["mean"] + 1e-9 <= m["cld"]["ci_high"] + 2e-9
        assert r["composition_l1_10"]["n"] == 2
    text = (tmp_path / "rep" / "index.md").read_text()
    assert "HVAE (published)" in text and "| diffscm |" in text


def test_cfbench_bad_inputs(monkeypatch, capsys, tmp_path, tiny_morpho_scm, tiny_scm):
    from test_cli import assert_one_line_error

    base = ["evaluate", "--protocol", "cfbench", "--json", tmp_path / "r.json", "--n", 4]
    assert_one_line_error(run_cli(monkeypatch, capsys, *base, "--model", tiny_morpho_scm), "--data-dir")
    assert_one_line_error(run_cli(monkeypatch, capsys, *base, "--model", tiny_scm, "--data-dir", tmp_path), "Morpho-MNIST")
    assert_one_line_error(run_cli(monkeypatch, capsys, *base, "--model", tiny_morpho_scm, "--data-dir", tmp_path,
                                  "--method", "prototype"), "prototype")
    assert not (tmp_path / "r.json").exists()
