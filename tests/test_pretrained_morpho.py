"""The shipped Morpho-MNIST SCM on regenerated test digits (needs the MNIST cache; `make test` fetches it first)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffscm.data import from_model_range, load_mnist, to_model_range
from diffscm.data import morphomnist as mm
from diffscm.scm import SCM, Exogenous, abduct_attributes, act

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def scm():
    return SCM.from_pretrained("morphomnist")


@pytest.fixture(scope="module")
def world():
    x_src, y = load_mnist("test")
    n = 16
    t, i = mm.sample_attributes(n, np.random.default_rng(123))
    x = mm.render_batch(x_src[:n], t, i, workers=1)
    return x, {"digit": y[:n].astype(np.int64), "thickness": t, "intensity": i}, x_src[:n]


def test_shipped_folder_is_complete(scm):
    assert scm.graph.image.parents == ("digit", "thickness", "intensity")
    assert set(scm.image_mechanism.predictors) == {"digit", "thickness", "intensity"}
    assert set(scm.oracles) == {"digit", "thickness", "intensity"}
    for part in ("diffusion", "predictors/thickness", "flows/intensity", "oracles/thickness", "eval/vae", "eval/cvae"):
        assert (scm.path / part / "model.safetensors").exists()
        assert (scm.path / part / "training.json").exists()
    assert (scm.path / "MODEL_CARD.md").exists()


def test_oracles_read_clean_images(scm, world):
    x, a, _ = world
    xt = to_model_range(x)
    with torch.inference_mode():
        assert (scm.oracles["digit"](xt).argmax(1).numpy() == a["digit"]).mean() >= 0.9
        assert np.abs(scm.oracles["thickness"].predict(xt).numpy() - a["thickness"]).mean() < 0.3
        assert np.abs(scm.oracles["intensity"].predict(xt).numpy() - a["intensity"]).mean() < 10


def test_shipped_flows_abduct_exactly_and_follow_the_data_model(scm, world):
    _, a, _ = world
    obs = {"digit": torch.as_tensor(a["digit"]), "thickness": torch.as_tensor(a["thickness"], dtype=torch.float32),
           "intensity": torch.as_tensor(a["intensity"], dtype=torch.float32)}
    noise = Exogenous(abduct_attributes(scm, obs), None)
    same = act(scm, obs, noise, {"thickness": obs["thickness"]})
    assert torch.allclose(same["intensity"], obs["intensity"], atol=1e-3)
    t_new = obs["thickness"] + 1.0
    cf = act(scm, obs, noise, {"thickness": t_new})["intensity"].numpy()
    _, i_true = mm.true_counterfactual_values(a["thickness"], a["intensity"], t_new.numpy())
    assert np.abs(cf - i_true).mean() < 3.0


def test_do_thickness_and_intensity_move_the_measured_attributes(scm, world):
    x, a, _ = world
    obs = {"image": to_model_range(x), "digit": torch.as_tensor(a["digit"]),
           "thickness": torch.as_tensor(a["thickness"], dtype=torch.float32),
           "intensity": torch.as_tensor(a["intensity"], dtype=torch.float32)}
    n = len(x)
    res = scm.counterfactual(obs, {"thickness": torch.full((n,), 5.0), "intensity": torch.full((n,), 100.0)},
                             scm.options(), progress=False)
    m = mm.measure_batch(from_model_range(res["image"]), workers=1)
    base = mm.measure_batch(x, workers=1)
    assert m[:, 0].mean() > base[:, 0].mean() + 0.5          # thicker (the size of the gap is in docs/RESULTS.md)
    assert np.abs(m[:, 1] - 100).mean() < np.abs(base[:, 1] - 100).mean()   # intensity moved towards 100
