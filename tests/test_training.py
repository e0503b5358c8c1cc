"""Training loop: losses fall on learnable toy data, resume is bit-exact, checkpoints hold no pickles."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_UNET
from diffscm.train import loop as tr
from diffscm.errors import DiffSCMError
from diffscm.models import DiffusionModel, NoiseAwarePredictor, Oracle
from diffscm.schedule import make_alphas_cumprod


def toy_data(n: int = 64):
    """Two classes: a bright left half or a bright right half, on 28×28 in [-1, 1]."""
    y = torch.arange(n) % 2
    x = -torch.ones(n, 1, 28, 28)
    x[y == 0, :, :, :14] = 1.0
    x[y == 1, :, :, 14:] = 1.0
    return x, y


def quiet_fit(model, loss, x, y, cfg, out, **kw):
    logs = []
    tr.fit(model, loss, x, y, cfg, out, log=logs.append, quiet=True, **kw)
    return [json.loads(s) for s in logs if s.startswith("{")]


def test_diffusion_loss_decreases(tmp_path):
    torch.manual_seed(0)
    model = DiffusionModel({"unet": TINY_UNET})
    x, y = toy_data()
    cfg = tr.TrainConfig(steps=60, batch_size=16, lr=2e-3, warmup=5, log_every=20, save_every=60, ema_decay=0.9)
    hist = quiet_fit(model, tr.diffusion_loss(model), x, y, cfg, tmp_path / "d")
    assert hist[-1]["loss"] < 0.6 * hist[0]["loss"]
    loaded = DiffusionModel.from_pretrained(tmp_path / "d")
    assert loaded.meta["step"] == 60


def test_predictor_and_oracle_learn(tmp_path):
    torch.manual_seed(0)
    x, y = toy_data()
    pred = NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4, "num_classes": 2})
    alphas = make_alphas_cumprod("linear").float()
    cfg = tr.TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=5, log_every=20, save_every=60)
    hist = quiet_fit(pred, tr.predictor_loss(pred, alphas), x, y, cfg, tmp_path / "p")
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    # at t = 0 the two classes are trivially separable
    with torch.no_grad():
        acc = (pred(x, torch.zeros((), dtype=torch.long)).argmax(1) == y).float().mean()
    assert acc == 1.0
    oracle = Oracle({"num_classes": 2})
    hist = quiet_fit(oracle, tr.oracle_loss(oracle), x, y, tr.TrainConfig(steps=30, batch_size=16, lr=1e-3, warmup=1,
                                                                           log_every=10, save_every=30), tmp_path / "o")
    assert hist[-1]["loss"] < hist[0]["loss"]


def train_tiny(cfg, out, seed=0, **kw):
    """A tiny diffusion model, seeded, trained quietly into ``out``."""
    torch.manual_seed(seed)   # resumed runs pass another seed: a fresh process starts from another RNG state
    model = DiffusionModel({"unet": TINY_UNET})
    return quiet_fit(model, tr.diffusion_loss(model), *toy_data(32), cfg, out, **kw)


def assert_same_trainer_state(a, b):
    sa, sb = (load_file(str(d / "trainer_state.safetensors")) for d in (a, b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_is_bit_exact(tmp_path):
    cfg6 = tr.TrainConfig(steps=6, batch_size=8, lr=1e-3, warmup=2, log_every=3, save_every=3, ema_decay=0.9)
    train_tiny(cfg6, tmp_path / "straight")
    train_tiny(tr.TrainConfig(**{**cfg6.__dict__, "steps": 3}), tmp_path / "resumed")
    train_tiny(cfg6, tmp_path / "resumed", seed=123, resume=True)
    assert_same_trainer_state(tmp_path / "straight", tmp_path / "resumed")


def test_a_stop_signal_checkpoints_its_step_and_the_run_resumes_bit_exactly(tmp_path):
    import os
    import signal

    cfg = tr.TrainConfig(steps=6, batch_size=8, lr=1e-3, warmup=2, log_every=3, save_every=6, ema_decay=0.9)
    train_tiny(cfg, tmp_path / "straight")
    before = signal.getsignal(signal.SIGTERM)
    kill = lambda step: step == 4 and os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(DiffSCMError, match="stopped by SIGTERM at step 4 of 6"):
        train_tiny(cfg, tmp_path / "stopped", on_step=kill)
    assert signal.getsignal(signal.SIGTERM) is before                  # the caller's handler is back
    assert json.loads((tmp_path / "stopped" / "trainer_state.json").read_text())["step"] == 4   # not a save step
    train_tiny(cfg, tmp_path / "stopped", seed=123, resume=True)
    assert_same_trainer_state(tmp_path / "straight", tmp_path / "stopped")


def test_refuses_to_clobber_and_checks_config(tmp_path):
    x, y = toy_data(16)
    cfg = tr.TrainConfig(steps=2, batch_size=4, save_every=2, log_every=1)
    m = Oracle({"num_classes": 2})
    quiet_fit(m, tr.oracle_loss(m), x, y, cfg, tmp_path / "o")
    with pytest.raises(DiffSCMError, match="already holds a checkpoint"):
        quiet_fit(Oracle({"num_classes": 2}), tr.oracle_loss(m), x, y, cfg, tmp_path / "o")
    with pytest.raises(DiffSCMError, match="another model config"):
        other = Oracle({"num_classes": 3})
        quiet_fit(other, tr.oracle_loss(other), x, y, tr.TrainConfig(steps=4, batch_size=4), tmp_path / "o", resume=True)


def test_sample_weights_decide_which_images_are_drawn(tmp_path):
    x, _ = toy_data(16)
    y = torch.arange(16)
    m = Oracle({"num_classes": 16})
    seen = []

    def loss(xb, yb, gen):
        seen.extend(yb.tolist())
        return tr.oracle_loss(m)(xb, yb, gen)

    w = torch.zeros(16, dtype=torch.float64)
    w[3], w[11] = 1.0, 3.0
    quiet_fit(m, loss, x, y, tr.TrainConfig(steps=50, batch_size=8, warmup=1), tmp_path / "o", sample_weights=w)
    assert set(seen) == {3, 11} and len(seen) == 400
    assert abs(seen.count(11) / 400 - 0.75) < 0.08          # 300 expected draws of 400, sd 8.7
    for bad in (torch.ones(15), -torch.ones(16), torch.zeros(16)):
        with pytest.raises(DiffSCMError, match="sample weights must be 16 non-negative values"):
            quiet_fit(Oracle({"num_classes": 16}), tr.oracle_loss(m), x, y, tr.TrainConfig(steps=1, batch_size=4),
                      tmp_path / "bad", sample_weights=bad)
    assert not (tmp_path / "bad").exists()                 # refused before anything is written


def test_checkpoint_folder_has_no_pickles(tmp_path):
    x, y = toy_data(16)
    m = Oracle({"num_classes": 2})
    quiet_fit(m, tr.oracle_loss(m), x, y, tr.TrainConfig(steps=2, batch_size=4, save_every=2), tmp_path / "o")
    for f in (tmp_path / "o").iterdir():
        assert not f.read_bytes().startswith(b"\x80"), f


def test_bf16_autocast_trains_and_is_recorded(tmp_path):
    torch.manual_seed(0)
    model = NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4, "num_classes": 2})
    x, y = toy_data()
    cfg = tr.TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=1, log_every=10, save_every=30)
    hist = quiet_fit(model, tr.predictor_loss(model, make_alphas_cumprod().float()), x, y, cfg, tmp_path / "p",
                     mixed_precision="bf16")
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist) and hist[-1]["loss"] < hist[0]["loss"]
    assert all(v.dtype == torch.float32 for v in load_file(str(tmp_path / "p" / "model.safetensors")).values())
    state = json.loads((tmp_path / "p" / tr.STATE_JSON).read_text())
    assert state["segments"][-1]["mixed_precision"] == "bf16" and state["world"] == 1
    assert hist[-1]["images_per_s"] > 0
    with pytest.raises(DiffSCMError, match="mixed precision 'fp8'"):
        quiet_fit(model, tr.predictor_loss(model, make_alphas_cumprod().float()), x, y, cfg, tmp_path / "q",
                  mixed_precision="fp8")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, monkeypatch, native):
    monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda: native)
    model = NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4, "num_classes": 2})
    x, y = toy_data(16)
    logs = []
    tr.fit(model, tr.predictor_loss(model, make_alphas_cumprod().float()), x, y,
           tr.TrainConfig(steps=1, batch_size=8, warmup=1), tmp_path / "p", log=logs.append, quiet=True,
           mixed_precision="bf16")
    assert any("no native bf16" in s for s in logs) == (not native)
