"""Worker for tests/test_distributed.py: train a tiny predictor with a noise-free loss through ``fit``.

    python tests/workers/ddp_fit.py OUT                         # one process
    torchrun --nproc_per_node 2 tests/workers/ddp_fit.py OUT    # data-parallel over 2 processes (gloo)

With a deterministic loss and equal shares, the averaged gradient of the ranks is the single-process gradient, so
both runs must end at the same weights (up to float summation order).
"""
import sys

import torch

from diffscm.distributed import topology
from diffscm.models import NoiseAwarePredictor
from diffscm.train.loop import TrainConfig, fit


def main(out: str) -> None:
    torch.manual_seed(0)
    model = NoiseAwarePredictor({"channels": [8, 16], "temb_dim": 16, "groups": 4})
    g = torch.Generator().manual_seed(1)
    images = torch.rand((64, 1, 28, 28), generator=g) * 2 - 1
    labels = torch.randint(10, (64,), generator=g)

    def loss(x, y, gen):
        return -model.log_prob(x, torch.full((x.shape[0],), 100), y).mean()

    cfg = TrainConfig(steps=5, batch_size=8, lr=1e-2, warmup=1, save_every=5, log_every=5)
    fit(model, loss, images, labels, cfg, out, quiet=True, top=topology(), log=lambda s: None)


if __name__ == "__main__":
    main(sys.argv[1])
