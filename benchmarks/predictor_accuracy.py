"""Accuracy of the noise-aware digit predictor on x_t ~ q(x_t | x_0) against t, into docs/RESULTS.md.

    python benchmarks/predictor_accuracy.py [--model mnist] [--n 1000] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffscm.data import load_mnist
from diffscm.device import pick_device
from diffscm.evaluation import predictor_accuracy
from diffscm.report import md_table, write_section
from diffscm.scm import SCM

ROOT = Path(__file__).resolve().parents[1]
TIMESTEPS = [0, 100, 250, 400, 500, 750, 999]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    args = ap.parse_args()
    scm = SCM.from_pretrained(args.model, pick_device(args.device))
    x, y = load_mnist("test")
    acc = predictor_accuracy(scm, x[: args.n], y[: args.n], TIMESTEPS, seed=args.seed)
    print(json.dumps(acc))
    a = scm.image_mechanism.alphas_cumprod.cpu()
    rows = [[t, f"{float(a[t]):.4f}", f"{v:.3f}"] for t, v in acc.items()]
    md = ["### Noise-aware predictor accuracy against t (issue 2)", "",
          f"Command: `python benchmarks/predictor_accuracy.py --model {args.model} --n {args.n} --seed {args.seed}`. "
          f"First {args.n} test images, x_t drawn from q(x_t | x_0) with a fixed noise seed.", "",
          md_table(["t", "ᾱ_t", "accuracy"], rows)]
    write_section(args.results, "predictor-accuracy", "\n".join(md))


if __name__ == "__main__":
    main()
