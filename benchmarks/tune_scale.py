"""Choose the default guidance scale on the held-out validation split (never the test split); into docs/RESULTS.md.

    python benchmarks/tune_scale.py --model DIR --scales 1,2,4,8,16 --n 200 --seed 0 [--steps 50 --ratio 1.0]

For each s: oracle effectiveness of do(digit = random target) on the first ``--n`` validation images, and the mean
L1 change (0–255) between factual and counterfactual as a minimality proxy. The chosen s is the smallest whose
effectiveness is within 1 point of the best.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from diffscm.data import load_mnist
from diffscm.device import pick_device
from diffscm.eval.basics import effectiveness, random_targets
from diffscm.eval.report import md_table, write_section
from diffscm.scm import SCM

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--scales", default="1,2,4,8,16")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--ratio", type=float, default=1.0)
    ap.add_argument("--clip", choices=["none", "clip", "dynamic"], default="none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    args = ap.parse_args()

    scm = SCM.from_pretrained(args.model, pick_device(args.device))
    x, y = load_mnist("valid")
    x, y = x[: args.n], y[: args.n]
    targets = random_targets(y, args.seed)
    rows, raw = [], []
    for s in [float(v) for v in args.scales.split(",")]:
        opts = scm.options(steps=args.steps, ratio=args.ratio, scale=s, seed=args.seed,
                           clip=args.clip == "clip", dynamic_norm=args.clip == "dynamic")
        r = effectiveness(scm, scm.oracle, x, y, targets, opts, progress=False)
        raw.append({"scale": s, "effectiveness": r["effectiveness"], "l1_change_255": r["l1_change_255"]})
        rows.append([s, f"{r['effectiveness']:.3f}", f"{r['l1_change_255']:.1f}"])
        print(json.dumps(raw[-1]), flush=True)
    best = max(r["effectiveness"] for r in raw)
    chosen = min(r["scale"] for r in raw if r["effectiveness"] >= best - 0.01)
    (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "results" / "tune_scale.json").write_text(json.dumps({"rows": raw, "chosen": chosen,
                                                                            "args": vars(args)}, indent=2) + "\n")
    md = ["### Guidance scale chosen on the validation split", "",
          f"Command: `python benchmarks/tune_scale.py --model {args.model} --scales {args.scales} --n {args.n} "
          f"--steps {args.steps} --ratio {args.ratio} --clip {args.clip} --seed {args.seed}` ({time.strftime('%Y-%m-%d')}). "
          f"do(digit = random target) on the first {args.n} images of the held-out `valid` split.", "",
          md_table(["scale s", "effectiveness (oracle)", "mean L1 change (0–255)"], rows), "",
          f"Chosen default: s = {chosen:g} (smallest s within 1 point of the best effectiveness)."]
    write_section(args.results, "tune-scale", "\n".join(md))
    print(f"chosen scale {chosen:g}")


if __name__ == "__main__":
    main()
