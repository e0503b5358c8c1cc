"""Implicit (classifier-free) guidance, anomaly maps, localisation metrics, Lesion-MNIST, generic folders, BraTS."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffscm.data.folder import load_folder, read_image, write_folder
from diffscm.data.lesions import insert_lesion, make_lesion_split
from diffscm.errors import DiffSCMError
from diffscm.scm.guidance import classifier_free
from diffscm.eval.localize import anomaly_map
from diffscm.eval.metrics.localization import (
    auroc,
    average_precision,
    best_threshold,
    dice_scores,
    image_scores,
    mean_dice,
)
from diffscm.models import DiffusionModel
from diffscm.scm.sampling import ddim_invert, ddim_sample
from diffscm.schedule import ddim_grid, make_alphas_cumprod
from diffscm.train.loop import diffusion_loss

torch.set_num_threads(1)
A = make_alphas_cumprod("linear")


def cli(*args, check_rc: int | None = 0):
    r = subprocess.run([sys.executable, "-m", "diffscm.cli", *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert r.returncode == check_rc, (r.returncode, r.stdout, r.stderr)
    return r


# ---------------------------------------------------------------------------------------------------------------
# classifier-free guidance
# ---------------------------------------------------------------------------------------------------------------
def test_classifier_free_combination_on_toy_eps():
    calls = []

    def eps(x, t, y):
        calls.append(x.shape[0])
        return x * 0 + (y.view(-1, 1, 1, 1).to(x.dtype) + 1) * 2.0   # ε(∅ = 2) = 6, ε(0) = 2, ε(1) = 4

    x = torch.zeros(3, 1, 2, 2)
    t = torch.tensor([5, 5, 5])
    label = torch.tensor([0, 1, 0])
    for w in (0.5, 1.0, 3.0):
        calls.clear()
        out = classifier_free(eps, label, 2, w)(x, t)
        expect = 6 + w * (torch.tensor([2.0, 4.0, 2.0]) - 6)
        torch.testing.assert_close(out[:, 0, 0, 0], expect)
        assert calls == [6]                      # both branches in one forward pass of twice the batch
    calls.clear()
    out = classifier_free(eps, label, 2, 0.0)(x, t)
    assert calls == [3] and torch.all(out == 6)  # w = 0: the unconditional model alone
    per_sample = classifier_free(eps, label, 2, torch.tensor([0.0, 1.0, 2.0]))(x, t)
    torch.testing.assert_close(per_sample[:, 0, 0, 0], torch.tensor([6.0, 4.0, -2.0]))


def _point_mass_eps(mus):
    """Exact ε of x0 = μ_y (σ = 0): ε(x_t) = (x_t − √ᾱ μ_y)/√(1−ᾱ)."""
    def eps(x, t, y):
        ab = A[t].view(-1, 1, 1, 1).to(x.dtype)
        return (x - ab.sqrt() * mus[y]) / (1 - ab).sqrt()
    return eps


@pytest.mark.parametrize("n,ratio", [(10, 0.75), (50, 0.5)])
def test_classifier_free_w1_counterfactual_matches_exact_flow(n, ratio):
    """w = 1 is the conditional model; for point masses DDIM is exact, so abducting under class 0 and decoding
    under class 1 must reproduce the exact probability-flow map, on any grid. (The states start at the grid's
    first noisy node: at the clean end ᾱ = 1 a point mass leaves nothing to map.)"""
    g = torch.Generator().manual_seed(0)
    mus = torch.randn(3, 1, 3, 3, generator=g, dtype=torch.float64)   # row 2: any ∅ model (w = 1 cancels it)
    x = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    grid = ddim_grid(n, ratio)[1:]
    eps = _point_mass_eps(mus)
    u = ddim_invert(classifier_free(eps, torch.zeros(4, dtype=torch.long), 2, 1.0), x, A, grid)
    cf = ddim_sample(classifier_free(eps, torch.ones(4, dtype=torch.long), 2, 1.0), u, A, grid)
    a0, ak = A[grid[0]], A[grid[-1]]
    u_exact = ak.sqrt() * mus[0] + ((1 - ak) / (1 - a0)).sqrt() * (x - a0.sqrt() * mus[0])
    cf_exact = a0.sqrt() * mus[1] + ((1 - a0) / (1 - ak)).sqrt() * (u_exact - ak.sqrt() * mus[1])
    torch.testing.assert_close(u, u_exact, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(cf, cf_exact, atol=1e-9, rtol=1e-9)


def test_null_token_dropout_rate():
    model = DiffusionModel({"unet": {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [4, 8],
                                     "down_block_types": ["DownBlock2D", "DownBlock2D"],
                                     "up_block_types": ["UpBlock2D", "UpBlock2D"], "layers_per_block": 1,
                                     "norm_num_groups": 4}, "num_classes": 3})
    seen = []

    def fake_forward(x, t, y=None):
        seen.append(y.clone())
        return torch.zeros_like(x)

    model.forward = fake_forward
    x = torch.zeros(20000, 1, 8, 8)
    y = torch.randint(0, 3, (20000,), generator=torch.Generator().manual_seed(0))
    for p in (0.0, 0.35, 1.0):
        seen.clear()
        diffusion_loss(model, p)(x, y, torch.Generator().manual_seed(1))
        got = seen[0]
        dropped = got == model.null_label
        assert abs(dropped.float().mean().item() - p) < 4 * np.sqrt(p * (1 - p) / len(y)) + 1e-9
        assert torch.equal(got[~dropped], y[~dropped])    # kept labels are untouched


def test_conditional_model_starts_unconditional():
    """Zero label embeddings: a conditional model fine-tuned from an unconditional one starts identical to it."""
    torch.manual_seed(0)
    m = DiffusionModel({"unet": {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [4, 8],
                                 "down_block_types": ["DownBlock2D", "DownBlock2D"],
                                 "up_block_types": ["UpBlock2D", "UpBlock2D"], "layers_per_block": 1,
                                 "norm_num_groups": 4}, "num_classes": 2}).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, torch.tensor([0, 1])), m(x, t))


# ---------------------------------------------------------------------------------------------------------------
# the SCM path: abduction with ∅, prediction with implicit guidance
# ---------------------------------------------------------------------------------------------------------------
def test_scm_implicit_guidance_matches_manual_loop(tiny_lesion_scm):
    from diffscm.eval.localize import healthy_counterfactual
    from diffscm.scm import SCM

    scm = SCM.from_pretrained(tiny_lesion_scm)
    mech, model = scm.image_mechanism, scm.image_mechanism.diffusion
    assert mech.condition == "lesion" and scm.defaults.cfg_scale == 3.0
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    opts = scm.options(steps=8, ratio=0.75, cfg_scale=2.0)
    grid = mech.grid(opts)
    null = torch.full((3,), model.null_label)
    with torch.inference_mode():
        u = ddim_invert(lambda z, t: model(z, t, null), x, model.alphas_cumprod, grid)
        e = lambda z, t: model(z, t, null) + 2.0 * (model(z, t, torch.zeros(3, dtype=torch.long)) - model(z, t, null))  # noqa: E731
        ref = ddim_sample(e, u, model.alphas_cumprod, grid, dynamic_norm=True).clamp(-1, 1)
    torch.testing.assert_close(mech.abduct(x, opts), u)
    got = healthy_counterfactual(mech, x, 0, opts)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # through SCM.counterfactual (Pearl's three steps), with per-sample do()
    out = scm.counterfactual({"image": x, "lesion": torch.tensor([1, 1, 1])}, {"lesion": torch.zeros(3, dtype=torch.long)},
                             opts, progress=False)
    torch.testing.assert_close(out["image"], ref, atol=1e-5, rtol=1e-5)


def test_cfg_needs_a_conditional_model(tiny_scm):
    from diffscm.scm import SCM

    scm = SCM.from_pretrained(tiny_scm)
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(DiffSCMError, match="conditional diffusion model"):
        scm.counterfactual({"image": x, "digit": torch.tensor([1])}, {"digit": torch.tensor([2])},
                           scm.options(cfg_scale=2.0), progress=False)


# ---------------------------------------------------------------------------------------------------------------
# anomaly maps and metrics
# ---------------------------------------------------------------------------------------------------------------
def test_anomaly_map_known_difference():
    x = np.zeros((2, 3, 8, 8), dtype=np.float32)
    cf = x.copy()
    cf[0, :, 2, 3] = [0.3, -0.6, 0.9]           # |Δ| = 0.3, 0.6, 0.9 at one pixel of image 0
    m_mean = anomaly_map(x, cf, "mean")
    m_max = anomaly_map(x, cf, "max")
    assert m_mean.shape == (2, 8, 8)
    assert m_mean[0, 2, 3] == pytest.approx(0.6) and m_max[0, 2, 3] == pytest.approx(0.9)
    assert m_mean.sum() == pytest.approx(0.6) and m_max[1].sum() == 0
    smooth = anomaly_map(x, cf, "mean", sigma=1.0)
    assert smooth.sum() == pytest.approx(0.6, rel=1e-5)       # reflect-mode smoothing preserves mass
    assert smooth[0, 2, 3] < 0.6 and smooth[0, 2, 4] > 0
    fg = np.zeros((8, 8), dtype=bool)
    fg[:, 4:] = True
    assert anomaly_map(x, cf, "max", mask=fg).sum() == 0      # the difference lies outside the foreground
    single = anomaly_map(torch.as_tensor(x[0]), torch.as_tensor(cf[0]), "max")
    assert single.shape == (8, 8) and single[2, 3] == pytest.approx(0.9)
    with pytest.raises(DiffSCMError, match="differ in shape"):
        anomaly_map(x, cf[:, :2])
    with pytest.raises(DiffSCMError, match="unknown reduction"):
        anomaly_map(x, cf, "median")


def test_dice_hand_computed():
    maps = np.zeros((3, 2, 3))
    masks = np.zeros((3, 2, 3), dtype=bool)
    maps[0, 0, :3] = 1.0                      # P = {(0,0),(0,1),(0,2)}
    masks[0, 0, 1:] = True
    masks[0, 1, 0] = True                     # G = {(0,1),(0,2),(1,0)} → Dice = 2·2/(3+3)
    maps[1, 1, 1] = 1.0                       # image 1: healthy with a false positive → excluded from mean Dice
    masks[2, 0, 0] = True                     # image 2: missed lesion → Dice 0
    d = dice_scores(maps, masks, 0.5)
    assert d[0] == pytest.approx(2 / 3) and d[1] == 0 and d[2] == 0
    assert mean_dice(maps, masks, 0.5) == pytest.approx((2 / 3 + 0) / 2)
    assert np.isnan(dice_scores(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), bool), 0.5)[0])
    tau, best = best_threshold(maps, masks, np.array([0.5, 2.0]))
    assert tau == 0.5 and best == pytest.approx(1 / 3)


def test_average_precision_and_auroc_hand_computed():
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # tie at 0.5 between a positive and a negative: one operating point (P = ½, R = ½), then (P = ⅔, R = 1)
    assert average_precision([0.5, 0.5, 0.1], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0.1, 0.2], [0, 0]) != average_precision([0.1, 0.2], [0, 0])   # NaN
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert auroc([0.2, 0.9, 0.1], [0, 1, 0]) == 1.0
    maps = np.arange(2 * 4 * 4, dtype=float).reshape(2, 4, 4)
    assert image_scores(maps, top=2).tolist() == [14.5, 30.5]


# ---------------------------------------------------------------------------------------------------------------
# Lesion-MNIST generator
# ---------------------------------------------------------------------------------------------------------------
def _digits(n: int) -> np.ndarray:
    imgs = np.zeros((n, 28, 28), dtype=np.uint8)
    for k in range(n):
        imgs[k, 6:22, 10 + k % 5: 14 + k % 5] = 255      # a thick vertical stroke
        imgs[k, 6:10, 8:20] = 200
    return imgs


def test_lesion_generator_half_lesioned_masks_exact():
    imgs = _digits(40)
    out, masks, labels, params = make_lesion_split(imgs, seed=3)
    assert labels.sum() == 20
    diff = np.abs(out.astype(int) - imgs.astype(int)) / 255
    healthy = labels == 0
    assert np.all(diff[healthy] == 0) and not masks[healthy].any()
    for k in np.flatnonzero(labels):
        assert masks[k].sum() >= 4
        assert np.all(diff[k][masks[k]] >= 0.1 - 1e-9)            # every mask pixel visibly changed
        p = params[k]
        sign = np.sign((out[k].astype(int) - imgs[k].astype(int))[masks[k]])
        assert np.all(sign == (-1 if p["dark"] else 1))
    again = make_lesion_split(imgs, seed=3)
    assert np.array_equal(again[0], out) and np.array_equal(again[1], masks)
    other = make_lesion_split(imgs, seed=4)
    assert not np.array_equal(other[0], out)


def test_lesion_geometry_scales_with_the_image_size():
    from diffscm.data.lesions import resize_digits

    small = _digits(10)
    big = resize_digits(small, 64)
    assert big.shape == (10, 64, 64) and big.dtype == np.uint8
    s = 64 / 28
    _, _, lab28, _ = make_lesion_split(small, seed=5)
    out64, m64, lab64, p64 = make_lesion_split(big, seed=5, scale=s)
    assert np.array_equal(lab28, lab64)                     # the same images are lesioned
    for k in np.flatnonzero(lab64):
        assert 2 * s <= p64[k]["a"] <= 5 * s and 2 * s <= p64[k]["b"] <= 5 * s
        assert m64[k].sum() >= 4 * s ** 2
        assert np.all(np.abs(out64[k].astype(int) - big[k].astype(int))[m64[k]] >= 25)   # ≥ 0.1 of the range


def test_insert_lesion_centre_on_foreground():
    x = _digits(1)[0].astype(float) / 255
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, m, p = insert_lesion(x, rng)
        cy, cx = int(np.clip(np.round(p["cy"]), 0, 27)), int(np.clip(np.round(p["cx"]), 0, 27))
        near = x[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2]
        assert near.max() >= 0.5 and m.any()


@pytest.mark.slow
def test_lesion_mnist_uses_real_digits():
    from diffscm.data import load_mnist
    from diffscm.data.lesions import lesion_mnist

    d = lesion_mnist(1, {"val": 30, "test": 20})
    x, y = load_mnist("valid")
    assert np.array_equal(d["val"]["digit"], y[30:60]) and d["val"]["lesion"].sum() == 15
    healthy = d["val"]["lesion"] == 0
    assert np.array_equal(d["val"]["images"][healthy], x[30:60][healthy])


# ---------------------------------------------------------------------------------------------------------------
# generic dataset folders
# ---------------------------------------------------------------------------------------------------------------
def test_folder_round_trip_png_npy_npz(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (4, 1, 6, 6), dtype=np.uint8)
    masks = np.zeros((4, 6, 6), dtype=bool)
    masks[1, 2:4, 2:4] = True
    root = write_folder(tmp_path / "ds", imgs, {"split": np.array(["train", "train", "val", "test"]),
                                                 "lesion": np.array([0, 1, 0, 1])}, masks,
                        info={"label": "lesion", "num_classes": 2})
    ds = load_folder(root)
    assert ds.images.shape == (4, 1, 6, 6) and np.allclose(ds.images * 255, imgs)
    assert np.array_equal(ds.masks, masks) and ds.table["lesion"].tolist() == [0, 1, 0, 1]
    assert len(load_folder(root, split="train")) == 2
    multi = np.random.default_rng(1).random((4, 3, 5, 5)).astype(np.float32)
    root2 = write_folder(tmp_path / "multi", multi, {"y": np.array([0, 1, 2, 1])}, fmt="npy")
    ds2 = load_folder(root2, label="y")
    assert ds2.images.shape == (4, 3, 5, 5) and np.allclose(ds2.images, multi) and ds2.num_classes == 3
    np.savez(tmp_path / "one.npz", image=multi[0])
    assert np.allclose(read_image(tmp_path / "one.npz"), multi[0])


def _bad(tmp_path, name):
    imgs = np.zeros((3, 1, 6, 6), dtype=np.uint8)
    root = write_folder(tmp_path / name, imgs, {"lesion": np.array([0, 1, 1])}, np.zeros((3, 6, 6), bool))
    return root


@pytest.mark.parametrize("case,message", [
    ("no_csv", "has no labels.csv"),
    ("no_file_column", "'file' column"),
    ("missing_image", "does not exist"),
    ("size_mismatch", "all images must match"),
    ("label_range", "out of range 0..1"),
    ("mask_size", "its image 6×6"),
    ("missing_mask", "mask for 000002.png is missing"),
    ("float_range", "must lie in [0, 1]"),
    ("ragged_row", "fields, header has"),
])
def test_folder_bad_input_errors(tmp_path, case, message):
    from PIL import Image

    root = _bad(tmp_path, case)
    csv = root / "labels.csv"
    if case == "no_csv":
        csv.unlink()
    elif case == "no_file_column":
        csv.write_text(csv.read_text().replace("file,", "name,", 1))
    elif case == "missing_image":
        (root / "images" / "000001.png").unlink()
    elif case == "size_mismatch":
        Image.fromarray(np.zeros((7, 6), np.uint8)).save(root / "images" / "000002.png")
    elif case == "label_range":
        csv.write_text(csv.read_text().replace("000001.png,1", "000001.png,5"))
    elif case == "mask_size":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "000000.png")
    elif case == "missing_mask":
        (root / "masks" / "000002.png").unlink()
    elif case == "float_range":
        (root / "images" / "000000.png").unlink()
        np.save(root / "images" / "000000.npy", np.full((6, 6), 2.0, np.float32))
        csv.write_text(csv.read_text().replace("000000.png", "000000.npy"))
    elif case == "ragged_row":
        csv.write_text(csv.read_text() + "x.png,1,2\n")
    with pytest.raises(DiffSCMError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_folder(root, label="lesion", num_classes=2)


def test_cli_bad_dataset_is_one_line_and_writes_nothing(tmp_path):
    root = _bad(tmp_path, "ds")
    (root / "images" / "000001.png").unlink()
    out = tmp_path / "ckpt"
    r = cli("train", "diffusion", "--dataset", "folder", "--data-dir", root, "--out", out, "--steps", 1,
            "--conditional", "--cond-dropout", 0.35, check_rc=2)
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    assert not out.exists()


def test_train_on_folder_conditional_and_healthy_only(tmp_path):
    from diffscm.train.plan import setup_training

    imgs = np.random.default_rng(0).integers(0, 256, (6, 1, 16, 16), dtype=np.uint8)
    root = write_folder(tmp_path / "ds", imgs, {"split": np.array(["train"] * 5 + ["val"]),
                                                "lesion": np.array([0, 1, 0, 1, 1, 0])},
                        info={"label": "lesion", "num_classes": 2})
    job = setup_training("diffusion", "folder", data_dir=root, conditional=True)
    assert job.model.num_classes == 2 and job.model.image_shape == (1, 16, 16) and len(job.inputs) == 5
    assert job.labels.tolist() == [0, 1, 0, 1, 1]
    healthy = setup_training("diffusion", "folder", data_dir=root, where={"lesion": "0"})
    assert healthy.model.num_classes == 0 and len(healthy.inputs) == 2
    with pytest.raises(DiffSCMError, match="selects no training image"):
        setup_training("vae", "folder", data_dir=root, where={"lesion": "7"})
    with pytest.raises(DiffSCMError, match="only"):
        setup_training("vae", "mnist", where={"lesion": "0"})


# ---------------------------------------------------------------------------------------------------------------
# BraTS preprocessing on synthetic NIfTI volumes
# ---------------------------------------------------------------------------------------------------------------
def _write_patient(root: Path, pid: str, seed: int, tumour_z: range, shape=(24, 24, 10)) -> None:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    xx, yy = np.mgrid[0:X, 0:Y]
    brain2d = (xx - X / 2) ** 2 + (yy - Y / 2) ** 2 < (X / 3) ** 2
    seg = np.zeros(shape, np.uint8)
    (root / pid).mkdir(parents=True)
    for z in tumour_z:
        seg[8:12, 8:12, z] = 2
    for k, m in enumerate(("flair", "t1", "t1ce", "t2")):
        vol = np.zeros(shape, np.float32)
        for z in range(2, Z - 2):            # slices 0, 1, Z-2, Z-1 are empty (no brain)
            vol[..., z] = brain2d * (100 + 50 * k + rng.random((X, Y)) * 20)
        vol[seg > 0] += 400
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / pid / f"{pid}_{m}.nii.gz"))
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(root / pid / f"{pid}_seg.nii.gz"))


def test_brats_preprocessing_synthetic(tmp_path):
    from diffscm.data.brats import BratsOptions, convert_brats, normalise_volume

    root = tmp_path / "brats"
    for i in range(5):
        _write_patient(root, f"BraTS2021_{i:05d}", i, range(4, 6) if i % 2 == 0 else range(0))
    out = tmp_path / "out"
    info = convert_brats(root, out, BratsOptions(size=16, split=(0.6, 0.2, 0.2), seed=0), progress=False)
    ds = load_folder(out)
    assert ds.images.shape[1:] == (4, 16, 16) and ds.masks.shape[1:] == (16, 16)
    assert len(ds) == 5 * 6                                      # 10 slices, 4 empty ones skipped
    assert info["num_classes"] == 2 and info["channels"] == ["flair", "t1", "t1ce", "t2"]
    assert ds.images.max() == pytest.approx(1.0) and ds.images.min() == 0.0
    tumour = ds.table["tumour"]
    for f, y, z, pid, m in zip(ds.files, tumour, ds.table["slice"], ds.table["patient"], ds.masks):
        even = int(pid[-1]) % 2 == 0
        assert y == int(even and z in (4, 5)) and bool(m.any()) == bool(y)
    splits = {}
    for pid, s in zip(ds.table["patient"], ds.table["split"]):
        splits.setdefault(pid, set()).add(s)
    assert all(len(v) == 1 for v in splits.values())          # patient-wise split
    assert sorted(sum((list(v) for v in splits.values()), [])) == ["test", "train", "train", "train", "val"]
    # brain voxels 1, 2, 3, 100: p0 = 1, p75 = 3 + 0.25·97 = 27.25 (linear interpolation)
    v = normalise_volume(np.array([0, 1, 2, 3, 100], np.float32), 0, 75)
    np.testing.assert_allclose(v, [0, 0, 1 / 26.25, 2 / 26.25, 1], rtol=1e-6)


def test_brats_resume_and_errors(tmp_path, monkeypatch):
    import diffscm.data.brats as brats

    root = tmp_path / "brats"
    for i in range(3):
        _write_patient(root, f"P{i}", i, range(3, 4))
    opts = brats.BratsOptions(size=8, split=(0.4, 0.3, 0.3))
    ref = tmp_path / "ref"
    brats.convert_brats(root, ref, opts, progress=False)
    real, done = brats.patient_slices, []

    def interrupted(folder, o):
        if folder.name == "P2":
            raise KeyboardInterrupt
        done.append(folder.name)
        return real(folder, o)

    out = tmp_path / "out"
    monkeypatch.setattr(brats, "patient_slices", interrupted)
    with pytest.raises(KeyboardInterrupt):
        brats.convert_brats(root, out, opts, progress=False)
    assert not out.exists() and (tmp_path / "out.partial").exists()   # nothing half-written at --out
    monkeypatch.setattr(brats, "patient_slices", lambda f, o: (done.append(f.name), real(f, o))[1])
    done.clear()
    brats.convert_brats(root, out, opts, progress=False)
    assert done == ["P2"]                                          # P0 and P1 were resumed, not recomputed
    assert (out / "labels.csv").read_text() == (ref / "labels.csv").read_text()
    assert not (tmp_path / "out.partial").exists()
    (root / "P1" / "P1_t2.nii.gz").unlink()
    with pytest.raises(DiffSCMError, match="P1_t2"):
        brats.convert_brats(root, tmp_path / "broken", opts, progress=False)
    r = cli("data", "brats", "--root", root, "--out", out, check_rc=2)
    assert "already exists" in r.stderr
    r = cli("data", "brats", "--root", tmp_path / "nope", "--out", tmp_path / "x", check_rc=2)
    assert "is not a folder" in r.stderr and not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------------------
# CLI: localize and evaluate --task localization
# ---------------------------------------------------------------------------------------------------------------
def _tiny_lesion_data(root: Path, seed: int) -> Path:
    imgs = _digits(12)
    out, masks, labels, _ = make_lesion_split(imgs, seed)
    split = np.array(["val"] * 6 + ["test"] * 6)
    return write_folder(root, out, {"split": split, "lesion": labels}, masks,
                        info={"label": "lesion", "num_classes": 2, "seed": seed})


def test_cli_localize_writes_maps(tmp_path, tiny_lesion_scm):
    data = _tiny_lesion_data(tmp_path / "d", 0)
    out = tmp_path / "loc"
    cli("localize", "--model", tiny_lesion_scm, "--input", data / "images", "--out", out, "--target", "healthy",
        "--steps", 4, "--quiet")
    meta = json.loads((out / "localize.json").read_text())
    assert len(meta["images"]) == 12 and meta["target"] == 0 and meta["options"]["cfg_scale"] == 3.0
    m = np.load(out / "000000_map.npy")
    assert m.shape == (28, 28) and m.min() >= 0
    assert (out / "000000_cf.png").exists() and (out / "000000_map.png").exists()
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    r = cli("localize", "--model", tiny_lesion_scm, "--input", tmp_path / "small.png", "--out", tmp_path / "o2",
            check_rc=2)
    assert "this model needs 1×28×28" in r.stderr and not (tmp_path / "o2").exists()
    r = cli("localize", "--model", tiny_lesion_scm, "--input", data / "images", "--out", out, check_rc=2)
    assert "already exists" in r.stderr and (out / "localize.json").exists()
    r = cli("localize", "--model", tiny_lesion_scm, "--input", data / "images", "--out", tmp_path / "o3",
            "--target", "4", check_rc=2)
    assert "out of range" in r.stderr


def test_cli_evaluate_localization(tmp_path, tiny_lesion_scm):
    roots = [_tiny_lesion_data(tmp_path / f"s{s}", s) for s in (0, 1)]
    js = tmp_path / "loc.json"
    cli("evaluate", "--task", "localization", "--model", tiny_lesion_scm, "--lesion-data", roots[0],
        "--lesion-data", roots[1], "--n-val", 6, "--n-test", 6, "--steps", 4, "--json", js, "--no-cache", "--quiet")
    res = json.loads(js.read_text())
    assert set(res["methods"]) == {"implicit", "classifier", "anoddpm", "vae"} and res["seeds"] == [0, 1]
    for r in res["methods"].values():
        for k in ("dice", "auprc", "auroc"):
            assert 0 <= r["summary"][k]["mean"] <= 1 and len(r["summary"][k]["per_seed"]) == 2
    r = cli("evaluate", "--task", "localization", "--model", tiny_lesion_scm, "--json", tmp_path / "x.json", check_rc=2)
    assert "--lesion-data" in r.stderr


def test_implicit_guidance_on_mnist_digit(tmp_path):
    """do(digit) with a digit-conditional ε-model: the condition defaults to the image's categorical parent and the
    harness's Diff-SCM method carries cfg_scale, so implicit and classifier guidance compare on MNIST."""
    from conftest import TINY_UNET

    from diffscm.eval.protocols.mnist import make_method
    from diffscm.models import NoiseAwarePredictor
    from diffscm.scm.packaging import pack_mnist_scm
    from diffscm.scm import SCM

    torch.manual_seed(0)
    d = DiffusionModel({"unet": TINY_UNET, "num_classes": 10})
    torch.nn.init.normal_(d.unet.class_embedding.weight)
    d.save_pretrained(tmp_path / "d")
    NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4}).save_pretrained(tmp_path / "p")
    pack_mnist_scm(tmp_path / "scm", tmp_path / "d", tmp_path / "p", None,
                   {"steps": 4, "ratio": 1.0, "scales": {"digit": 0.0}, "clip": False, "batch_size": 8})
    scm = SCM.from_pretrained(tmp_path / "scm")
    assert scm.image_mechanism.condition == "digit"
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    obs = {"image": x, "digit": torch.tensor([3, 5])}
    do = {"digit": torch.tensor([7, 1])}
    plain = scm.counterfactual(obs, do, scm.options(cfg_scale=0.0), progress=False)["image"]
    implicit = scm.counterfactual(obs, do, scm.options(cfg_scale=2.0), progress=False)["image"]
    assert not torch.allclose(plain, implicit)
    assert make_method("diffscm", scm, {"cfg_scale": 2.0}, {}).opts.cfg_scale == 2.0


def test_multichannel_64px_folder_models(tmp_path):
    """BraTS-shaped data (4 channels, 64×64): every trainable model of the localisation path builds and runs."""
    from diffscm.train.plan import setup_training

    imgs = np.random.default_rng(0).random((4, 4, 64, 64)).astype(np.float32)
    root = write_folder(tmp_path / "b", imgs, {"split": np.array(["train"] * 4), "tumour": np.array([0, 1, 0, 1])},
                        info={"label": "tumour", "num_classes": 2}, fmt="npy")
    parts = tmp_path / "d"
    for what, kw in (("diffusion", {"conditional": True}), ("vae", {"where": {"tumour": "0"}}), ("classifier", {})):
        job = setup_training(what, "folder", data_dir=root, **kw)
        loss = job.loss(job.inputs[:2], job.labels[:2], torch.Generator().manual_seed(0))
        assert torch.isfinite(loss), what
        if what == "diffusion":
            assert job.model.image_shape == (4, 64, 64)
            job.model.save_pretrained(parts)
    job = setup_training("predictor", "folder", data_dir=root, diffusion=parts)
    assert torch.isfinite(job.loss(job.inputs[:2], job.labels[:2], torch.Generator().manual_seed(0)))
    assert job.model.config["in_channels"] == 4 and job.model.config["num_classes"] == 2
