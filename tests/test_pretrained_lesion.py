"""The shipped Lesion-MNIST SCM on real MNIST digits with freshly generated lesions (known masks)."""
from __future__ import annotations

import json

import pytest
import torch

from diffscm.data.lesions import lesion_mnist
from diffscm.eval.localize import anomaly_map, healthy_counterfactual, noised_reconstruction, vae_reconstruction
from diffscm.eval.metrics.localization import auroc, average_precision, image_scores

pytestmark = pytest.mark.slow
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def models():
    from diffscm.eval.protocols.lesion import LocalizationModels
    from diffscm.scm import SCM

    return LocalizationModels.from_scm(SCM.from_pretrained("lesion-mnist"))


@pytest.fixture(scope="module")
def data():
    d = lesion_mnist(7, {"val": 40})["val"]          # seed 7: lesions and digits never used in training or tuning
    x = torch.as_tensor(d["images"]).float().unsqueeze(1) / 127.5 - 1
    return x, d["masks"], d["lesion"]


def test_shipped_card_and_defaults(models):
    scm = models.scm
    cfg = json.loads((scm.path / "scm.json").read_text())
    assert cfg["image"]["condition"] == "lesion" and scm.image_mechanism.diffusion.num_classes == 2
    d = scm.defaults
    assert d.steps == 100 and d.ratio == 0.75 and d.cfg_scale == 10.0 and not d.dynamic_norm   # chosen on validation
    assert models.healthy is not None and models.vae is not None
    assert (scm.path / "MODEL_CARD.md").read_text().count("Measured") == 1


def test_implicit_counterfactual_localises_lesions(models, data):
    x, masks, labels = data
    opts = models.scm.options(steps=20)
    x_h = healthy_counterfactual(models.scm.image_mechanism, x, 0, opts)
    m = anomaly_map((x + 1) / 2, (x_h + 1) / 2)
    les = labels == 1
    inside = m[les][masks[les]].mean()
    outside = m[les][~masks[les]].mean()
    # measured at N = 20 (a coarse grid, for speed): inside/outside 10.7, AUPRC 0.22 (chance: 1.4% of pixels), AUROC 0.67
    assert inside > 5 * outside, (inside, outside)
    assert average_precision(m, masks) > 0.12
    assert auroc(image_scores(m), labels) > 0.55


def test_baselines_reconstruct_healthy_digits(models, data):
    x, masks, labels = data
    healthy = labels == 0
    rec = vae_reconstruction(models.vae, x)
    assert (rec - x)[healthy].abs().mean() < 0.12          # measured 0.070
    gen = torch.Generator().manual_seed(0)
    r = noised_reconstruction(models.healthy, x[:8], models.scm.options(steps=20, ratio=0.25), gen)
    assert (r - x[:8]).abs().mean() < 0.12                 # measured 0.065
