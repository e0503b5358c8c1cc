"""``diffscm fit``: the plan a graph implies, its size scaling, a whole fit with resume and skip, and the checks of the
data against the graph that run before any training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffscm.data.folder import write_folder
from diffscm.errors import DiffSCMError
from diffscm.models import DiffusionModel
from diffscm.scm.graph import CausalGraph
from diffscm.train import fit as F

from test_cli import assert_user_error, load_npz, run_cli

torch.set_num_threads(1)

GRAPH = {"variables": [
    {"name": "shape", "kind": "categorical", "num_classes": 3},
    {"name": "hue", "kind": "continuous", "low": 0.0, "high": 1.0, "parents": ["shape"]},
    {"name": "size", "kind": "continuous", "parents": []},          # no support: fit takes it from the data
    {"name": "image", "kind": "image", "parents": ["shape", "hue", "size"]},
]}


def make_dataset(root: Path, n_train: int = 24, n_test: int = 8, size: int = 28, seed: int = 0) -> Path:
    """Coloured squares: the shape class sets the position, hue the colour, size the side."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    shape = rng.integers(0, 3, n)
    hue = np.clip(0.2 + 0.3 * shape + 0.05 * rng.standard_normal(n), 0.01, 0.99)
    side = rng.uniform(4, 10, n)
    imgs = np.zeros((n, 3, size, size), np.uint8)
    for k in range(n):
        s, x0 = int(side[k]), 2 + 8 * shape[k]
        imgs[k, :, 8:8 + s, x0:x0 + s] = (np.array([hue[k], 1 - hue[k], 0.5]) * 255).astype(np.uint8)[:, None, None]
    table = {"shape": shape, "hue": hue, "size": side,
             "split": np.array(["train"] * n_train + ["test"] * n_test)}
    return write_folder(root, imgs, table)


def graph_file(tmp: Path, spec: dict = GRAPH) -> Path:
    p = tmp / "graph.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def fit_args(graph: Path, data: Path, out: Path, *extra) -> list:
    return ["fit", graph, "--data-dir", data, "--out", out, "--budget", "quick", "--steps-scale", "0.004",
            "--batch-size", "8", "--device", "cpu", "--quiet", *extra]


# ------------------------------------------------------------------ the plan

def test_plan_follows_the_graph():
    g = CausalGraph.from_dict({**GRAPH, "variables": [
        v if v["name"] != "size" else {**v, "low": 0.0, "high": 20.0} for v in GRAPH["variables"]]})
    cond = F.plan_fit(g, 28, 3, "quick")
    assert [p.name for p in cond.parts] == ["diffusion", "flows/hue", "oracles/shape", "oracles/hue", "oracles/size",
                                            "selection/shape", "selection/hue", "selection/size",
                                            "eval/vae"]           # a root (size) keeps its values: no flow
    paper = F.plan_fit(g, 28, 3, "standard", mechanism="paper")
    assert [p.name for p in paper.parts][:4] == ["diffusion", "predictors/shape", "predictors/hue", "predictors/size"]
    assert not paper.parts[0].config["conditional"] and cond.parts[0].config["conditional"]
    assert paper.parts[0].steps == F.BUDGETS["standard"].diffusion > F.BUDGETS["quick"].diffusion == cond.parts[0].steps
    with pytest.raises(DiffSCMError, match="unknown budget"):
        F.plan_fit(g, 28, 3, "huge")


def test_balancing_weights_hand_computed():
    g = CausalGraph.from_dict({"variables": [
        {"name": "a", "kind": "categorical", "num_classes": 2},
        {"name": "b", "kind": "continuous", "low": 0.0, "high": 1.0, "parents": ["a"]},
        {"name": "image", "kind": "image", "parents": ["a", "b"]}]})
    # cells (a, bin of b): (0, 0), (0, 0), (0, 8), (1, 8); marginals a: 3/4, 1/4; b: 1/2, 1/2
    table = {"a": np.array([0, 0, 0, 1]), "b": np.array([0.0, 0.1, 0.95, 1.0])}
    # (Π marginals / joint): (0, 0): (3/8) / (1/2) = 3/4; (0, 8): (3/8) / (1/4) = 3/2; (1, 8): (1/8) / (1/4) = 1/2
    w = F.balancing_weights(g, table, ["a", "b"], power=1.0)
    np.testing.assert_allclose(w, np.array([0.75, 0.75, 1.5, 0.5]) / 0.875, rtol=1e-12)
    np.testing.assert_allclose(F.balancing_weights(g, table, ["a", "b"], power=0.5),
                               np.sqrt([0.75, 0.75, 1.5, 0.5]) / np.sqrt([0.75, 0.75, 1.5, 0.5]).mean(), rtol=1e-12)
    # parents that are already independent in the data: every weight is 1
    indep = {"a": np.repeat([0, 1], 3), "b": np.tile([0.05, 0.5, 0.99], 2)}
    np.testing.assert_allclose(F.balancing_weights(g, indep, ["a", "b"], power=0.5), np.ones(6), rtol=1e-12)


def test_plan_balances_the_diffusion_only_where_an_image_parent_causes_another():
    g = CausalGraph.from_dict({**GRAPH, "variables": [
        v if v["name"] != "size" else {**v, "low": 0.0, "high": 20.0} for v in GRAPH["variables"]]})
    assert F.plan_fit(g, 28, 3, "quick").parts[0].config["balance"] == F.BALANCE          # shape -> hue
    assert "balance" not in F.plan_fit(g, 28, 3, "quick", mechanism="paper").parts[0].config
    roots = CausalGraph.from_dict({"variables": [{"name": "digit", "kind": "categorical", "num_classes": 10},
                                                 {"name": "lesion", "kind": "categorical", "num_classes": 2},
                                                 {"name": "image", "kind": "image", "parents": ["digit", "lesion"]}]})
    assert "balance" not in F.plan_fit(roots, 64, 1, "standard").parts[0].config
    assert F.plan_fit(roots, 64, 1, "standard", balance=0.3).parts[0].config["balance"] == 0.3      # asked for
    assert "balance" not in F.plan_fit(g, 28, 3, "quick", balance=0.0).parts[0].config              # turned off
    with pytest.raises(DiffSCMError, match="must lie in"):
        F.plan_fit(g, 28, 3, "quick", balance=1.5)
    with pytest.raises(DiffSCMError, match="apply to the conditional mechanism"):
        F.plan_fit(g, 28, 3, "quick", mechanism="paper", balance=0.5)


def test_the_quick_budget_conditions_through_adagn_with_less_parent_dropout(monkeypatch):
    from diffscm.train import loop as tr

    table = {"shape": np.arange(4) % 3, "hue": np.linspace(0.2, 0.8, 4), "size": np.linspace(4.0, 9.0, 4)}
    g = F.complete_graph(CausalGraph.from_dict(GRAPH), table)
    quick, standard = F.plan_fit(g, 28, 3, "quick"), F.plan_fit(g, 28, 3, "standard")
    assert quick.parts[0].config["unet"]["resnet_time_scale_shift"] == "scale_shift"
    assert "resnet_time_scale_shift" not in standard.parts[0].config["unet"]          # additive, as before
    data = F.FitData(Path("."), torch.zeros(4, 3, 28, 28), table, "train", "x")
    seen = []
    monkeypatch.setattr(tr, "diffusion_loss", lambda model, *a: seen.append(a))
    for plan in (quick, standard):
        model = F.build_part(plan.parts[0], plan, data)[0]
        assert model.unet.down_blocks[0].resnets[0].scale_shift == (plan is quick)
    assert seen == [(0.1, 5.0, 0.05), (0.2, 5.0, 0.1)]                 # (p per parent, min-SNR γ, p of all at once)


def test_a_plan_written_before_a_budget_field_existed_still_resumes():
    g = CausalGraph.from_dict(GRAPH)
    key = {**F.plan_fit(g, 28, 3, "standard").key(), "data": "d", "seed": 0}
    old = json.loads(json.dumps(key))
    for name in ("p_parent", "p_all", "scale_shift"):
        del old["budget"][name]
    assert F.plan_change(old, key) is None                             # the fields' defaults were the recipe then
    old["budget"]["p_parent"] = 0.3
    assert F.plan_change(old, key) == "budget"
    assert F.plan_change({**key, "seed": 1}, key) == "seed"
    quick = {**F.plan_fit(g, 28, 3, "quick").key(), "data": "d", "seed": 0}
    assert F.plan_change(old | {"budget": key["budget"]}, quick) == "budget"


@pytest.mark.parametrize("size,levels,bottom", [(28, 3, 7), (32, 3, 8), (64, 4, 8), (128, 5, 8), (256, 5, 16),
                                                (36, 3, 9), (100, 3, 25)])
def test_unet_scales_with_the_image_size(size, levels, bottom):
    cfg = F.unet_config(size, 3)
    assert len(cfg["block_out_channels"]) == levels and size // 2 ** (levels - 1) == bottom
    if size <= 64:   # the model builds and keeps the shape
        m = DiffusionModel({"unet": cfg})
        x = torch.zeros(1, 3, size, size)
        assert m(x, torch.tensor([10])).shape == x.shape


@pytest.mark.parametrize("size", [28, 36, 64, 68, 100, 252, 256])
def test_cld_vae_builds_for_every_allowed_size(size):
    from diffscm.models import VAE

    pool, depth = F.vae_shape(size)
    vae = VAE({"size": size, "input_pool": pool, "channels": [32, 64, 64, 64][:depth], "in_channels": 1})
    mu, _ = vae.encode(torch.zeros(2, 1, size, size))
    assert mu.shape == (2, 16) and torch.isfinite(vae.loss(torch.zeros(2, 1, size, size), None))
    assert sum(p.numel() for p in vae.parameters()) < 25e6


def test_categorical_attribute_with_parents_is_refused(tmp_path):
    spec = {"variables": [{"name": "a", "kind": "categorical", "num_classes": 2},
                          {"name": "b", "kind": "categorical", "num_classes": 2, "parents": ["a"]},
                          {"name": "image", "kind": "image", "parents": ["a", "b"]}]}
    with pytest.raises(DiffSCMError, match="'b' has parents"):
        F.fit_scm(CausalGraph.from_dict(spec), tmp_path / "nodata", tmp_path / "out", progress=False)
    assert not (tmp_path / "out.parts").exists()


def test_graph_mechanism_field():
    g = CausalGraph.from_dict({**GRAPH, "mechanism": "paper"})
    assert g.mechanism == "paper" and CausalGraph.from_dict(g.to_dict()).mechanism == "paper"
    with pytest.raises(DiffSCMError, match="mechanism"):
        CausalGraph.from_dict({**GRAPH, "mechanism": "magic"})
    with pytest.raises(DiffSCMError, match="top-level"):
        CausalGraph.from_dict({**GRAPH, "mechansim": "paper"})


# ------------------------------------------------------------------ a whole fit

def test_fit_packs_a_working_scm_and_resume_skips_finished_parts(tmp_path, monkeypatch, capsys):
    data, out = make_dataset(tmp_path / "data"), tmp_path / "my-scm"
    graph = graph_file(tmp_path)
    res = run_cli(monkeypatch, capsys, *fit_args(graph, data, out))
    assert res.code == 0, res.err
    cfg = json.loads((out / "scm.json").read_text())
    assert set(cfg["oracles"]) == {"shape", "hue", "size"} and set(cfg["attributes"]) == {"hue"}
    size = next(v for v in cfg["graph"]["variables"] if v["name"] == "size")
    from diffscm.data.folder import read_table

    seen = read_table(data)[1]["size"]
    pad = 0.05 * (seen.max() - seen.min())                               # the range of every row, widened by 5%
    assert np.isclose(size["low"], seen.min() - pad) and np.isclose(size["high"], seen.max() + pad)
    card = (out / "MODEL_CARD.md").read_text()
    assert "diffscm fit" in card and "sha256" in card and "oracle `shape`: accuracy" in card
    assert "not tuned: the folder has no `val` rows" in card                  # this folder has train and test only
    assert {p["fit_part"] for p in (json.loads((out / d / "training.json").read_text()) for d in
                                    ("diffusion", "flows/hue", "oracles/size", "eval/vae"))} == \
        {"diffusion", "flows/hue", "oracles/size", "eval/vae"}

    cf = tmp_path / "cf"
    res = run_cli(monkeypatch, capsys, "counterfactual", "--model", out, "--data-dir", data, "--index", "0:3",
                  "--do", "hue=0.6", "--device", "cpu", "--quiet", "--out", cf, "--steps", "2")
    assert res.code == 0, res.err
    z = load_npz(cf)
    assert z["counterfactual"].shape == (3, 3, 28, 28) and np.allclose(z["hue_cf"], 0.6)

    weights = (out / "diffusion" / "model.safetensors").read_bytes()
    res = run_cli(monkeypatch, capsys, *fit_args(graph, data, out))            # neither --resume nor --overwrite
    assert res.code == 2 and "--resume" in res.err
    assert (out / "diffusion" / "model.safetensors").read_bytes() == weights  # nothing already saved is lost
    res = run_cli(monkeypatch, capsys, *fit_args(graph, data, out, "--resume"))
    assert res.code == 0, res.err
    assert res.err.count("done, skipped") == 9
    assert (out / "diffusion" / "model.safetensors").read_bytes() == weights
    res = run_cli(monkeypatch, capsys, *fit_args(graph, data, out, "--resume", "--budget", "standard"))
    assert res.code == 2 and "another budget" in res.err


def test_an_interrupted_part_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    data, out = make_dataset(tmp_path / "data"), tmp_path / "scm"
    g = CausalGraph.from_dict(GRAPH)
    real = F.build_part

    def interrupted(part, plan, d):
        model, loss, x, y = real(part, plan, d)
        calls = []

        def failing(*a):
            calls.append(1)
            if part.what == "diffusion" and len(calls) == 3:
                raise KeyboardInterrupt
            return loss(*a)
        return model, failing, x, y

    kw = dict(budget="quick", steps_scale=4 / F.BUDGETS["quick"].diffusion, batch_size=8, save_every=2, progress=False, log=lambda s: None,
              device="cpu")
    monkeypatch.setattr(F, "build_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        F.fit_scm(g, data, out, **kw)
    state = json.loads((tmp_path / "scm.parts" / "diffusion" / "trainer_state.json").read_text())
    assert state["step"] == 2 and not out.exists()
    monkeypatch.setattr(F, "build_part", real)
    with pytest.raises(DiffSCMError, match="--resume"):
        F.fit_scm(g, data, out, **kw)
    F.fit_scm(g, data, out, resume=True, **kw)
    state = json.loads((tmp_path / "scm.parts" / "diffusion" / "trainer_state.json").read_text())
    assert [(s["start_step"], s["end_step"]) for s in state["segments"]] == [(0, 2), (2, 4)]
    assert (out / "scm.json").exists()


# ------------------------------------------------------------------ the data against the graph

def _edit_labels(root: Path, fn) -> None:
    lines = (root / "labels.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, r.split(","))) for r in lines[1:]]
    header, rows = fn(header, rows)
    (root / "labels.csv").write_text("\n".join([",".join(header)] + [",".join(r[h] for h in header) for r in rows]) + "\n")


def _set(row: int, col: str, value: str):
    def fn(header, rows):
        rows[row][col] = value
        return header, rows
    return fn


@pytest.mark.parametrize("edit,keywords", [
    (lambda h, r: ([c for c in h if c != "hue"], r), ("no column 'hue'", "graph")),
    (_set(3, "shape", "3"), ("shape = 3", "0..2")),
    (_set(3, "shape", "1.5"), ("shape = 1.5", "class")),
    (_set(5, "hue", "1.2"), ("hue = 1.2", "support [0, 1]")),
    (_set(5, "hue", "blue"), ("hue", "not a number")),
])
def test_bad_labels_fail_before_training(tmp_path, monkeypatch, capsys, edit, keywords):
    data, out = make_dataset(tmp_path / "data"), tmp_path / "scm"
    _edit_labels(data, edit)
    res = run_cli(monkeypatch, capsys, *fit_args(graph_file(tmp_path), data, out))
    assert_user_error(res, out, *keywords)
    assert not (tmp_path / "scm.parts").exists()


def test_bad_images_fail_before_training(tmp_path, monkeypatch, capsys):
    graph = graph_file(tmp_path)
    data, out = make_dataset(tmp_path / "data"), tmp_path / "scm"
    other = make_dataset(tmp_path / "other", size=32)
    shutil.copy(other / "images" / "000002.png", data / "images" / "000002.png")
    assert_user_error(run_cli(monkeypatch, capsys, *fit_args(graph, data, out)), out, "000002", "must match")
    small = make_dataset(tmp_path / "small", size=20)
    assert_user_error(run_cli(monkeypatch, capsys, *fit_args(graph, small, out)), out, "20×20", "28 to 256")
    assert_user_error(run_cli(monkeypatch, capsys, *fit_args(graph, other, out, "--budget", "huge")), out, "budget")
    assert_user_error(run_cli(monkeypatch, capsys, *fit_args(graph, other, out, "--balance", "2")), out,
                      "balancing power", "[0, 1]")


def test_evaluate_scores_a_fitted_scm_on_its_folder(tmp_path, monkeypatch, capsys):
    data, out = make_dataset(tmp_path / "data", n_test=12), tmp_path / "scm"
    g = CausalGraph.from_dict(GRAPH)
    F.fit_scm(g, data, out, budget="quick", steps_scale=0.004, batch_size=8, progress=False, log=lambda s: None,
              device="cpu")
    js, report = tmp_path / "r.json", tmp_path / "report"
    args = ["evaluate", "--model", out, "--data-dir", data, "--n", "8", "--seeds", "0,1", "--comp-n", "3", "--rev-n",
            "3", "--steps", "2", "--json", js, "--report", report, "--no-cache", "--device", "cpu", "--quiet"]
    res = run_cli(monkeypatch, capsys, *args)
    assert res.code == 0, res.err
    r = json.loads(js.read_text())
    assert r["split"] == "test" and set(r["results"]["interventions"]) == {"shape", "hue", "size"}
    for kind, m in r["results"]["interventions"].items():
        assert {"shape_accuracy", "hue_mae", "size_mae", "cld", "reversibility_l1", "kid_oracle", "images_per_s"} <= set(m)
        assert 0 <= m["shape_accuracy"]["mean"] <= 1 and m["reversibility_l1"]["n"] == 3 and m["cld"]["seeds"] == 2
        for metric in m.values():
            if np.isfinite(metric.get("ci_low", np.nan)):
                assert metric["ci_low"] - 1e-9 <= metric["mean"] <= metric["ci_high"] + 1e-9   # a CI holds its estimate
    # exact inversion: the null intervention returns the image, so composition is ~0 at m = 1 and m = 10
    assert r["results"]["composition_l1_1"]["mean"] < 1 and r["results"]["composition_l1_10"]["n"] == 3
    assert "do(hue)" in (report / "index.md").read_text()
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", out, "--data-dir", data, "--n", "99", "--json",
                  tmp_path / "r2.json", "--no-cache", "--device", "cpu", "--quiet")
    assert res.code == 2 and "--n 99" in res.err and not (tmp_path / "r2.json").exists()


def test_the_paper_mechanism_fits_predictors_and_runs(tmp_path):
    from diffscm.scm import SCM

    data, out = make_dataset(tmp_path / "data"), tmp_path / "scm"
    g = CausalGraph.from_dict({**GRAPH, "mechanism": "paper"})
    F.fit_scm(g, data, out, budget="quick", steps_scale=0.004, batch_size=8, progress=False, log=lambda s: None,
              device="cpu")
    cfg = json.loads((out / "scm.json").read_text())
    assert set(cfg["image"]["predictors"]) == {"shape", "hue", "size"}
    assert cfg["defaults"]["scales"] == {"shape": 4.0, "hue": 4.0, "size": 4.0}
    scm = SCM.from_pretrained(out)
    assert not scm.image_mechanism.diffusion.parent_names            # unconditional ε-model
    x = torch.rand(2, 3, 28, 28) * 2 - 1
    obs = {"image": x, "shape": torch.tensor([0, 2]), "hue": torch.tensor([0.2, 0.8]), "size": torch.tensor([5.0, 8.0])}
    res = scm.counterfactual(obs, {"shape": torch.tensor([1, 1])}, scm.options(steps=2), progress=False)
    assert res["image"].shape == x.shape and res["shape"].tolist() == [1, 1]
    assert not torch.allclose(res["hue"], obs["hue"])                  # hue, a child of shape, follows its flow


# ------------------------------------------------------------------ defaults chosen on validation images

def test_coordinate_search_by_hand():
    from diffscm.eval.tune import choose

    calls = []

    def error(v):                                    # least at a = 3, b = 1.5; b = 2 within the tie of b = 1.5
        calls.append(dict(v))
        return abs(v["a"] - 3) + (0.0 if v["b"] == 1.5 else 0.005 if v["b"] == 2.0 else 1.0)

    grid = (1.0, 1.5, 2.0, 3.0)
    assert choose(["a", "b"], grid, {"a": 1.0, "b": 2.0}, error, gentle=1.0) == {"a": 3.0, "b": 1.5}
    assert calls[:4] == [{"a": g, "b": 2.0} for g in grid] and calls[4:] == [{"a": 3.0, "b": g} for g in grid]
    # b = 2 ties with b = 1.5 (0.005 < 0.01): the value closest to the gentle end wins, whichever that is
    assert choose(["b"], grid, {"a": 3.0, "b": 1.0}, error, gentle=3.0, tie=0.01)["b"] == 2.0
    assert choose(["b"], grid, {"a": 3.0, "b": 1.0}, error, gentle=3.0, tie=0.001)["b"] == 1.5


def test_the_narrower_guidance_scope_wins_a_tie():
    from diffscm.eval.tune import pick_scope

    assert pick_scope({"intervened": 0.20, "changed": 0.12}) == "changed"
    assert pick_scope({"intervened": 0.125, "changed": 0.12}) == "intervened"      # within 0.01: the narrower
    assert pick_scope({"intervened": 0.125, "changed": 0.12}, tie=0.001) == "changed"
    assert pick_scope({"intervened": 0.10, "changed": 0.12}) == "intervened"


def test_fit_tunes_the_weights_on_val_rows_with_selection_models(tmp_path, monkeypatch, capsys):
    from diffscm.eval import tune as T

    data, out = make_dataset(tmp_path / "data", n_test=6), tmp_path / "scm"
    _edit_labels(data, lambda h, r: (h, [{**row, "split": "val" if k >= 24 else row["split"]} for k, row in enumerate(r)]))
    monkeypatch.setattr(T, "GRID", {"conditional": (1.0, 3.0), "paper": (0.0, 4.0)})
    real_defaults = F.default_options
    monkeypatch.setattr(F, "default_options", lambda plan: {**real_defaults(plan), "steps": 4})   # a short DDIM grid for the 8 settings
    scored = []
    real = T.attribute_errors
    monkeypatch.setattr(T, "attribute_errors", lambda *a: scored.append(1) or real(*a))
    res = run_cli(monkeypatch, capsys, *fit_args(graph_file(tmp_path), data, out))
    assert res.code == 0, res.err
    state = json.loads((tmp_path / "scm.parts" / "tune.json").read_text())
    # per scope: 2 values of the first parent, then one new value each of the other two
    assert state["n"] == 6 and len(state["rows"]) == 8
    assert sorted(r["guidance"] for r in state["rows"]) == ["changed"] * 4 + ["intervened"] * 4
    defaults = json.loads((out / "scm.json").read_text())["defaults"]
    chosen = defaults["cfg_weights"]
    assert chosen == state["chosen"] and set(chosen.values()) <= {1.0, 3.0}
    assert defaults["guidance"] == state["guidance"] == T.pick_scope({s: b["error"] for s, b in state["scopes"].items()})
    assert state["error"] == state["scopes"][state["guidance"]]["error"]
    # 3 interventions per row, but a decoding with the same per-sample weights as an earlier one is read back:
    # (1, 1, 1) decodes the same images in both scopes, and so does do(hue) with the shape's weight changed
    assert all(0 <= r["error"] <= 1 for r in state["rows"]) and len(scored) <= 8 * 3 - 3 - 1
    decoded = len(scored)
    assert "Defaults chosen on validation images" in (out / "MODEL_CARD.md").read_text()
    res = run_cli(monkeypatch, capsys, *fit_args(graph_file(tmp_path), data, out, "--resume"))
    assert res.code == 0, res.err
    assert len(scored) == decoded                                     # every setting read back, none scored again
    assert json.loads((out / "scm.json").read_text())["defaults"]["cfg_weights"] == chosen
    assert (out / "MODEL_CARD.md").read_text().count("Defaults chosen on validation images") == 1

    # the judge's shared decodings are the ones a fresh judge makes
    from diffscm.scm.core import SCM
    scm = SCM.from_pretrained(out, "cpu")
    selectors = {p: tmp_path / "scm.parts" / "selection" / p for p in ("shape", "hue", "size")}
    judge = T.SelectionJudge(scm, data, selectors, 0, 6)
    ones = {"shape": 1.0, "hue": 1.0, "size": 1.0}
    decodings = []
    real_predict = judge.method(scm.options()).__class__.predict
    monkeypatch.setattr(judge.method(scm.options()).__class__, "predict",
                        lambda self, *a, **k: decodings.append(1) or real_predict(self, *a, **k))
    first = judge.errors(scm.options(guidance="intervened", cfg_weights=ones, steps=4))
    assert len(decodings) == 3
    assert judge.errors(scm.options(guidance="changed", cfg_weights=ones, steps=4)) == first and len(decodings) == 3
    shape3 = scm.options(guidance="intervened", cfg_weights={**ones, "shape": 3.0}, steps=4)
    shared = judge.errors(shape3)
    assert len(decodings) == 4                 # do(shape) decoded again; do(hue), do(size) keep the shape: read back
    fresh = T.SelectionJudge(scm, data, selectors, 0, 6).errors(shape3)
    assert fresh == shared and len(decodings) == 7


def test_evaluate_adds_localisation_for_a_lesion_scm_on_a_folder_with_masks(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    n = 36
    digit, lesion = rng.integers(0, 3, n), np.arange(n) % 2
    imgs, masks = np.zeros((n, 1, 28, 28), np.uint8), np.zeros((n, 28, 28), bool)
    imgs[:, 0, 6:22, 10:14] = np.where(digit == 1, 200, 0)[:, None, None]      # a stroke for digit 1
    for k in np.flatnonzero(lesion):
        r, c = rng.integers(2, 22, 2)
        masks[k, r:r + 5, c:c + 5] = True
        imgs[k, 0][masks[k]] = 255
    split = np.array(["train"] * 20 + ["val"] * 8 + ["test"] * 8)
    data = write_folder(tmp_path / "data", imgs, {"digit": digit, "lesion": lesion, "split": split}, masks=masks)
    spec = {"variables": [{"name": "digit", "kind": "categorical", "num_classes": 3},
                          {"name": "lesion", "kind": "categorical", "num_classes": 2},
                          {"name": "image", "kind": "image", "parents": ["digit", "lesion"]}]}
    out, js = tmp_path / "scm", tmp_path / "r.json"
    F.fit_scm(CausalGraph.from_dict(spec), data, out, budget="quick", steps_scale=0.004, batch_size=8,
              progress=False, log=lambda s: None, device="cpu")
    res = run_cli(monkeypatch, capsys, "evaluate", "--model", out, "--data-dir", data, "--n", "6", "--seeds", "0",
                  "--comp-n", "2", "--rev-n", "2", "--steps", "2", "--json", js, "--no-cache", "--device", "cpu",
                  "--quiet")
    assert res.code == 0, res.err
    loc = json.loads(js.read_text())["results"]["localization"]
    assert loc["parent"] == "lesion" and loc["n_val"] == loc["n_test"] == 6
    assert all(0 <= loc[k] <= 1 for k in ("dice", "auprc", "auroc", "val_dice"))
