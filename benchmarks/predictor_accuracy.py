"""Accuracy of the noise-aware digit predictor on x_t ~ q(x_t | x_0) against t, into docs/RESULTS.md.

    python benchmarks/predictor_accuracy.py [--model mnist] [--n 1000] [--seed 0]

Beside it, on the same x_t, the Bayes classifier under the empirical prior: p(y | x_t) ∝ Σ_{x_0 ∈ train, class y}
N(x_t; √ᾱ_t x_0, (1 − ᾱ_t) I) over the 50k training images. At large t its kernel is wide next to the spacing of
the training images, so it approaches the Bayes-optimal accuracy: the ceiling any predictor can reach there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from diffscm.data import load_mnist, to_model_range
from diffscm.device import pick_device
from diffscm.eval.basics import predictor_accuracy
from diffscm.eval.report import md_table, write_section
from diffscm.scm import SCM

ROOT = Path(__file__).resolve().parents[1]
TIMESTEPS = [0, 100, 250, 400, 500, 750, 999]


def empirical_bayes_accuracy(alphas: torch.Tensor, test_u8: np.ndarray, test_y: np.ndarray, timesteps: list[int],
                             seed: int = 0) -> dict[int, float]:
    """Accuracy of the posterior under the training images as the prior, on the x_t that predictor_accuracy draws."""
    xtr, ytr = load_mnist("train")
    train = to_model_range(xtr).double().flatten(1)
    ytr = torch.as_tensor(ytr)
    x0 = to_model_range(test_u8)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).double().flatten(1)
    x0 = x0.double().flatten(1)
    out = {}
    for t in timesteps:
        a = alphas[t].double()
        xt, centres = a.sqrt() * x0 + (1 - a).sqrt() * noise, a.sqrt() * train
        hits = []
        for i in range(0, len(xt), 250):
            logk = -torch.cdist(xt[i:i + 250], centres) ** 2 / (2 * (1 - a))
            post = torch.stack([torch.logsumexp(logk[:, ytr == k], 1) for k in range(10)], 1)
            hits.append(post.argmax(1).numpy() == test_y[i:i + 250])
        out[t] = float(np.concatenate(hits).mean())
    return out


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
    a = scm.image_mechanism.alphas_cumprod.cpu()
    bayes = empirical_bayes_accuracy(a, x[: args.n], y[: args.n], TIMESTEPS, seed=args.seed)
    print(json.dumps({"predictor": acc, "empirical_bayes": bayes}))
    rows = [[t, f"{float(a[t]):.4f}", f"{v:.3f}", f"{bayes[t]:.3f}"] for t, v in acc.items()]
    md = ["### Noise-aware predictor accuracy against t", "",
          f"Command: `python benchmarks/predictor_accuracy.py --model {args.model} --n {args.n} --seed {args.seed}`. "
          f"First {args.n} test images, x_t drawn from q(x_t | x_0) with a fixed noise seed. Beside the predictor, "
          "on the same x_t, the Bayes classifier under the empirical prior (the 50k training images, Gaussian "
          "kernel of q(x_t | x_0)): at large t it approaches the best accuracy any classifier of x_t can reach.", "",
          md_table(["t", "ᾱ_t", "predictor accuracy", "empirical-Bayes accuracy"], rows)]
    write_section(args.results, "predictor-accuracy", "\n".join(md))


if __name__ == "__main__":
    main()
