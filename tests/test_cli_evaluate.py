"""``diffscm evaluate`` and ``diffscm sweep`` end to end on the tiny SCM and fake IDX data; bad inputs."""
from __future__ import annotations

import json

import pytest

from test_cli import assert_one_line_error, run_cli

METRICS = ("effectiveness", "composition_l1_1", "composition_l1_10", "reversibility_l1", "cld", "fid_oracle",
           "images_per_s")


def _eval(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, *extra):
    return run_cli(monkeypatch, capsys, "evaluate", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 6,
                   "--seeds", "0,1", "--comp-n", 2, "--cache", tmp_path / "cache", "--quiet", "--n-boot", 20,
                   "--proto-iterations", 3, "--fid-reference", 200, *extra)


def test_evaluate_single_method_json_shape(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    res = _eval(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, "--method", "cvae", "--json", tmp_path / "r.json")
    assert res.code == 0, res.err
    data = json.loads((tmp_path / "r.json").read_text())
    for key in METRICS:
        assert {"mean", "ci_low", "ci_high", "per_seed"} <= set(data[key]), key
        assert len(data[key]["per_seed"]) == 2
        assert data[key]["ci_low"] <= data[key]["mean"] + 1e-9 or key == "images_per_s"
    assert data["method"] == "cvae" and data["n"] == 6 and data["composition_l1_10"]["n"] == 2
    assert 0 <= data["effectiveness"]["mean"] <= 1
    assert data["reference"]["fid_oracle_real"] >= 0


def test_evaluate_all_methods_report(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    rep = tmp_path / "report"
    res = _eval(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, "--method", "diffscm", "--method", "cvae",
                "--method", "prototype", "--method", "diffscm-reference", "--steps", 4,
                "--json", tmp_path / "all.json", "--report", rep)
    assert res.code == 0, res.err
    data = json.loads((tmp_path / "all.json").read_text())
    assert [m["method"] for m in data["methods"]] == ["diffscm", "cvae", "prototype", "diffscm-reference"]
    ref = data["methods"][3]["settings"]
    assert (ref["steps"], ref["ratio"], ref["used_steps"], ref["dynamic_norm"]) == (100, 0.75, 75, True)
    text = (rep / "index.md").read_text()
    assert "| method |" in text and "CLD" in text and "metrics.png" in text
    assert (rep / "metrics.png").stat().st_size > 0
    for m in ("diffscm", "cvae", "prototype", "diffscm-reference"):
        assert (rep / f"grid_{m}.png").stat().st_size > 0
    # a rerun reads the cached chunks and gives the same numbers
    res2 = _eval(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, "--method", "cvae", "--json", tmp_path / "again.json")
    assert res2.code == 0, res2.err
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["cld"]["per_seed"] == data["methods"][1]["cld"]["per_seed"]


def test_sweep_writes_plot_grid_and_table(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    rep = tmp_path / "sweep"
    res = run_cli(monkeypatch, capsys, "sweep", "--model", tiny_scm, "--data-dir", idx_dir, "--param", "scale",
                  "--values", "0,2", "--n", 4, "--split", "test", "--report", rep, "--json", tmp_path / "s.json",
                  "--quiet", "--n-boot", 20, "--cache", tmp_path / "cache", "--fid-reference", 200)
    assert res.code == 0, res.err
    data = json.loads((tmp_path / "s.json").read_text())
    assert [r["value"] for r in data["results"]] == [0.0, 2.0]
    assert data["results"][1]["settings"]["scales"] == {"digit": 2.0}
    assert (rep / "sweep_scale.png").stat().st_size > 0 and (rep / "grid_scale.png").stat().st_size > 0
    assert "effectiveness" in (rep / "index.md").read_text()


@pytest.mark.parametrize("args,words", [
    (("--method", "gan"), ("unknown", "gan")),
    (("--method", "cvae", "--method", "cvae"), ("repeats",)),
    (("--seeds", "0,x"), ("--seeds",)),
    (("--seeds", "1,1"), ("repeats",)),
    (("--split", "train"), ("--split",)),
    (("--n", "50"), ("exceeds", "50")),
    (("--steps", "0"), ("steps",)),
])
def test_evaluate_bad_inputs(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, args, words):
    out = tmp_path / "r.json"
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 6,
                  "--json", out, "--quiet", "--no-cache", *args)
    assert_one_line_error(res, *words)
    assert not out.exists()


def test_evaluate_refuses_to_clobber_and_needs_an_output(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 6)
    assert_one_line_error(res, "--json", "--report")
    out = tmp_path / "keep.json"
    out.write_text("{}")
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 6, "--json", out)
    assert_one_line_error(res, "exists", "--overwrite")
    assert out.read_text() == "{}"
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", "mnist-nope", "--json", tmp_path / "x.json")
    assert_one_line_error(res, "mnist-nope")


def test_evaluate_model_without_evaluation_models(monkeypatch, capsys, tmp_path, idx_dir):
    from conftest import make_tiny_scm

    scm = make_tiny_scm(tmp_path / "bare")
    cfg = json.loads((scm / "scm.json").read_text())
    del cfg["evaluation"]
    (scm / "scm.json").write_text(json.dumps(cfg))
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", scm, "--data-dir", idx_dir, "--n", 6,
                  "--json", tmp_path / "x.json", "--quiet")
    assert_one_line_error(res, "evaluation models")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("args,words", [
    (("--param", "eta"), ("--param",)),
    (("--param", "steps", "--values", "2.5"), ("steps", "integers")),
    (("--values", ""), ("--values",)),
    (("--param", "ratio", "--values", "0.5,1.5"), ("ratio",)),
])
def test_sweep_bad_inputs(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path, args, words):
    res = run_cli(monkeypatch, capsys, "sweep", "--model", tiny_scm, "--data-dir", idx_dir, "--n", 4,
                  "--report", tmp_path / "rep", "--quiet", "--no-cache", *args)
    assert_one_line_error(res, *words)
    assert not (tmp_path / "rep").exists()


def test_cache_key_follows_the_weights(tiny_scm):
    """A retrained model packed under the same name must not reuse the cached outputs of the earlier one."""
    import torch

    from diffscm.eval.harness import DiffSCMMethod, _settings_hash, EvalProtocol
    from diffscm.scm import SCM

    scm = SCM.from_pretrained(tiny_scm)
    before = _settings_hash(DiffSCMMethod(scm, scm.options()), EvalProtocol())
    with torch.no_grad():
        next(scm.image_mechanism.diffusion.parameters()).add_(1e-3)
    assert _settings_hash(DiffSCMMethod(scm, scm.options()), EvalProtocol()) != before


def test_selection_judge_is_the_selector_where_shipped(tmp_path):
    from diffscm.eval.protocols.mnist import selection_judge

    paths = {"classifier": tmp_path / "classifier", "selector": tmp_path / "selector"}
    assert selection_judge(paths) == tmp_path / "selector"
    assert selection_judge({"classifier": tmp_path / "classifier"}) == tmp_path / "classifier"
