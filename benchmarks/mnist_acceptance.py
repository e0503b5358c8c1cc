"""Acceptance figures of the shipped MNIST SCM (issue 2), written to docs/RESULTS.md.

    python benchmarks/mnist_acceptance.py [--model mnist] [--n-null 256] [--n-eff 1000] [--seed 0]

* oracle accuracy on the 10k test images;
* null intervention (abduct, predict with the factual digit, s = 0, N = 50, L = 1): mean |x − x̂| on [0, 1];
* effectiveness: oracle(counterfactual) == target for do(digit = random target ≠ factual), at the SCM defaults.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from diffscm.data import load_mnist
from diffscm.device import pick_device
from diffscm.evaluation import classify, effectiveness, null_intervention, random_targets
from diffscm.report import md_table, write_section
from diffscm.scm import SCM

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--n-null", type=int, default=256)
    ap.add_argument("--n-eff", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    scm = SCM.from_pretrained(args.model, pick_device(args.device))
    x, y = load_mnist("test")
    acc = float((classify(scm.oracle, x) == y).mean())
    print(f"oracle test accuracy {acc:.4f}")

    null_opts = scm.options(steps=50, ratio=1.0, scale=0.0, seed=args.seed)
    null = null_intervention(scm, x[: args.n_null], y[: args.n_null], null_opts)
    print(f"null intervention MAE {null['mae']:.4f} over {args.n_null} images")

    opts = scm.options(seed=args.seed)
    targets = random_targets(y[: args.n_eff], args.seed)
    eff = effectiveness(scm, scm.oracle, x[: args.n_eff], y[: args.n_eff], targets, opts)
    print(f"effectiveness {eff['effectiveness']:.4f} over {args.n_eff} images, {eff['images_per_s']:.2f} img/s")

    per_target = [float(eff["hits"][targets == k].mean()) for k in range(10)]
    result = {
        "oracle_test_accuracy": acc,
        "null_intervention": {"n": args.n_null, "mae_01": null["mae"], "max_image_mae_01": float(null["mae_per_image"].max()),
                              "options": null_opts.__dict__},
        "effectiveness": {"n": args.n_eff, "value": eff["effectiveness"], "per_target": per_target,
                          "l1_change_255": eff["l1_change_255"], "images_per_s": eff["images_per_s"],
                          "options": opts.__dict__},
        "seed": args.seed, "device": str(scm.device), "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    out_json = ROOT / "docs" / "results" / "mnist_acceptance.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")

    o = opts
    md = [
        "### MNIST acceptance (issue 2)",
        "",
        f"Command: `python benchmarks/mnist_acceptance.py --model {args.model} --n-null {args.n_null} "
        f"--n-eff {args.n_eff} --seed {args.seed}` (device {scm.device}, {torch.get_num_threads()} threads, {result['date']}).",
        "",
        md_table(["figure", "target", "measured"], [
            ["oracle accuracy, 10k test images", "≥ 0.99", f"{acc:.4f}"],
            [f"null intervention mean abs error on [0,1], {args.n_null} test images (N=50, L=1, s=0)", "≤ 0.03",
             f"{null['mae']:.4f}"],
            [f"effectiveness, {args.n_eff} test images, random target ≠ factual (defaults)", "≥ 0.90",
             f"{eff['effectiveness']:.4f}"],
            ["mean L1 change factual→counterfactual (0–255)", "—", f"{eff['l1_change_255']:.2f}"],
            ["counterfactual throughput (img/s, batch {})".format(o.batch_size), "—", f"{eff['images_per_s']:.2f}"],
        ]),
        "",
        f"Defaults: N = {o.steps}, L = {o.ratio}, s = {o.scales}, η = {o.eta}, clip x̂0 = {o.clip}, "
        f"dynamic normalisation = {o.dynamic_norm}. Effectiveness per target digit 0–9: "
        + ", ".join(f"{v:.2f}" for v in per_target) + ".",
        "Raw numbers: `docs/results/mnist_acceptance.json`.",
    ]
    write_section(args.results, "mnist-acceptance", "\n".join(md))


if __name__ == "__main__":
    main()
