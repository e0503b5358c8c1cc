"""The shipped MNIST SCM on real MNIST test digits (needs the MNIST cache; `make test` fetches it first)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffscm.data import load_mnist, to_model_range
from diffscm.eval.basics import classify, effectiveness, null_intervention, random_targets
from diffscm.scm import SCM

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def scm():
    return SCM.from_pretrained("mnist")


@pytest.fixture(scope="module")
def test_split():
    return load_mnist("test")


def test_shipped_folder_is_complete(scm):
    for part in ("diffusion", "predictor", "oracle"):
        assert (scm.path / part / "model.safetensors").exists()
        assert (scm.path / part / "training.json").exists()
    assert (scm.path / "MODEL_CARD.md").exists()
    assert scm.graph.image.parents == ("digit",)


def test_oracle_is_accurate(scm, test_split):
    x, y = test_split
    assert (classify(scm.oracle, x[:2000]) == y[:2000]).mean() >= 0.985


def test_predictor_reads_clean_digits(scm, test_split):
    x, y = test_split
    pred = scm.image_mechanism.predictors["digit"]
    with torch.inference_mode():
        p = pred(to_model_range(x[:500]), torch.zeros((), dtype=torch.long)).argmax(1).numpy()
    assert (p == y[:500]).mean() >= 0.95


def test_null_intervention_reconstructs(scm, test_split):
    """Acceptance setting (s=0, N=50, L=1) on 16 images; the 256-image figure is in docs/RESULTS.md."""
    x, y = test_split
    r = null_intervention(scm, x[:16], y[:16], scm.options(steps=50, ratio=1.0, scale=0.0), progress=False)
    assert r["mae"] <= 0.03
    assert (classify(scm.oracle, r["reconstruction"]) == y[:16]).mean() >= 15 / 16


def test_counterfactuals_hit_their_targets(scm, test_split):
    x, y = test_split
    xs, ys = x[100:116], y[100:116]
    t = random_targets(ys, seed=3)
    r = effectiveness(scm, scm.oracle, xs, ys, t, scm.options(steps=20), progress=False)
    assert r["effectiveness"] >= 0.75
    # the counterfactual really differs from the factual
    assert r["l1_change_255"] > 5
    assert np.isfinite(r["images_per_s"])
