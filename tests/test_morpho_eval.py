"""Morpho-MNIST evaluation: intervention drawing, true counterfactuals, generation/caching and scoring plumbing."""
from __future__ import annotations

import numpy as np
import pytest

from diffscm.data import load_mnist
from diffscm.data import morphomnist as mm
from diffscm.models import load_model
from diffscm.eval.protocols.morpho import (
    INTERVENTIONS,
    MorphoCVAE,
    MorphoDiffSCM,
    MorphoProtocol,
    MorphoScorer,
    bin_edges,
    counterfactual_attributes,
    draw_values,
    generate_morpho,
    plan,
    score_morpho,
    to_bins,
    true_counterfactuals,
)
from diffscm.scm import SCM


def test_drawn_values_come_from_another_bin():
    rng = np.random.default_rng(0)
    pool = rng.uniform(1, 6, 500)
    fact = rng.uniform(1, 6, 200)
    drawn = draw_values(fact, pool, np.random.default_rng(1))
    e = bin_edges(pool)
    assert len(e) == 10
    assert np.all(to_bins(drawn, e) != to_bins(fact, e))
    assert np.all(np.isin(drawn, pool))


@pytest.fixture(scope="module")
def small_world(tiny_morpho_scm):
    scm = SCM.from_pretrained(tiny_morpho_scm)
    x_src, y = load_mnist("test")
    n = 6
    t, i = mm.sample_attributes(40, np.random.default_rng(0))
    pool = {"thickness": t, "intensity": i}
    attrs = {"digit": y[:n].astype(np.int64), "thickness": t[:n], "intensity": i[:n]}
    x = mm.render_batch(x_src[:n], t[:n], i[:n], workers=1)
    return scm, x, attrs, pool, x_src[:n]


def test_plan_targets_and_truth(small_world):
    scm, x, attrs, pool, _ = small_world
    do, target, truth = plan(scm, attrs, pool, (0,))
    # do(thickness): truth recomputes intensity with the data model; the SCM uses its flow
    assert np.allclose(truth[0]["thickness"]["thickness"], do[0]["thickness"]["thickness"])
    e = mm.intensity_noise(attrs["thickness"], attrs["intensity"])
    assert np.allclose(truth[0]["thickness"]["intensity"], mm.intensity_from_noise(do[0]["thickness"]["thickness"], e))
    assert np.allclose(truth[0]["intensity"]["thickness"], attrs["thickness"])
    assert np.allclose(target[0]["joint"]["intensity"], do[0]["joint"]["intensity"], atol=1e-4)
    same = counterfactual_attributes(scm, attrs, {"thickness": attrs["thickness"]})
    assert np.allclose(same["intensity"], attrs["intensity"], atol=1e-3)


def test_generate_score_and_resume(small_world, tmp_path):
    scm, x, attrs, pool, src = small_world
    proto = MorphoProtocol(n=len(x), seeds=(0,), rev_seeds=(0,), comp_m=(1, 2), comp_n=2, chunk=4)
    _, _, truth = plan(scm, attrs, pool, proto.seeds)
    tcf = true_counterfactuals(src, truth, proto, tmp_path, progress=False, workers=1)
    assert tcf[(0, "thickness")].shape == x.shape
    k = 0
    assert np.array_equal(tcf[(0, "intensity")][k], mm.render(src[k], attrs["thickness"][k], truth[0]["intensity"]["intensity"][k]))
    methods = [MorphoDiffSCM(scm, scm.options(steps=2, batch_size=4)),
               MorphoCVAE(load_model(scm.path / "eval" / "cvae"))]
    scorer = MorphoScorer(scm.oracles, load_model(scm.path / "eval" / "vae"), x, attrs, x, n_boot=20, workers=1)
    for m in methods:
        gen = generate_morpho(m, scm, x, attrs, pool, proto, tmp_path, progress=False)
        assert set(gen.cf) == {(0, k) for k in INTERVENTIONS}
        assert gen.comp[2].shape[0] == 2
        res = score_morpho(gen, scorer, tcf, np.arange(len(x)))
        r = res["interventions"]["joint"]
        for key in ("true_cf_mae", "thickness_mae_measured", "intensity_mae_predicted", "digit_accuracy", "cld",
                    "reversibility_l1", "fid_oracle"):
            assert key in r
        assert r["true_cf_mae"]["n"] == len(x)
        # a rerun reads every chunk back from the cache: identical images
        again = generate_morpho(m, scm, x, attrs, pool, proto, tmp_path, progress=False)
        assert np.array_equal(again.cf[(0, "joint")], gen.cf[(0, "joint")])


def test_generation_cache_is_keyed_by_the_targets(small_world, tmp_path):
    """Targets come from the SCM's flows and the drawn values: other targets must never read cached images."""
    scm, x, attrs, pool, _ = small_world
    proto = MorphoProtocol(n=len(x), seeds=(0,), rev_seeds=(), comp_m=(1,), comp_n=0, chunk=6, protocol="cfbench")
    m = MorphoCVAE(load_model(scm.path / "eval" / "cvae"))
    first = generate_morpho(m, scm, x, attrs, pool, proto, tmp_path, progress=False)
    shifted = {k: v + (0.3 if k == "thickness" else 9.0) for k, v in pool.items()}
    second = generate_morpho(m, scm, x, attrs, shifted, proto, tmp_path, progress=False)
    assert len(list(tmp_path.glob("cvae-*"))) == 2
    tg = second.target[0]["thickness"]
    assert not np.allclose(tg["thickness"], first.target[0]["thickness"]["thickness"])
    assert np.array_equal(second.cf[(0, "thickness")], m.predict(m.abduct(x, attrs), tg, 0))


def test_true_counterfactual_scores_zero_against_itself(small_world):
    _, x, attrs, pool, src = small_world
    from diffscm.eval.metrics import l1_255

    img = mm.render_batch(src, attrs["thickness"], attrs["intensity"], workers=1)
    assert np.all(l1_255(img, x) == 0)
