"""The shipped evaluation and baseline models on real MNIST test digits (needs the MNIST cache)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffscm.eval.baselines import CVAEMethod, PrototypeMethod, PrototypeParams
from diffscm.eval.protocols.mnist import eval_model_paths
from diffscm.data import load_mnist, to_model_range
from diffscm.eval.basics import classify, random_targets
from diffscm.eval.metrics import gaussian_kl
from diffscm.models import VAE, Classifier
from diffscm.scm import SCM

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def scm():
    return SCM.from_pretrained("mnist")


@pytest.fixture(scope="module")
def paths(scm):
    return eval_model_paths(scm)


@pytest.fixture(scope="module")
def test_split():
    x, y = load_mnist("test")
    return x[:500], y[:500]


def test_vae_posteriors_separate_digits(paths, test_split):
    """CLD's premise: the VAE's KL is smaller between images of the same digit than between different digits."""
    x, y = test_split
    vae = VAE.from_pretrained(paths["vae"])
    with torch.no_grad():
        mu, lv = vae.encode(to_model_range(x[:300]))
    mu, lv = mu.double(), lv.double()
    assert torch.allclose(gaussian_kl(mu, lv, mu, lv), torch.zeros(300, dtype=torch.float64))
    kl = gaussian_kl(mu[:, None], lv[:, None], mu[None], lv[None]).numpy()
    same = y[:300, None] == y[None, :300]
    off = ~np.eye(300, dtype=bool)
    assert np.median(kl[same & off]) < 0.8 * np.median(kl[~same])
    # posteriors are not degenerate: both means and variances carry information
    assert lv.std(0).mean() > 0.01 and mu.std(0).mean() > 0.1


def test_prototype_classifier_is_accurate_and_not_the_oracle(scm, paths, test_split):
    x, y = test_split
    clf = Classifier.from_pretrained(paths["classifier"])
    assert (classify(clf, x) == y).mean() >= 0.97
    assert clf.config["channels"] != scm.oracle.config.get("channels", [32, 64])


def test_cvae_counterfactuals_reach_targets(scm, paths, test_split):
    x, y = test_split
    m = CVAEMethod(VAE.from_pretrained(paths["cvae"]))
    t = random_targets(y[:200], 0)
    cf = m.predict(m.abduct(x[:200], y[:200]), t, seed=0)
    assert (classify(scm.oracle, cf) == t).mean() >= 0.8
    rec = m.predict(m.abduct(x[:200], y[:200]), y[:200], seed=0)
    assert np.abs(rec.astype(float) - x[:200]).mean() < 40  # a blurry but faithful reconstruction on 0–255


def test_prototype_counterfactuals_flip_their_classifier(paths, test_split):
    x, y = test_split
    clf = Classifier.from_pretrained(paths["classifier"])
    xtr, ytr = load_mnist("train")
    m = PrototypeMethod(clf, VAE.from_pretrained(paths["autoencoder"]), xtr[:5000], ytr[:5000],
                        PrototypeParams(iterations=100))
    t = random_targets(y[:32], 1)
    cf = m.predict(m.abduct(x[:32], y[:32]), t, seed=0)
    assert (classify(clf, cf) == t).mean() >= 0.8
    assert np.abs(cf.astype(float) - x[:32]).mean() > 1.0
