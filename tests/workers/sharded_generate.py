"""Worker for tests/test_distributed.py: the evaluation harness's generation, chunk by chunk, on 1 or 2 processes.

    python tests/workers/sharded_generate.py SCM CACHE OUT.npz
    torchrun --nproc_per_node 2 tests/workers/sharded_generate.py SCM CACHE OUT.npz
"""
import sys

import numpy as np

from diffscm.distributed import topology
from diffscm.eval.harness import DiffSCMMethod, EvalProtocol, generate
from diffscm.scm import SCM


def main(scm_dir: str, cache: str, out: str) -> None:
    top = topology()
    scm = SCM.from_pretrained(scm_dir)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 1, 28, 28), dtype=np.uint8)
    digits = np.arange(7) % 10
    method = DiffSCMMethod(scm, scm.options(eta=0.5, batch_size=2))
    proto = EvalProtocol(n=7, seeds=(0, 1), comp_m=(1, 2), comp_n=3, chunk=2)
    gen = generate(method, x, digits, proto, cache=cache, progress=False, top=top)
    if top.is_main:
        arrays = {f"cf_{s}": v for s, v in gen.cf.items()}
        arrays.update({f"rev_{s}": v for s, v in gen.rev.items()})
        arrays.update({f"comp_{m}": v for m, v in gen.comp.items()})
        np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:4])
