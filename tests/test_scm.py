"""Graph validation, per-sample do(), the three named steps and batching of SCM.counterfactual."""
from __future__ import annotations

import json

import pytest
import torch

from diffscm.errors import DiffSCMError
from diffscm.scm.graph import CausalGraph
from diffscm.scm import SCM, abduct, act, predict


def graph(*variables):
    return CausalGraph.from_dict({"variables": list(variables)})


def test_graph_validation_errors():
    d = {"name": "digit", "kind": "categorical", "num_classes": 10}
    with pytest.raises(DiffSCMError, match="cycle"):
        graph({"name": "a", "kind": "continuous", "parents": ["b"]}, {"name": "b", "kind": "continuous", "parents": ["a"]})
    with pytest.raises(DiffSCMError, match="unknown kind"):
        graph({"name": "a", "kind": "ordinal"})
    with pytest.raises(DiffSCMError, match="unknown parent"):
        graph(d, {"name": "image", "kind": "image", "parents": ["colour"]})
    with pytest.raises(DiffSCMError, match="needs at least one parent"):
        graph(d, {"name": "image", "kind": "image"})
    with pytest.raises(DiffSCMError, match="num_classes"):
        graph({"name": "digit", "kind": "categorical"})
    with pytest.raises(DiffSCMError, match="declared twice"):
        graph(d, d)
    with pytest.raises(DiffSCMError, match="malformed"):
        CausalGraph.from_dict({"variables": [{"kind": "image"}]})


def test_class_names_of_a_categorical_variable():
    pet = {"name": "pet", "kind": "categorical", "num_classes": 3, "categories": ["tabby", "golden retriever", "Ara"]}
    g = graph(pet, {"name": "image", "kind": "image", "parents": ["pet"]})
    v = g.variables["pet"]
    assert [v.class_index(s) for s in ("golden_retriever", "GOLDEN retriever", "ara", "tabby", "dog", "1")] == \
           [1, 1, 2, 0, None, None]
    assert CausalGraph.from_dict(g.to_dict()).variables == g.variables
    for bad in (["a", "b"], ["a", "b", "A"], ["a", "b", " "]):
        with pytest.raises(DiffSCMError, match="categories must be 3 distinct names"):
            graph({**pet, "categories": bad})
    with pytest.raises(DiffSCMError, match="categories must be"):
        graph({"name": "t", "kind": "continuous", "low": 0, "high": 1, "categories": ["a", "b"]})


def test_topological_order_and_descendants():
    g = graph({"name": "image", "kind": "image", "parents": ["thickness", "intensity", "digit"]},
              {"name": "intensity", "kind": "continuous", "parents": ["thickness"], "low": 0, "high": 255},
              {"name": "thickness", "kind": "continuous", "low": 0, "high": 10},
              {"name": "digit", "kind": "categorical", "num_classes": 10})
    order = g.topological_order()
    assert order.index("thickness") < order.index("intensity") < order.index("image")
    assert g.descendants(["thickness"]) == {"intensity", "image"}
    assert g.descendants(["digit"]) == {"image"}
    assert CausalGraph.from_dict(g.to_dict()).variables == g.variables
    with pytest.raises(DiffSCMError, match=r"\[0, 10\]"):
        g.variables["thickness"].check_value(11)


def test_graph_from_json_file(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"variables": [{"name": "digit", "kind": "categorical", "num_classes": 10},
                                           {"name": "image", "kind": "image", "parents": ["digit"]}]}))
    assert CausalGraph.from_json(p).image.name == "image"
    p.write_text("{nope")
    with pytest.raises(DiffSCMError, match="not valid JSON"):
        CausalGraph.from_json(p)


@pytest.fixture(scope="module")
def scm(tiny_scm):
    return SCM.from_pretrained(tiny_scm)


def test_act_is_per_sample(scm):
    obs = {"image": torch.zeros(4, 1, 28, 28), "digit": torch.tensor([1, 2, 3, 4])}
    noise = abduct(scm, obs, scm.options(steps=2))
    values = act(scm, obs, noise, {"digit": torch.tensor([9, 0, 3, 7])})
    assert values["digit"].tolist() == [9, 0, 3, 7]
    assert act(scm, obs, noise, {})["digit"].tolist() == [1, 2, 3, 4]


def test_three_steps_equal_counterfactual_and_batching_is_invisible(scm):
    torch.manual_seed(0)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    digits, targets = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5, 6, 7, 8, 9])
    opts = scm.options(steps=3, batch_size=5)
    obs = {"image": x, "digit": digits}
    manual = predict(scm, abduct(scm, obs, opts), act(scm, obs, abduct(scm, obs, opts), {"digit": targets}), opts)
    full = scm.counterfactual(obs, {"digit": targets}, opts, progress=False)
    split = scm.counterfactual(obs, {"digit": targets}, scm.options(steps=3, batch_size=2), progress=False)
    assert torch.allclose(manual, full["image"], atol=1e-6)
    assert torch.allclose(full["image"], split["image"], atol=1e-3)  # float noise of other BLAS batch shapes
    assert full["digit"].tolist() == targets.tolist()


def test_guidance_changes_only_with_scale(scm):
    torch.manual_seed(1)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    obs = {"image": x, "digit": torch.tensor([0, 1, 2])}
    do = {"digit": torch.tensor([7, 7, 7])}
    a = scm.counterfactual(obs, do, scm.options(steps=3, scale=0.0), progress=False)["image"]
    b = scm.counterfactual(obs, {}, scm.options(steps=3, scale=0.0), progress=False)["image"]
    c = scm.counterfactual(obs, do, scm.options(steps=3, scale=5.0), progress=False)["image"]
    assert torch.allclose(a, b)  # s = 0: the target is irrelevant
    assert not torch.allclose(a, c)


def test_counterfactual_input_errors(scm):
    x = torch.zeros(2, 1, 28, 28)
    ok = {"image": x, "digit": torch.tensor([1, 2])}
    with pytest.raises(DiffSCMError, match="shape"):
        scm.counterfactual({"image": torch.zeros(2, 28, 28), "digit": torch.tensor([1, 2])}, {}, progress=False)
    with pytest.raises(DiffSCMError, match="NaN"):
        scm.counterfactual({"image": torch.full((2, 1, 28, 28), float("nan")), "digit": torch.tensor([1, 2])}, {},
                           progress=False)
    with pytest.raises(DiffSCMError, match=r"\[-1, 1\]"):
        scm.counterfactual({"image": x + 5, "digit": torch.tensor([1, 2])}, {}, progress=False)
    with pytest.raises(DiffSCMError, match="unknown variable 'colour'"):
        scm.counterfactual(ok, {"colour": torch.tensor([1, 1])}, progress=False)
    with pytest.raises(DiffSCMError, match="0..9"):
        scm.counterfactual(ok, {"digit": torch.tensor([1, 10])}, progress=False)
    with pytest.raises(DiffSCMError, match="missing"):
        scm.counterfactual({"image": x}, {}, progress=False)
    with pytest.raises(DiffSCMError, match="3 values for 2 images"):
        scm.counterfactual(ok, {"digit": torch.tensor([1, 2, 3])}, progress=False)
