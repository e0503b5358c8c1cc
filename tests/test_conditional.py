"""The parent-conditioned image mechanism, its training recipe, exact abduction through the SCM, and the
``counterfactual`` options that go with them (``--null``, ``--do-file``, ``--inversion``, ``--mechanism``, ``--w``,
``values.csv``)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from diffscm.train import loop as tr
from diffscm.data import to_model_range
from diffscm.errors import DiffSCMError
from diffscm.scm.mechanisms import InferenceOptions
from diffscm.models import DiffusionModel
from diffscm.scm import SCM, abduct, act, predict

from conftest import TINY_UNET
from test_cli import assert_user_error, cf_args, load_npz, run_cli, split_images, write_png, digit_like

torch.set_num_threads(1)

PARENTS = [{"name": "digit", "kind": "categorical", "num_classes": 10},
           {"name": "thickness", "kind": "continuous", "low": 0.5, "high": 7.0}]


# --------------------------------------------------------------------------- the model and its training recipe

def test_null_token_dropout_rates_per_parent_and_jointly():
    y = torch.zeros(200_000, 3)
    p, p_all = 0.3, 0.1
    d = torch.isnan(tr.drop_parents(y, p, p_all, torch.Generator().manual_seed(0)))
    per_parent = d.float().mean(0)
    expected = p_all + (1 - p_all) * p                                 # dropped alone or with all the others
    assert torch.allclose(per_parent, torch.full((3,), expected), atol=0.004), per_parent
    all_dropped = d.all(1).float().mean().item()
    assert abs(all_dropped - (p_all + (1 - p_all) * p ** 3)) < 0.003
    # independent across parents apart from the joint drop: P(0 and 1 dropped) = p_all + (1 − p_all)·p²
    both = (d[:, 0] & d[:, 1]).float().mean().item()
    assert abs(both - (p_all + (1 - p_all) * p * p)) < 0.003
    assert not torch.isnan(tr.drop_parents(y, 0.0, 0.0, torch.Generator().manual_seed(0))).any()


def test_parent_embedding_starts_at_zero_and_nan_is_the_null_token():
    torch.manual_seed(0)
    model = DiffusionModel({"unet": TINY_UNET, "parents": PARENTS}).eval()
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([10, 200, 500, 900])
    y = torch.tensor([[3.0, 2.0], [7.0, float("nan")], [float("nan"), 6.5], [float("nan"), float("nan")]])
    with torch.no_grad():
        # zero-initialised output layer: a fresh model ignores its parents (fine-tuning starts as the unconditional net)
        torch.testing.assert_close(model(x, t, y), model(x, t))
        torch.nn.init.normal_(model.parent_embedding.out[1].weight)
        e = model(x, t, y)
        assert torch.equal(model(x, t), model(x, t, torch.full((4, 2), float("nan"))))   # None = every parent ∅
        assert not torch.allclose(e, model(x, t))
        y2 = y.clone()
        y2[1, 1] = 3.0          # setting a null parent changes that sample only
        e2 = model(x, t, y2)
        assert not torch.allclose(e2[1], e[1]) and torch.equal(e2[[0, 2, 3]], e[[0, 2, 3]])


def test_parent_conditioned_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = DiffusionModel({"unet": TINY_UNET, "parents": PARENTS})
    torch.nn.init.normal_(model.parent_embedding.out[1].weight)
    model.save_pretrained(tmp_path / "d")
    back = DiffusionModel.from_pretrained(tmp_path / "d")
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([5, 600]), torch.tensor([[1.0, 3.0], [float("nan"), 0.5]])
    with torch.no_grad():
        assert torch.equal(model.eval()(x, t, y), back(x, t, y))
    assert back.parent_names == ["digit", "thickness"]


def test_bad_parent_specs():
    with pytest.raises(ValueError, match="support"):
        DiffusionModel({"unet": TINY_UNET, "parents": [{"name": "a", "kind": "continuous"}]})
    with pytest.raises(ValueError, match="not both"):
        DiffusionModel({"unet": TINY_UNET, "num_classes": 10, "parents": PARENTS})


def test_min_snr_weighting_is_min_snr_gamma_over_snr():
    # a model that predicts 0: the per-sample error is mean(ε²), weighted by min(SNR, γ)/SNR
    model = DiffusionModel({"unet": TINY_UNET})
    model.forward = lambda x, t, y=None: torch.zeros_like(x)
    x0 = torch.zeros(4096, 1, 2, 2)
    gamma = 5.0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = tr.diffusion_loss(model, min_snr_gamma=gamma)(x0, torch.zeros(4096), g1)
    t = torch.randint(1000, (4096,), generator=g2)
    eps = torch.randn(x0.shape, generator=g2)
    snr = model.alphas_cumprod[t] / (1 - model.alphas_cumprod[t])
    expected = (eps.pow(2).flatten(1).mean(1) * torch.clamp(snr, max=gamma) / snr).mean()
    torch.testing.assert_close(got, expected)
    plain = tr.diffusion_loss(model)(x0, torch.zeros(4096), torch.Generator().manual_seed(3))
    assert got < plain   # low-t samples (SNR ≫ γ) are down-weighted


def test_cosine_learning_rate_and_auto_ema():
    cfg = tr.TrainConfig(steps=1100, lr=1e-3, warmup=100, lr_schedule="cosine", min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(1e-5) and cfg.lr_at(99) == pytest.approx(1e-3)
    assert cfg.lr_at(100) == pytest.approx(1e-3)
    assert cfg.lr_at(600) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))          # half-way: cos(π/2) = 0
    assert cfg.lr_at(1100) == pytest.approx(1e-4)
    assert tr.TrainConfig(steps=1000, lr=1e-3, warmup=10).lr_at(900) == 1e-3  # constant stays constant
    assert tr.auto_ema_decay(6000) == pytest.approx(1 - 10 / 6000)
    assert tr.auto_ema_decay(100) == 0.99 and tr.auto_ema_decay(10 ** 7) == 0.9999


# --------------------------------------------------------------------------- the conditional mechanism in the SCM

def _observed(scm: SCM, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = to_model_range(torch.randint(0, 256, (n, 28, 28), generator=g).numpy().astype(np.uint8))
    return {"image": x, "digit": torch.arange(n) % 10}


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_exact_null_intervention_returns_the_image(tiny_conditional_scm, steps):
    # (random weights make an ε-function with a huge Lipschitz constant, which amplifies float32 rounding on long
    # grids; the analytic tests check the round trip at any N, and the shipped model's is measured in RESULTS)
    scm = SCM.from_pretrained(tiny_conditional_scm)
    obs = _observed(scm)
    for w in (1.0, 3.0):   # also with a classifier-free weight: abduction inverts the same ε-function
        opts = scm.options(steps=steps, cfg_weights={"digit": w})
        assert scm.image_mechanism.mechanism(opts) == "conditional"
        noise = abduct(scm, obs, opts)
        assert noise.image.shape == (6, steps + 1, 1, 28, 28)
        back = predict(scm, noise, act(scm, obs, noise, {}), opts)
        assert (back - obs["image"]).abs().max() < 1e-3   # float32 rounding, far below one grey level (2/255)
        other = predict(scm, noise, act(scm, obs, noise, {"digit": (obs["digit"] + 1) % 10}), opts)
        assert (other - obs["image"]).abs().max() > 1e-2   # the parents do act on the image


def test_guidance_on_the_intervened_parents_only(tiny_conditional_scm):
    # guidance="intervened": abduction inverts the unguided ε, un-intervened samples decode with it (the image back),
    # intervened ones decode with the weight, exactly as guidance="all" decodes the same latent
    scm = SCM.from_pretrained(tiny_conditional_scm)
    obs = _observed(scm)
    opts = scm.options(steps=3, cfg_weights={"digit": 3.0}, guidance="intervened")
    noise = abduct(scm, obs, opts)
    unguided = scm.options(steps=3, cfg_weights={})
    torch.testing.assert_close(noise.image, abduct(scm, obs, unguided).image, rtol=0, atol=0)
    do = torch.where(torch.arange(6) % 2 == 0, (obs["digit"] + 1) % 10, obs["digit"])
    out = predict(scm, noise, act(scm, obs, noise, {"digit": do}), opts)
    kept = torch.arange(6) % 2 == 1
    assert (out[kept] - obs["image"][kept]).abs().max() < 1e-3
    guided_all = predict(scm, noise, {"digit": do}, scm.options(steps=3, cfg_weights={"digit": 3.0}))
    # same decoding, batched differently (N + 3 rows instead of 2N): equal up to float rounding, which the random
    # tiny weights amplify
    torch.testing.assert_close(out[~kept], guided_all[~kept], rtol=0, atol=1e-3)
    assert (out[~kept] - predict(scm, noise, {"digit": do}, unguided)[~kept]).abs().max() > 1e-3
    with pytest.raises(DiffSCMError, match="factual parent values"):
        scm.image_mechanism.predict(noise.image, {"digit": do}, opts)
    with pytest.raises(DiffSCMError, match="guidance"):
        InferenceOptions(guidance="some")


def test_guidance_on_every_parent_of_the_samples_with_a_change():
    # guidance="changed": abduction unguided (as "intervened"), so the null intervention round-trips; on a sample with
    # any changed parent every parent's weight acts (as "all" decodes it), elsewhere none
    from diffscm.scm.mechanisms import DiffusionImageMechanism

    torch.manual_seed(0)
    model = DiffusionModel({"unet": TINY_UNET, "parents": PARENTS}).eval()
    torch.nn.init.normal_(model.parent_embedding.out[1].weight, std=0.5)
    mech = DiffusionImageMechanism(model, {})
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    fact = {"digit": torch.tensor([1, 2, 3, 4]), "thickness": torch.tensor([2.0, 3.0, 4.0, 5.0])}
    cf = {"digit": torch.tensor([5, 2, 3, 6]), "thickness": torch.tensor([2.0, 6.0, 4.0, 1.0])}  # d, t, none, both
    kw = dict(steps=3, inversion="exact", inversion_iters=1, clip=False, cfg_weights={"digit": 3.0, "thickness": 2.0})
    changed, intervened = InferenceOptions(guidance="changed", **kw), InferenceOptions(guidance="intervened", **kw)
    u = mech.abduct(x, changed, parents=fact)
    torch.testing.assert_close(u, mech.abduct(x, intervened, parents=fact), rtol=0, atol=0)
    assert changed.abduction_key() == intervened.abduction_key()                      # one latent serves both
    assert (mech.predict(u, fact, changed, factual=fact) - x).abs().max() < 1e-3    # the null intervention
    out = mech.predict(u, cf, changed, factual=fact)
    assert (out[2] - x[2]).abs().max() < 1e-3                                       # nothing changed: the image
    every = mech.predict(u, cf, InferenceOptions(**kw))                             # every weight on every sample
    torch.testing.assert_close(out[[0, 1, 3]], every[[0, 1, 3]], rtol=0, atol=1e-3)
    # the thickness-only change: "intervened" leaves the digit's weight off there, "changed" turns it on
    only = mech.predict(u, cf, intervened, factual=fact)
    assert (out[1] - only[1]).abs().max() > 1e-3
    torch.testing.assert_close(out[3], only[3], rtol=0, atol=1e-3)                   # both changed: the same
    with pytest.raises(DiffSCMError, match="factual parent values"):
        mech.predict(u, cf, changed)


def test_paper_mechanism_guides_only_the_intervened_samples(tiny_scm):
    scm = SCM.from_pretrained(tiny_scm)
    obs = _observed(scm)
    opts = scm.options(steps=3, scale=5.0, inversion="exact", inversion_iters=1, clip=False, guidance="intervened")
    noise = abduct(scm, obs, opts)
    back = predict(scm, noise, act(scm, obs, noise, {}), opts)
    assert (back - obs["image"]).abs().max() < 1e-3        # null intervention: unguided both ways
    do = (obs["digit"] + 1) % 10
    moved = predict(scm, noise, {"digit": do}, opts)
    assert (moved - obs["image"]).abs().max() > 1e-3        # the predictor's gradient acts where the digit changes


def test_conditional_mechanism_needs_factual_parents_and_a_conditional_model(tiny_conditional_scm, tiny_scm):
    scm = SCM.from_pretrained(tiny_conditional_scm)
    with pytest.raises(DiffSCMError, match="factual parents"):
        scm.image_mechanism.abduct(torch.zeros(2, 1, 28, 28), scm.options())
    paper = SCM.from_pretrained(tiny_scm)
    with pytest.raises(DiffSCMError, match="parent-conditioned"):
        paper.image_mechanism.mechanism(paper.options(mechanism="conditional"))
    with pytest.raises(DiffSCMError, match="eta"):
        InferenceOptions(inversion="exact", clip=False, eta=0.5)
    with pytest.raises(DiffSCMError, match="inversion"):
        InferenceOptions(inversion="newton")


def test_paper_mechanism_on_the_conditional_model_uses_the_null_token(tiny_conditional_scm):
    scm = SCM.from_pretrained(tiny_conditional_scm)
    obs = _observed(scm, n=4)
    opts = scm.options(mechanism="paper", steps=4)
    noise = abduct(scm, obs, opts)
    a = predict(scm, noise, {"digit": torch.full((4,), 3)}, opts)
    b = predict(scm, noise, {"digit": torch.full((4,), 8)}, opts)
    assert torch.equal(a, b)   # scale 0 and no conditioning: the parents cannot act
    assert (a - obs["image"]).abs().max() < 1e-3   # float32 rounding (its size depends on the CPU's kernels)
    # in float64 the round trip is exact to rounding: the null token's ε is inverted, not merely approximated
    scm.image_mechanism.diffusion.double()
    obs64 = {**obs, "image": obs["image"].double()}
    a64 = predict(scm, abduct(scm, obs64, opts), {"digit": torch.full((4,), 3)}, opts)
    assert a64.dtype == torch.float64 and (a64 - obs64["image"]).abs().max() < 1e-10


def test_act_per_sample_interventions_with_nan(tiny_morpho_scm):
    scm = SCM.from_pretrained(tiny_morpho_scm)
    n = 4
    obs = {"image": torch.zeros(n, 1, 28, 28), "digit": torch.tensor([1, 2, 3, 4]),
           "thickness": torch.tensor([1.5, 2.0, 3.0, 4.0]), "intensity": torch.tensor([100.0, 150.0, 200.0, 250.0])}
    from diffscm.scm import abduct_attributes, Exogenous

    noise = Exogenous(abduct_attributes(scm, obs), torch.zeros(n, 1, 28, 28))
    do = {"thickness": torch.tensor([float("nan"), 5.0, float("nan"), 2.5])}
    v = act(scm, obs, noise, do)
    assert torch.equal(v["thickness"][[0, 2]], obs["thickness"][[0, 2]])
    assert torch.equal(v["intensity"][[0, 2]], obs["intensity"][[0, 2]])       # nothing upstream moved
    assert v["thickness"][1] == 5.0 and v["thickness"][3] == 2.5
    moved = act(scm, obs, noise, {"thickness": torch.tensor([5.0, 5.0, 5.0, 2.5])})["intensity"]
    torch.testing.assert_close(v["intensity"][[1, 3]], moved[[1, 3]])           # descendants recomputed per sample
    assert not torch.allclose(v["intensity"][[1, 3]], obs["intensity"][[1, 3]])


# --------------------------------------------------------------------------- CLI: --null, --do-file, values.csv

def _csv(path, rows):
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cli_null_exact_returns_the_images_and_writes_values(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path):
    out = tmp_path / "null"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--index", "0:5", "--null"))
    assert res.code == 0, res
    z = load_npz(out)
    assert np.abs(z["factual"].astype(int) - z["counterfactual"]).max() <= 1
    assert (z["digit"] == z["target"]).all()
    rows = list(csv.DictReader(open(out / "values.csv")))
    x_test, y_test = split_images(idx_dir)
    assert [int(r["index"]) for r in rows] == list(range(5))
    assert [int(r["digit"]) for r in rows] == list(y_test[:5]) == [int(r["digit_cf"]) for r in rows]


def test_cli_do_file_per_image_interventions(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path):
    f = _csv(tmp_path / "do.csv", ["index,digit", "7,3", "2,", "11,random", "4,9"])
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--do-file", f))
    assert res.code == 0, res
    z = load_npz(out)
    x_test, y_test = split_images(idx_dir)
    assert (z["factual"] == x_test[[7, 2, 11, 4]]).all()
    assert z["target"][0] == 3 and z["target"][1] == y_test[2] and z["target"][3] == 9
    assert z["target"][2] != y_test[11]
    # the image with an empty cell is not intervened on: its counterfactual is its null intervention
    assert np.abs(z["factual"][1].astype(int) - z["counterfactual"][1]).max() <= 1
    rows = list(csv.DictReader(open(out / "values.csv")))
    assert [r["index"] for r in rows] == ["7", "2", "11", "4"] and rows[0]["digit_cf"] == "3"


def test_cli_do_file_with_image_files(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path):
    a, b = write_png(tmp_path / "a.png", digit_like(seed=1)), write_png(tmp_path / "b.png", digit_like(seed=2))
    f = _csv(tmp_path / "do.csv", ["file,digit", "b.png,5", f"{a},"])
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--image", a, "--image", b,
                                                 "--observed", "digit=1", "--do-file", f))
    assert res.code == 0, res
    rows = list(csv.DictReader(open(out / "values.csv")))
    assert [r["file"] for r in rows] == [str(b), str(a)]
    assert [r["digit_cf"] for r in rows] == ["5", "1"]


@pytest.mark.parametrize("rows,keywords", [
    (["index,digit", "0,3", "1,eleven"], ["row 2", "column digit", "eleven"]),
    (["index,digit", "0,12"], ["row 1", "column digit", "0..9"]),
    (["index,digit", "x,3"], ["row 1", "column index", "integer"]),
    (["index,digit", "0,3", "99,3"], ["row 2", "column index", "out of range"]),
    (["index,colour", "0,3"], ["colour", "not a variable"]),
    (["idx,digit", "0,3"], ["index"]),
    (["index,digit", "0,3,4"], ["row 1", "3 cells"]),
    (["index,digit"], ["no data rows"]),
])
def test_cli_do_file_bad_cells(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path, rows, keywords):
    f = _csv(tmp_path / "do.csv", rows)
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--do-file", f))
    assert_user_error(res, out, *keywords)


@pytest.mark.parametrize("extra,keywords", [
    (["--null", "--do", "digit=3"], ["exactly one"]),
    ([], ["exactly one"]),
    (["--null", "--inversion", "newton"], ["inversion", "newton"]),
    (["--null", "--mechanism", "magic"], ["mechanism", "magic"]),
    (["--null", "--abduction", "sometimes"], ["abduction", "sometimes"]),
    (["--null", "--guidance", "sometimes"], ["guidance", "sometimes"]),
    (["--null", "--w", "colour=2"], ["colour", "no parent of the ε-model"]),
    (["--null", "--inversion", "bdia", "--steps", "1"], ["2 steps"]),
])
def test_cli_bad_new_options(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path, extra, keywords):
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--index", "0:2", *extra))
    assert_user_error(res, out, *keywords)


def test_cli_do_file_missing(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--do-file", tmp_path / "no.csv"))
    assert_user_error(res, out, "does not exist")


def test_cli_do_file_excludes_index(monkeypatch, capsys, tiny_conditional_scm, idx_dir, tmp_path):
    f = _csv(tmp_path / "do.csv", ["index,digit", "0,3"])
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_conditional_scm, idx_dir, out, "--do-file", f, "--index", "0:2"))
    assert_user_error(res, out, "--index")


def test_cli_mechanism_paper_on_a_paper_scm_with_fixed_point(monkeypatch, capsys, tiny_scm, idx_dir, tmp_path):
    out = tmp_path / "out"
    res = run_cli(monkeypatch, capsys, *cf_args(tiny_scm, idx_dir, out, "--index", "0:3", "--null", "--mechanism",
                                                 "paper", "--inversion", "fixed-point", "--inversion-iters", "2",
                                                 "--scale", "0", "--no-clip", "--abduction", "null"))
    assert res.code == 0, res
    opts = __import__("json").loads((out / "options.json").read_text())["options"]
    assert opts["inversion"] == "fixed-point" and opts["inversion_iters"] == 2 and opts["mechanism"] == "paper"
    assert opts["abduction"] == "null"


def test_pack_both_mechanisms_with_their_own_defaults(monkeypatch, capsys, tiny_conditional_scm, tmp_path):
    out = tmp_path / "packed"
    res = run_cli(monkeypatch, capsys, "pack", "--out", out, "--diffusion", tiny_conditional_scm / "diffusion",
                  "--predictor", tiny_conditional_scm / "predictor", "--oracle", tiny_conditional_scm / "oracle",
                  "--steps", "5", "--no-clip", "--inversion", "exact", "--inversion-iters", "1", "--w", "2",
                  "--mechanism-default", "paper:scale=4", "--mechanism-default", "paper:steps=10",
                  "--mechanism-default", "paper:inversion=exact", "--guidance", "intervened",
                  "--mechanism-default", "paper:guidance=all")
    assert res.code == 0, res     # checked on top of the pack's --no-clip, which exact inversion needs
    scm = SCM.from_pretrained(out)
    cond, paper = scm.options(), scm.options(mechanism="paper")
    assert scm.image_mechanism.mechanism(cond) == "conditional" and cond.cfg_weights == {"digit": 2.0}
    assert (cond.steps, cond.inversion, cond.inversion_iters, cond.scales) == (5, "exact", 1, {})
    assert (paper.steps, paper.inversion, paper.scales) == (10, "exact", {"digit": 4.0})
    assert (cond.guidance, paper.guidance) == ("intervened", "all")
    assert scm.options(mechanism="paper", steps=3).steps == 3          # explicit options still win
    bad = tmp_path / "bad"
    res = run_cli(monkeypatch, capsys, "pack", "--out", bad, "--diffusion", tiny_conditional_scm / "diffusion",
                  "--predictor", tiny_conditional_scm / "predictor", "--mechanism-default", "paper:warp=3")
    assert_user_error(res, bad, "warp")
    res = run_cli(monkeypatch, capsys, "pack", "--out", bad, "--diffusion", tiny_conditional_scm / "diffusion",
                  "--predictor", tiny_conditional_scm / "predictor", "--no-clip", "--mechanism-default",
                  "paper:inversion=exact", "--mechanism-default", "paper:clip=true")
    assert_user_error(res, bad, "clip")
    res = run_cli(monkeypatch, capsys, "pack", "--out", bad, "--diffusion", tiny_conditional_scm / "diffusion",
                  "--predictor", tiny_conditional_scm / "predictor", "--mechanism-default", "paper:guidance=some")
    assert_user_error(res, bad, "guidance")
    per_parent = tmp_path / "per-parent"
    res = run_cli(monkeypatch, capsys, "pack", "--out", per_parent, "--diffusion", tiny_conditional_scm / "diffusion",
                  "--predictor", tiny_conditional_scm / "predictor", "--mechanism-default", 'paper:scales={"digit": 6}')
    assert res.code == 0, res
    assert SCM.from_pretrained(per_parent).options(mechanism="paper").scales == {"digit": 6.0}
    res = run_cli(monkeypatch, capsys, "pack", "--out", bad, "--diffusion", tiny_conditional_scm / "diffusion",
                  "--predictor", tiny_conditional_scm / "predictor", "--mechanism-default", 'paper:scales={"hue": 2}')
    assert_user_error(res, bad, "scales")
