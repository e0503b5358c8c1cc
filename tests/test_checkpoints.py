"""Checkpoint folders (config.json + model.safetensors): round trips, contents, errors, atomic writes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from safetensors.torch import load_file, save_file  # noqa: E402

from diffscm.errors import DiffSCMError  # noqa: E402
from diffscm.files import atomic_write_dir  # noqa: E402
from diffscm.models import DiffusionModel, NoiseAwarePredictor, Oracle, load_model  # noqa: E402
from diffscm.models.io import (  # noqa: E402
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_config,
    load_tensors,
    save_checkpoint,
)

TINY_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
TINY_PRED = {"in_channels": 1, "channels": [8, 16], "temb_dim": 16, "groups": 4, "num_train_timesteps": 50}


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every stored float tensor away from its init so a round trip cannot pass by accident.

    Only ``state_dict`` entries: non-persistent buffers (the noise schedule) are derived from the config.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model


def tiny_diffusion(num_classes: int = 0, seed: int = 0) -> DiffusionModel:
    torch.manual_seed(seed)
    m = DiffusionModel({"unet": dict(TINY_UNET), "num_classes": num_classes, "num_train_timesteps": 50})
    return _perturb(m, seed).eval()


def tiny_predictor(kind: str = "categorical", seed: int = 0, **over) -> NoiseAwarePredictor:
    torch.manual_seed(seed)
    cfg = {**TINY_PRED, "target_kind": kind, **over}
    if kind == "categorical":
        cfg.setdefault("num_classes", 3)
    else:
        cfg.setdefault("target_mean", 3.0)
        cfg.setdefault("target_std", 2.0)
        cfg.setdefault("target", "thickness")
    return _perturb(NoiseAwarePredictor(cfg), seed).eval()


def tiny_oracle(seed: int = 0) -> Oracle:
    torch.manual_seed(seed)
    m = _perturb(Oracle({"num_classes": 3, "image_size": 8}), seed)
    with torch.no_grad():  # make BatchNorm running statistics matter
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_var.abs_().add_(0.5)
                mod.num_batches_tracked.fill_(7)
    return m.eval()


def _x(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _t(n: int = 3) -> torch.Tensor:
    return torch.tensor([0, 17, 49])[:n]


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- round trips

def test_diffusion_unconditional_round_trip(tmp_path):
    m = tiny_diffusion()
    m.save_pretrained(tmp_path / "ckpt")
    r = DiffusionModel.from_pretrained(tmp_path / "ckpt")
    assert isinstance(r, DiffusionModel) and not r.training
    assert r.config == m.config
    assert r.num_classes == 0 and r.image_shape == (1, 8, 8)
    _assert_same_state(m, r)
    torch.testing.assert_close(r.alphas_cumprod, m.alphas_cumprod, rtol=0, atol=0)
    x, t = _x(), _t()
    with torch.no_grad():
        assert torch.equal(m(x, t), r(x, t))
        assert torch.equal(m(x, torch.tensor(5)), r(x, torch.tensor(5)))  # scalar t
        # control: a differently initialised model disagrees
        assert not torch.allclose(tiny_diffusion(seed=1)(x, t), r(x, t))


def test_diffusion_conditional_round_trip_and_null_label(tmp_path):
    m = tiny_diffusion(num_classes=3)
    emb = m.unet.class_embedding
    assert isinstance(emb, torch.nn.Embedding) and emb.weight.shape[0] == 4
    assert m.null_label == 3

    m.save_pretrained(tmp_path / "ckpt", extra={"meta": {"epochs": 2, "note": "tiny"}})
    r = DiffusionModel.from_pretrained(tmp_path / "ckpt")
    assert r.num_classes == 3 and r.unet.class_embedding.weight.shape[0] == 4
    assert r.meta == {"epochs": 2, "note": "tiny"}
    assert "meta" not in r.config
    _assert_same_state(m, r)

    x, t = _x(), _t()
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(m(x, t, y), r(x, t, y))
        out_null = r(x, t)  # y=None -> the last embedding row (∅)
        assert torch.equal(out_null, r(x, t, torch.full((3,), 3)))
        assert torch.equal(out_null, m(x, t, None))
        assert not torch.allclose(out_null, r(x, t, y))
        # the ∅ output really depends on row 3 of the embedding and only on it
        r.unet.class_embedding.weight[:3] += 1.0
        assert torch.equal(r(x, t), out_null)
        r.unet.class_embedding.weight[3] += 1.0
        assert not torch.allclose(r(x, t), out_null)


def test_predictor_categorical_round_trip(tmp_path):
    m = tiny_predictor("categorical")
    m.save_pretrained(tmp_path / "p")
    r = NoiseAwarePredictor.from_pretrained(tmp_path / "p")
    assert r.config == m.config and not r.training
    _assert_same_state(m, r)
    x, t, y = _x(), _t(), torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = r(x, t)
        assert out.shape == (3, 3)
        assert torch.equal(out, m(x, t))
        lp = r.log_prob(x, t, y)
        assert torch.equal(lp, m.log_prob(x, t, y))
        torch.testing.assert_close(lp, out.log_softmax(1)[torch.arange(3), y])
        assert (lp <= 0).all()


def test_predictor_continuous_round_trip_and_gaussian_log_prob(tmp_path):
    m = tiny_predictor("continuous", target_mean=3.0, target_std=2.0)
    m.save_pretrained(tmp_path / "p")
    r = NoiseAwarePredictor.from_pretrained(tmp_path / "p")
    assert r.config["target_mean"] == 3.0 and r.config["target_std"] == 2.0
    assert r.config["target_kind"] == "continuous"
    _assert_same_state(m, r)
    x, t = _x(), _t()
    value = torch.tensor([1.5, 3.0, 6.25])
    with torch.no_grad():
        out = r(x, t)
        assert out.shape == (3, 2)
        assert torch.equal(out, m(x, t))
        lp = r.log_prob(x, t, value)
        assert torch.equal(lp, m.log_prob(x, t, value))
    mu, log_sigma = out[:, 0].double(), out[:, 1].double()
    assert ((log_sigma > -7) & (log_sigma < 5)).all()  # the clamp is inactive here
    z = (value.double() - 3.0) / 2.0
    by_hand = -0.5 * ((z - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(lp.double(), by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lp.double(), torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z),
                               rtol=1e-5, atol=1e-5)


def test_predictor_continuous_log_sigma_is_clamped():
    m = tiny_predictor("continuous")
    with torch.no_grad():
        m.head.bias[1] = 50.0  # huge log-sigma -> clamped at 5
        m.head.weight[1] = 0.0
        m.head.bias[0] = 0.0
        m.head.weight[0] = 0.0
        lp = m.log_prob(_x(), _t(), torch.tensor([3.0, 3.0, 3.0]))  # z = 0 = mu
    torch.testing.assert_close(lp, torch.full((3,), -5.0 - 0.5 * math.log(2 * math.pi)))


def test_oracle_round_trip(tmp_path):
    m = tiny_oracle()
    m.save_pretrained(tmp_path / "o")
    r = Oracle.from_pretrained(tmp_path / "o")
    assert not r.training
    _assert_same_state(m, r)
    assert int(r.conv[1].num_batches_tracked) == 7
    x = _x(4)
    with torch.no_grad():
        assert torch.equal(m(x), r(x))
        assert torch.equal(m.features(x), r.features(x))
        assert r(x).shape == (4, 3) and r.features(x).shape == (4, 128)
        assert not torch.allclose(tiny_oracle(seed=1)(x), r(x))


# --------------------------------------------------------------------------- folder contents

@pytest.mark.parametrize("make", [tiny_diffusion, lambda: tiny_diffusion(3), tiny_predictor,
                                  lambda: tiny_predictor("continuous"), tiny_oracle])
def test_folder_holds_only_config_and_safetensors(tmp_path, make):
    m = make()
    folder = tmp_path / "ckpt"
    m.save_pretrained(folder)
    assert _files(folder) == [CONFIG_NAME, WEIGHTS_NAME]
    assert _files(tmp_path) == ["ckpt", f"ckpt/{CONFIG_NAME}", f"ckpt/{WEIGHTS_NAME}"]  # no temp folders
    for p in tmp_path.rglob("*"):
        if p.is_file():
            head = p.read_bytes()[:2]
            assert not head.startswith(b"\x80"), f"{p} looks like a pickle"
            assert head != b"PK", f"{p} looks like a zip (torch.save) archive"
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    assert cfg["kind"] == m.kind
    assert {k: v for k, v in cfg.items() if k != "kind"} == json.loads(json.dumps(m.config))
    tensors = load_file(str(folder / WEIGHTS_NAME))
    assert tensors.keys() == m.state_dict().keys()
    assert "alphas_cumprod" not in tensors  # derived from the config, not stored


def test_save_over_existing_checkpoint_replaces_it(tmp_path):
    folder = tmp_path / "ckpt"
    tiny_predictor("categorical").save_pretrained(folder)
    (folder / "stale.txt").write_text("left from before")
    m2 = tiny_predictor("continuous", seed=3)
    m2.save_pretrained(folder)
    assert _files(folder) == [CONFIG_NAME, WEIGHTS_NAME]
    assert _files(tmp_path) == ["ckpt", f"ckpt/{CONFIG_NAME}", f"ckpt/{WEIGHTS_NAME}"]
    r = NoiseAwarePredictor.from_pretrained(folder)
    assert r.config["target_kind"] == "continuous"
    _assert_same_state(m2, r)


def test_save_checkpoint_extra_files(tmp_path):
    save_checkpoint(tmp_path / "c", {"kind": "x", "a": 1}, {"w": torch.ones(2)}, extra_files={"README.md": "hi"})
    assert _files(tmp_path / "c") == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert load_config(tmp_path / "c") == {"kind": "x", "a": 1}
    assert torch.equal(load_tensors(tmp_path / "c")["w"], torch.ones(2))


# --------------------------------------------------------------------------- errors

@pytest.fixture
def pred_ckpt(tmp_path) -> Path:
    folder = tmp_path / "pred"
    tiny_predictor("categorical").save_pretrained(folder)
    return folder


@pytest.fixture
def diff_ckpt(tmp_path) -> Path:
    folder = tmp_path / "diff"
    tiny_diffusion(num_classes=3).save_pretrained(folder)
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(DiffSCMError, match="does not exist"):
        DiffusionModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(DiffSCMError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_path_is_a_file(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(DiffSCMError, match="not a folder"):
        NoiseAwarePredictor.from_pretrained(f)


def test_missing_config(pred_ckpt):
    (pred_ckpt / CONFIG_NAME).unlink()
    with pytest.raises(DiffSCMError, match=CONFIG_NAME):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


@pytest.mark.parametrize("text", ['{"kind": "predictor",', "", "not json at all", "{'kind': 'predictor'}"])
def test_invalid_json(pred_ckpt, text):
    (pred_ckpt / CONFIG_NAME).write_text(text)
    with pytest.raises(DiffSCMError, match="not valid JSON"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


def test_binary_config_is_a_clean_error(pred_ckpt):
    """A config.json that is not text at all (e.g. a pickle saved under that name) is invalid JSON too."""
    (pred_ckpt / CONFIG_NAME).write_bytes(b"\x80\x04\x95\xff\xfe\x00garbage")
    with pytest.raises(DiffSCMError, match=CONFIG_NAME):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


@pytest.mark.parametrize("config", [[1, 2], {"channels": [8, 16]}, "predictor", None])
def test_config_without_kind(pred_ckpt, config):
    (pred_ckpt / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(DiffSCMError, match="'kind'"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)
    with pytest.raises(DiffSCMError, match="'kind'"):
        load_model(pred_ckpt)


def test_missing_weights(pred_ckpt):
    (pred_ckpt / WEIGHTS_NAME).unlink()
    with pytest.raises(DiffSCMError, match=f"no {WEIGHTS_NAME}"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


@pytest.mark.parametrize("keep", [0, 4, 7, 9, 100, -16])
def test_truncated_weights(pred_ckpt, keep):
    w = pred_ckpt / WEIGHTS_NAME
    data = w.read_bytes()
    w.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(DiffSCMError, match="corrupt"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


@pytest.mark.parametrize("blob", [
    b"\x80\x04garbage" * 10,                                    # a pickle-ish file
    (10**12).to_bytes(8, "little") + b"{}",                     # header length far past the end
    (20).to_bytes(8, "little") + b'{"a": [1, 2,' + b" " * 8,  # header not JSON
])
def test_garbage_weights(pred_ckpt, blob):
    (pred_ckpt / WEIGHTS_NAME).write_bytes(blob)
    with pytest.raises(DiffSCMError, match="corrupt"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


def test_kind_mismatch(pred_ckpt, diff_ckpt):
    with pytest.raises(DiffSCMError, match=r"'predictor' model, expected 'diffusion'"):
        DiffusionModel.from_pretrained(pred_ckpt)
    with pytest.raises(DiffSCMError, match=r"'diffusion' model, expected 'predictor'"):
        NoiseAwarePredictor.from_pretrained(diff_ckpt)
    with pytest.raises(DiffSCMError, match=r"expected 'oracle'"):
        Oracle.from_pretrained(pred_ckpt)


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    for k, v in changes.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))


def test_diffusion_weights_of_other_architecture(diff_ckpt):
    _edit_config(diff_ckpt, unet={"block_out_channels": [16, 32], "norm_num_groups": 4})
    with pytest.raises(DiffSCMError, match="does not match") as exc:
        DiffusionModel.from_pretrained(diff_ckpt)
    assert str(diff_ckpt) in str(exc.value)


def test_diffusion_num_classes_changed(diff_ckpt):
    _edit_config(diff_ckpt, num_classes=5)
    with pytest.raises(DiffSCMError, match=r"does not match.*class_embedding"):
        DiffusionModel.from_pretrained(diff_ckpt)
    _edit_config(diff_ckpt, num_classes=0)
    with pytest.raises(DiffSCMError, match=r"does not match.*unexpected.*class_embedding"):
        DiffusionModel.from_pretrained(diff_ckpt)


def test_predictor_weights_of_other_architecture(pred_ckpt):
    _edit_config(pred_ckpt, channels=[16, 32])  # same keys, other shapes
    with pytest.raises(DiffSCMError, match=r"does not match.*shape of inp.weight is \(8, 1, 3, 3\), expected \(16, 1, 3, 3\)"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)
    _edit_config(pred_ckpt, channels=[8, 16, 16])
    with pytest.raises(DiffSCMError, match="does not match.*missing"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


def test_categorical_weights_loaded_as_continuous(pred_ckpt):
    _edit_config(pred_ckpt, target_kind="continuous")  # head has 3 outputs, continuous wants 2
    with pytest.raises(DiffSCMError, match="does not match.*head"):
        load_model(pred_ckpt)


def test_extra_tensor_in_weights(pred_ckpt):
    w = pred_ckpt / WEIGHTS_NAME
    tensors = load_file(str(w))
    tensors["sneaky.weight"] = torch.zeros(1)
    save_file(tensors, str(w))
    with pytest.raises(DiffSCMError, match="does not match.*unexpected sneaky.weight"):
        NoiseAwarePredictor.from_pretrained(pred_ckpt)


@pytest.mark.parametrize("cls,change", [
    (NoiseAwarePredictor, {"target_kind": "ordinal"}),
    (DiffusionModel, {"unet": {"no_such_unet_argument": 1}}),
    (DiffusionModel, {"schedule": "no-such-schedule"}),
])
def test_config_that_does_not_describe_the_model(tmp_path, cls, change):
    folder = tmp_path / "c"
    (tiny_predictor() if cls is NoiseAwarePredictor else tiny_diffusion()).save_pretrained(folder)
    _edit_config(folder, **change)
    with pytest.raises(DiffSCMError, match="config does not describe"):
        cls.from_pretrained(folder)


# --------------------------------------------------------------------------- atomic writes

def test_atomic_write_dir_failure_keeps_previous_content(tmp_path):
    target = tmp_path / "ckpt"
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("old"))
    assert _files(tmp_path) == ["ckpt", "ckpt/a.txt"]

    def write(d: Path) -> None:
        (d / "a.txt").write_text("new, half written")
        (d / "b.txt").write_text("new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_dir(target, write)
    assert _files(tmp_path) == ["ckpt", "ckpt/a.txt"]  # no .ckpt.tmp-* / .ckpt.old-* left
    assert (target / "a.txt").read_text() == "old"


def test_atomic_write_dir_failure_without_previous(tmp_path):
    def write(d: Path) -> None:
        (d / "a.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(tmp_path / "sub" / "ckpt", write)
    assert _files(tmp_path) == ["sub"]


def test_save_pretrained_failure_keeps_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    old = tiny_predictor(seed=0)
    old.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import diffscm.models.io as io_mod

    def failing_save_file(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(io_mod, "save_file", failing_save_file)
    with pytest.raises(OSError, match="no space"):
        tiny_predictor(seed=5).save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _files(tmp_path) == ["ckpt", f"ckpt/{CONFIG_NAME}", f"ckpt/{WEIGHTS_NAME}"]
    monkeypatch.undo()
    _assert_same_state(old, NoiseAwarePredictor.from_pretrained(folder))


def test_atomic_write_dir_permissions(tmp_path):
    atomic_write_dir(tmp_path / "c", lambda d: (d / "f").write_text("x"))
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "c" / "f").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- load_model

def test_load_model_dispatches_on_kind(tmp_path):
    models = {"d": tiny_diffusion(3), "p": tiny_predictor("continuous"), "o": tiny_oracle()}
    for name, m in models.items():
        m.save_pretrained(tmp_path / name)
    x, t = _x(), _t()
    for name, m in models.items():
        r = load_model(tmp_path / name, device="cpu")
        assert type(r) is type(m)
        assert not r.training
        _assert_same_state(m, r)
        with torch.no_grad():
            if isinstance(m, DiffusionModel):
                assert torch.equal(r(x, t), m(x, t))
            elif isinstance(m, NoiseAwarePredictor):
                assert torch.equal(r(x, t), m(x, t))
            else:
                assert torch.equal(r(x), m(x))


def test_load_model_unknown_kind(tmp_path):
    save_checkpoint(tmp_path / "c", {"kind": "gan"}, {"w": torch.zeros(1)})
    with pytest.raises(DiffSCMError, match="unknown kind 'gan'"):
        load_model(tmp_path / "c")


@pytest.mark.parametrize("kind", [["diffusion"], {"a": 1}, 3, None])
def test_load_model_non_string_kind(tmp_path, kind):
    save_checkpoint(tmp_path / "c", {"kind": kind}, {"w": torch.zeros(1)})
    with pytest.raises(DiffSCMError, match="kind"):
        load_model(tmp_path / "c")
