"""How often a fitted SCM's conditional ε-model draws what it is asked for: fresh samples from noise under the
parent values of a split's rows, read by the SCM's oracles. This bounds the effectiveness a counterfactual can
reach from the same model, whatever the abduction.

    python benchmarks/sample_effectiveness.py --model runs/cms/standard --data-dir data/cmq --split val --n 100 \
        --weights digit=1,hue=1 --weights digit=3,hue=1 --seed 1
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from diffscm.data.transforms import from_model_range
from diffscm.eval.protocols.generic import _Oracles, load_split
from diffscm.scm.core import SCM
from diffscm.scm.guidance import parent_free
from diffscm.scm.sampling import ddim_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--weights", action="append", default=[], help="NAME=W,...: classifier-free weight per parent")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    scm = SCM.from_pretrained(args.model, "cpu")
    mech, oracles = scm.image_mechanism, _Oracles(scm)
    names = mech.diffusion.parent_names
    _, attrs, _ = load_split(scm, args.data_dir, args.split)
    values = torch.stack([torch.as_tensor(attrs[p][:args.n], dtype=torch.float32) for p in names], 1)
    grid = mech.grid(scm.options(steps=args.steps))
    print(f"| weights | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for spec in args.weights or ["1"]:
        w = dict(kv.split("=") for kv in spec.split(",")) if "=" in spec else {}
        weights = torch.tensor([float(w.get(p, 1.0)) for p in names])
        noise = torch.randn((len(values), *mech.diffusion.image_shape), generator=torch.Generator().manual_seed(args.seed))
        with torch.inference_mode():
            x = ddim_sample(parent_free(mech.cond_eps_fn(), values, weights), noise, mech.alphas_cumprod, grid)
        read = oracles.read(from_model_range(x.clamp(-1, 1)))
        cells = []
        for j, p in enumerate(names):
            if scm.graph.variables[p].kind == "categorical":
                cells.append(f"accuracy {np.mean(read[p] == values[:, j].numpy().astype(np.int64)):.2f}")
            else:
                cells.append(f"MAE {np.mean(np.abs(read[p] - values[:, j].numpy())):.4f}")
        print(f"| {spec} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
