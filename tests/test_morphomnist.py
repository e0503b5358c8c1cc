"""Morpho-MNIST: morphometrics against synthetic strokes of known width, perturbations on real digits, the data model,
true counterfactuals, attribute flows, graph validation and joint interventions in the full SCM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffscm.data import load_mnist
from diffscm.data import morphomnist as mm
from diffscm.errors import DiffSCMError
from diffscm.scm.graph import MORPHO_GRAPH, CausalGraph
from diffscm.models import AttributeFlow
from diffscm.scm import SCM, Exogenous, abduct_attributes, act

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "morphomnist"


def _supersampled(mask_fn, size: int = 28, s: int = 8) -> np.ndarray:
    """Anti-aliased image (0–255) of a shape given on a continuous grid centred at the image centre."""
    yy, xx = (np.mgrid[0:size * s, 0:size * s] + 0.5) / s - size / 2
    big = mask_fn(xx, yy).astype(np.float64)
    return big.reshape(size, s, size, s).mean((1, 3)) * 255


def ring(width: float, radius: float = 8.0) -> np.ndarray:
    return _supersampled(lambda x, y: np.abs(np.hypot(x, y) - radius) <= width / 2)


def line(width: float, angle_deg: float, length: float = 22.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)

    def mask(x, y):
        u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        return (np.abs(u) <= width / 2) & (np.abs(v) <= length / 2)
    return _supersampled(mask)


# ------------------------------------------------------------------ morphometrics

@pytest.mark.parametrize("width", [2.0, 3.0, 4.0, 5.0])
def test_thickness_of_a_ring_of_known_width(width):
    assert mm.measure(ring(width))["thickness"] == pytest.approx(width, abs=0.2)


@pytest.mark.parametrize("width", [2.0, 3.0, 4.0])
@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0])
def test_thickness_of_a_line_of_known_width(width, angle):
    assert mm.measure(line(width, angle))["thickness"] == pytest.approx(width, abs=0.2)


def test_shape_metrics_of_a_vertical_line():
    m = mm.measure(line(3.0, 90.0, length=20.0))   # angle 90°: the long axis is horizontal
    assert m["width"] == pytest.approx(20.0 * 0.96, abs=1.0)       # 2%–98% extent of the bar
    assert m["height"] == pytest.approx(3.0 * 0.96, abs=0.6)
    assert abs(m["slant"]) < 0.05
    upright = mm.measure(line(3.0, 0.0, length=20.0))
    assert upright["length"] == pytest.approx(20.0 - 3.0, abs=1.5)  # skeleton stops half a width from each end
    assert upright["area"] == pytest.approx(60.0, rel=0.1)


def test_slant_sign_of_a_leaning_line():
    # a bar leaning right (top to the right) has a positive slant in Morpho-MNIST's convention
    leaning = _supersampled(lambda x, y: np.abs(x + 0.4 * y) <= 1.5, size=28) * (np.abs(
        (np.mgrid[0:28, 0:28][0] + 0.5) - 14) <= 9)
    assert mm.measure(leaning)["slant"] == pytest.approx(np.arctan(0.4), abs=0.05)


def test_intensity_is_the_median_of_the_upper_half_pixels():
    img = np.zeros((28, 28))
    img[5, 5:9] = [100, 200, 200, 150]          # threshold 100: all four count; median 175
    img[6, 5] = 40                              # below the threshold
    assert mm.intensity(img) == 175.0


def test_set_intensity_hits_the_median_exactly():
    x, _ = load_mnist("test")
    out = mm.set_intensity(x[0], 120.0)
    assert mm.intensity(out) == pytest.approx(120.0, abs=1e-9)
    with pytest.raises(DiffSCMError):
        mm.set_intensity(x[0], 300.0)


def test_set_thickness_hits_targets_from_the_data_model_on_real_digits():
    x, _ = load_mnist("test")
    t, _ = mm.sample_attributes(40, np.random.default_rng(0))
    err = np.array([mm.measure(mm.set_thickness(x[k], t[k]))["thickness"] - t[k] for k in range(40)])
    assert np.abs(err).mean() < 0.3, err


def test_set_thickness_moves_thickness_in_the_right_direction():
    x, _ = load_mnist("test")
    base = mm.measure(x[1])["thickness"]
    thin = mm.measure(mm.set_thickness(x[1], base - 1.0))["thickness"]
    thick = mm.measure(mm.set_thickness(x[1], base + 1.5))["thickness"]
    assert thin < base - 0.6 and thick > base + 1.1


def test_fft_morphology_equals_scipy():
    from scipy import ndimage

    x, _ = load_mnist("test")
    m = mm.Morphology(x[2], 16)
    for r in (1, 5):
        fp = mm._disk(r, 16)
        assert np.array_equal(mm._dilate(m.binary, fp), ndimage.binary_dilation(m.binary, fp))
        assert np.array_equal(mm._erode(m.binary, fp), ndimage.binary_erosion(m.binary, fp))


# ------------------------------------------------------------------ data model and true counterfactuals

def test_attribute_model_moments():
    t, i = mm.sample_attributes(200_000, np.random.default_rng(1))
    assert t.mean() == pytest.approx(2.5, abs=0.01)          # 0.5 + 10/5
    assert t.var() == pytest.approx(0.4, abs=0.01)           # 10/5²
    e = mm.intensity_noise(t, i)
    assert e.std() == pytest.approx(0.5, abs=0.01) and abs(e.mean()) < 0.01
    assert np.corrcoef(t, i)[0, 1] > 0.5


def test_true_counterfactual_values_by_hand():
    t, e = 2.0, 0.3
    i = 64 + 191 / (1 + np.exp(-(2 * (t - 2.5) + e)))
    t2, i2 = mm.true_counterfactual_values(np.array([t]), np.array([i]), do_thickness=3.0)
    assert t2[0] == 3.0
    assert i2[0] == pytest.approx(64 + 191 / (1 + np.exp(-(2 * 0.5 + 0.3))), abs=1e-9)
    t3, i3 = mm.true_counterfactual_values(np.array([t]), np.array([i]), do_intensity=100.0)
    assert t3[0] == t and i3[0] == 100.0
    t4, i4 = mm.true_counterfactual_values(np.array([t]), np.array([i]), do_thickness=4.0, do_intensity=90.0)
    assert (t4[0], i4[0]) == (4.0, 90.0)


def test_true_counterfactual_of_the_factual_values_is_the_image_itself():
    x, _ = load_mnist("test")
    t, i = np.array([2.2, 3.1]), np.array([150.0, 220.0])
    img = np.stack([mm.render(x[k], t[k], i[k]) for k in range(2)])
    t2, i2 = mm.true_counterfactual_values(t, i, do_thickness=t)
    again = np.stack([mm.render(x[k], t2[k], i2[k]) for k in range(2)])
    assert np.array_equal(img, again)


@pytest.mark.skipif(not REFERENCE.exists(), reason="community Morpho-MNIST files not available")
def test_community_values_reproduce_official_test_images():
    from diffscm.data import read_idx

    official = read_idx(REFERENCE / "t10k-images-idx3-ubyte.gz")[:20]
    t, i = mm.read_community_csv(REFERENCE / "t10k-morpho.csv")
    x, _ = load_mnist("test")
    ours = mm.render_batch(x[:20], t[:20], i[:20], workers=1)
    assert np.abs(ours.astype(float) - official).mean() <= 0.5     # 0.38 measured on the first 100


def test_medial_axis_equals_scikit_image():
    from skimage import morphology

    x, _ = load_mnist("test")
    for k in range(3):
        binary = mm.Morphology(x[k], 8).binary
        skel, dist = mm.medial_axis(binary)
        ref_skel, ref_dist = morphology.medial_axis(binary, return_distance=True, rng=42)
        assert np.array_equal(skel, ref_skel) and np.array_equal(dist, ref_dist)
    assert not mm.medial_axis(np.zeros((5, 5), bool))[0].any()


# ------------------------------------------------------------------ flows

def _table(n=4000, seed=0):
    t, i = mm.sample_attributes(n, np.random.default_rng(seed))
    return {"digit": np.random.default_rng(seed).integers(0, 10, n), "thickness": t, "intensity": i}


def test_flow_abduction_round_trip_is_exact():
    flow = AttributeFlow({"target": "intensity", "low": 64.0, "high": 255.0, "hidden": [16],
                          "parents": [{"name": "thickness", "kind": "continuous", "mean": 2.5, "std": 0.6}]})
    tab = _table(500)
    v = torch.as_tensor(tab["intensity"], dtype=torch.float32)
    pa = {"thickness": torch.as_tensor(tab["thickness"])}
    u = flow.abduct(v, pa)
    assert torch.allclose(flow(u, pa), v, atol=1e-4, rtol=0)
    root = AttributeFlow({"target": "thickness", "low": 0.5, "high": 7.0, "hidden": [16]})
    vt = torch.as_tensor(tab["thickness"], dtype=torch.float32)
    assert torch.allclose(root(root.abduct(vt, {}), {}), vt, atol=1e-4, rtol=0)


def test_fit_attributes_learns_the_intensity_mechanism(tiny_morpho_scm):
    scm = SCM.from_pretrained(tiny_morpho_scm)
    nll = scm.fit_attributes(_table(4000), steps=300, seed=0)
    assert set(nll) == {"thickness", "intensity"}
    # do(thickness = t + 1): the flow's intensity counterfactual approaches the true one
    tab = _table(300, seed=1)
    obs = {k: torch.as_tensor(v) for k, v in tab.items()}
    obs["thickness"], obs["intensity"] = obs["thickness"].float(), obs["intensity"].float()
    noise = Exogenous(abduct_attributes(scm, obs), None)
    vals = act(scm, obs, noise, {"thickness": obs["thickness"] + 1.0})
    _, i_true = mm.true_counterfactual_values(tab["thickness"], tab["intensity"], tab["thickness"] + 1.0)
    err = np.abs(vals["intensity"].numpy() - i_true).mean()
    naive = np.abs(tab["intensity"] - i_true).mean()
    assert err < 0.35 * naive, (err, naive)


# ------------------------------------------------------------------ graphs

@pytest.mark.parametrize("spec, words", [
    ({"variables": [{"name": "a", "kind": "continuous", "parents": ["b"]},
                    {"name": "b", "kind": "continuous", "parents": ["a"]},
                    {"name": "x", "kind": "image", "parents": ["a"]}]}, ["cycle"]),
    ({"variables": [{"name": "a", "kind": "ordinal"}]}, ["unknown kind"]),
    ({"variables": [{"name": "x", "kind": "image", "parents": []}]}, ["needs at least one parent"]),
    ({"variables": [{"name": "x", "kind": "image", "parents": ["z"]}]}, ["unknown parent"]),
    ({"variables": [{"name": "a", "kind": "continuous", "low": 3, "high": 1}]}, ["low < high"]),
    ({"variables": [{"name": "a", "kind": "categorical", "num_classes": 1}]}, ["num_classes"]),
    ({"variables": [{"name": "a", "kind": "continuous", "parent": ["b"]}]}, ["unknown field", "parent"]),
    ({"variables": [{"name": "a", "kind": "continuous"}, {"name": "a", "kind": "continuous"}]}, ["twice"]),
    ({"nodes": []}, ["malformed"]),
])
def test_graph_validation_errors(spec, words):
    with pytest.raises(DiffSCMError) as exc:
        CausalGraph.from_dict(spec)
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_graph_from_yaml_and_json(tmp_path):
    yaml_text = """variables:
  - {name: digit, kind: categorical, num_classes: 10}
  - {name: thickness, kind: continuous, low: 0.5, high: 7.0}
  - {name: intensity, kind: continuous, low: 64, high: 255, parents: [thickness]}
  - {name: image, kind: image, parents: [digit, thickness, intensity]}
"""
    (tmp_path / "g.yaml").write_text(yaml_text)
    (tmp_path / "g.json").write_text(json.dumps(MORPHO_GRAPH))
    g1, g2 = CausalGraph.from_file(tmp_path / "g.yaml"), CausalGraph.from_file(tmp_path / "g.json")
    assert g1.to_dict() == g2.to_dict()
    assert g1.topological_order().index("thickness") < g1.topological_order().index("intensity")
    assert g1.descendants(["thickness"]) == {"intensity", "image"}
    (tmp_path / "bad.yaml").write_text("variables: [\n")
    with pytest.raises(DiffSCMError, match="not valid YAML"):
        CausalGraph.from_file(tmp_path / "bad.yaml")
    with pytest.raises(DiffSCMError, match="does not exist"):
        CausalGraph.from_file(tmp_path / "missing.yaml")


def test_shipped_example_graphs_load():
    root = Path(__file__).resolve().parents[1] / "examples" / "graphs"
    for f in root.glob("*"):
        assert CausalGraph.from_file(f).image.name == "image"


# ------------------------------------------------------------------ the full SCM

def _observed(n=4):
    x, y = load_mnist("test")
    tab = _table(n, seed=3)
    img = np.stack([mm.render(x[k], tab["thickness"][k], tab["intensity"][k]) for k in range(n)])
    from diffscm.data import to_model_range

    return {"image": to_model_range(img), "digit": torch.as_tensor(y[:n]),
            "thickness": torch.as_tensor(tab["thickness"], dtype=torch.float32),
            "intensity": torch.as_tensor(tab["intensity"], dtype=torch.float32)}


def test_joint_and_single_interventions_propagate_to_descendants(tiny_morpho_scm):
    scm = SCM.from_pretrained(tiny_morpho_scm)
    obs = _observed()
    n = obs["digit"].shape[0]
    noise = Exogenous(abduct_attributes(scm, obs), None)
    # do(thickness): intensity recomputed from its abducted noise; digit kept
    v = act(scm, obs, noise, {"thickness": torch.full((n,), 4.0)})
    assert torch.all(v["thickness"] == 4.0)
    assert not torch.allclose(v["intensity"], obs["intensity"])
    assert torch.equal(v["digit"], obs["digit"])
    # do(thickness = factual): intensity is reproduced (exact abduction)
    same = act(scm, obs, noise, {"thickness": obs["thickness"]})
    assert torch.allclose(same["intensity"], obs["intensity"], atol=1e-3)
    # joint do(thickness, intensity): both set, nothing recomputed
    j = act(scm, obs, noise, {"thickness": torch.full((n,), 4.5), "intensity": torch.full((n,), 120.0)})
    assert torch.all(j["thickness"] == 4.5) and torch.all(j["intensity"] == 120.0)
    # do(intensity): thickness (its parent) unchanged
    k = act(scm, obs, noise, {"intensity": torch.full((n,), 200.0)})
    assert torch.equal(k["thickness"], obs["thickness"])
    # per-sample subsets: only the first sample intervened on
    mixed = act(scm, obs, noise, {"thickness": torch.tensor([5.0, *obs["thickness"][1:].tolist()])})
    assert mixed["thickness"][0] == 5.0 and torch.allclose(mixed["intensity"][1:], obs["intensity"][1:], atol=1e-3)


def test_counterfactual_guides_every_image_parent(tiny_morpho_scm):
    scm = SCM.from_pretrained(tiny_morpho_scm)
    obs = _observed(2)
    opts = scm.options()
    terms = scm.image_mechanism.guidance_terms({"digit": obs["digit"], "thickness": obs["thickness"],
                                                "intensity": obs["intensity"]}, opts)
    assert len(terms) == 3
    res = scm.counterfactual(obs, {"thickness": torch.tensor([4.5, 1.5]), "intensity": torch.tensor([120.0, 230.0])},
                             opts, progress=False)
    assert res["image"].shape == obs["image"].shape
    assert res["thickness"].tolist() == [4.5, 1.5] and res["intensity"].tolist() == [120.0, 230.0]
    with pytest.raises(DiffSCMError, match="thickness must lie in"):
        scm.counterfactual(obs, {"thickness": torch.tensor([9.0, 2.0])}, opts, progress=False)
    with pytest.raises(DiffSCMError, match="intensity must lie in"):
        scm.counterfactual(obs, {"intensity": torch.tensor([10.0, 100.0])}, opts, progress=False)


# ------------------------------------------------------------------ the community layout

def _community(tmp_path: Path, n_img: int = 6, n_csv: int = 6, split_prefix: str = "t10k") -> Path:
    from conftest import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / f"{split_prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n_img, 28, 28)))
    write_idx(tmp_path / f"{split_prefix}-labels-idx1-ubyte.gz", np.arange(n_img) % 10)
    rows = ["index,thickness,intensity"] + [f"{k},{2 + 0.1 * k},{100 + k}" for k in range(n_csv)]
    (tmp_path / f"{split_prefix}-morpho.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_community_layout_loads_images_labels_and_values(tmp_path):
    from diffscm.data.morphomnist import load_morpho_folder

    images, attrs, digest = load_morpho_folder(_community(tmp_path), "test")
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    assert attrs["digit"].tolist() == [0, 1, 2, 3, 4, 5]
    assert np.allclose(attrs["thickness"], 2 + 0.1 * np.arange(6)) and attrs["intensity"][5] == 105
    assert len(digest) == 64


@pytest.mark.parametrize("broken, words", [
    ("missing-csv", "t10k-morpho.csv does not exist"),
    ("missing-labels", "no t10k-labels-idx1-ubyte"),
    ("rows", "has 5 rows for the 6 images"),
])
def test_community_layout_bad_inputs(tmp_path, broken, words):
    from diffscm.data.morphomnist import load_morpho_folder

    d = _community(tmp_path, n_csv=5 if broken == "rows" else 6)
    if broken == "missing-csv":
        (d / "t10k-morpho.csv").unlink()
    if broken == "missing-labels":
        (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DiffSCMError, match=words) as err:
        load_morpho_folder(d, "test")
    assert "\n" not in str(err.value)


def test_morpho_data_dir_names_both_layouts_when_empty(tmp_path):
    from diffscm.data.morphomnist import load_morpho_folder

    with pytest.raises(DiffSCMError, match="t10k-morpho.csv"):
        load_morpho_folder(tmp_path, "test")


def test_morpho_training_split_holds_out_the_last_images():
    from diffscm.data.morphomnist import MORPHO_VALID, morpho_split

    n = 3 * MORPHO_VALID
    x, attrs = np.arange(n)[:, None, None], {"digit": np.arange(n)}
    tr, a_tr = morpho_split(x, attrs, "train")
    va, a_va = morpho_split(x, attrs, "valid")
    assert len(tr) == n - MORPHO_VALID and len(va) == MORPHO_VALID and a_va["digit"][0] == n - MORPHO_VALID
    assert not set(a_tr["digit"]) & set(a_va["digit"]) and len(morpho_split(x, attrs, "train+valid")[0]) == n
    with pytest.raises(DiffSCMError, match="valid"):
        morpho_split(x[:10], {"digit": np.arange(10)}, "valid")
    with pytest.raises(DiffSCMError, match="split"):
        morpho_split(x, attrs, "test")


def test_morpho_dataset_folder_and_its_true_counterfactuals(tmp_path, monkeypatch, capsys):
    from diffscm.data.folder import load_folder
    from diffscm.eval.protocols.generic import true_images

    from test_cli import run_cli

    out = tmp_path / "morpho"
    res = run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "both", "--limit", "12", "--folder", out,
                  "--workers", "1")
    assert res.code == 0, res.err
    te = load_folder(out, split="test")
    assert te.images.shape == (12, 1, 28, 28) and set(load_folder(out, split="val").table["split"]) == {"val"}
    attrs = {k: np.asarray(te.table[k]) for k in ("digit", "thickness", "intensity")}
    x = np.round(te.images[:, 0] * 255).astype(np.uint8)
    # do(thickness = its factual value) is the null intervention: the true counterfactual is the image itself
    same = {0: {"thickness": {**attrs}}}
    truth = true_images(out, "test", 12, attrs, {0: {"thickness": {"thickness": attrs["thickness"]}}}, same)
    img, ok = truth[(0, "thickness")]
    assert ok.all() and np.array_equal(img, x)
    new_digit = {0: {"digit": {**attrs, "digit": (attrs["digit"] + 1) % 10}}}
    assert not true_images(out, "test", 12, attrs, {0: {"digit": {"digit": new_digit[0]["digit"]["digit"]}}},
                           new_digit)[(0, "digit")][1].any()                     # a new digit has no true image
    res = run_cli(monkeypatch, capsys, "data", "morphomnist", "--split", "test", "--folder", tmp_path / "x")
    assert res.code == 2 and "--split both" in res.err
