"""Several processes over gloo (2 CPU processes via torchrun): sharded counterfactuals and evaluation equal the
single-process output; data-parallel training equals single-process training; a DDP run resumes exactly."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffscm.distributed import Topology, block

WORKERS = Path(__file__).parent / "workers"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # One thread per process everywhere: float results may depend on the thread count, not on the sharding.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_single(*args) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *map(str, args)], env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def run_torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_free_port()}",
           *map(str, args)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def cli(*args) -> list[str]:
    return ["-m", "diffscm.cli", *map(str, args)]


def test_blocks_cover_everything_once():
    for n in (0, 1, 5, 7, 100):
        for world in (1, 2, 3, 8):
            parts = [list(block(n, Topology(r, world))) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sharded_counterfactual_cli_equals_single_process(tiny_scm, idx_dir, tmp_path):
    # 7 batches of 3 (the last one short) over 2 ranks, η > 0 so the per-batch noise seeding is exercised too.
    common = ["counterfactual", "--model", tiny_scm, "--data-dir", idx_dir, "--index", "0:20", "--do", "digit=random",
              "--batch-size", 3, "--eta", 0.5, "--seed", 3, "--quiet"]
    run_single(*cli(*common, "--out", tmp_path / "one"))
    res = run_torchrun(*cli(*common, "--out", tmp_path / "two"))
    assert '"processes": 2' in res.stdout
    a, b = np.load(tmp_path / "one" / "counterfactuals.npz"), np.load(tmp_path / "two" / "counterfactuals.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (a["counterfactual"] != a["factual"]).any()


def test_sharded_evaluation_generation_equals_single_process(tiny_scm, tmp_path):
    # 4 chunks of 2 images over 2 ranks: counterfactuals (2 seeds), reversals and compositions m = 1, 2.
    run_single(WORKERS / "sharded_generate.py", tiny_scm, tmp_path / "cache1", tmp_path / "one.npz")
    run_torchrun(WORKERS / "sharded_generate.py", tiny_scm, tmp_path / "cache2", tmp_path / "two.npz")
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(a.files) == sorted(b.files) == ["cf_0", "cf_1", "comp_1", "comp_2", "rev_0", "rev_1"]
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    chunks = sorted(p.name for p in next((tmp_path / "cache2").iterdir()).glob("chunk_*.npz"))
    assert chunks == [f"chunk_{i:04d}.npz" for i in range(4)]


def test_data_parallel_training_equals_single_process(tmp_path):
    run_single(WORKERS / "ddp_fit.py", tmp_path / "one")
    run_torchrun(WORKERS / "ddp_fit.py", tmp_path / "two")
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    torch.manual_seed(0)
    from diffscm.models import NoiseAwarePredictor

    init = NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4}).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 1e-2   # it trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)


@pytest.mark.parametrize("what", ["predictor"])
def test_ddp_cli_training_resumes_exactly(what, tiny_scm, idx_dir, tmp_path):
    diffusion = tiny_scm / "diffusion"
    common = ["train", what, "--data-dir", idx_dir, "--diffusion", diffusion, "--batch-size", 8, "--save-every", 3,
              "--quiet"]
    run_torchrun(*cli(*common, "--steps", 6, "--out", tmp_path / "straight"))
    run_torchrun(*cli(*common, "--steps", 3, "--out", tmp_path / "split"))
    run_torchrun(*cli(*common, "--steps", 6, "--out", tmp_path / "split", "--resume"))
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    state = load_file(str(tmp_path / "split" / "trainer_state.safetensors"))
    assert "rng.dev.1" in state and not torch.equal(state["rng.dev"], state["rng.dev.1"])


def test_training_rejects_uneven_batches(tmp_path):
    from diffscm.errors import DiffSCMError
    from diffscm.models import NoiseAwarePredictor
    from diffscm.train.loop import TrainConfig, fit

    model = NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4})
    with pytest.raises(DiffSCMError, match="does not split evenly over 2 processes"):
        fit(model, lambda x, y, g: x.mean(), torch.zeros(4, 1, 28, 28), torch.zeros(4), TrainConfig(batch_size=5),
            tmp_path / "x", top=Topology(0, 2))
    assert not (tmp_path / "x").exists()
