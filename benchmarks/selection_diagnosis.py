"""Score inference settings of a fitted SCM as `diffscm fit`'s tuning does, on any slice of the validation images:
the counterfactuals under each image parent's intervention, read by the fit's selection models (never the oracles),
and the null intervention's round trip. A diagnosis beside the tuning rule, not a selection.

    python benchmarks/selection_diagnosis.py --model runs/cmq2/quick --data-dir data/cmq2 \
        --selection runs/cmq2/quick.parts/selection --start 64 --stop 160 \
        --setting '{"guidance": "changed", "cfg_weights": {"digit": 2, "hue": 1.5}}' \
        --setting '{"guidance": "all", "cfg_weights": {"digit": 2, "hue": 1.5}}'

Each ``--setting`` is a JSON object of `InferenceOptions` fields over the SCM's defaults.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffscm.eval.report import md_table
from diffscm.eval.tune import SelectionJudge, mean_error
from diffscm.scm.core import SCM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--selection", type=Path, required=True, help="folder with one selection model per image parent")
    ap.add_argument("--start", type=int, default=64, help="first val image (the tuning uses 0..63)")
    ap.add_argument("--stop", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", action="append", default=[], help="JSON object of inference options")
    args = ap.parse_args()
    scm = SCM.from_pretrained(args.model, "cpu")
    parents = list(scm.graph.image.parents)
    judge = SelectionJudge(scm, args.data_dir, {p: args.selection / p for p in parents}, args.start, args.stop,
                           args.seed)
    rows = []
    for text in args.setting or ["{}"]:
        opts = scm.options(**json.loads(text))
        t0 = time.time()
        back = judge.method(opts).predict(judge.latent(opts), judge.attrs, args.seed, factual=judge.attrs)
        trip = np.abs(back.astype(np.float64) - judge.x.astype(np.float64))
        errs = judge.errors(opts)
        rows.append([text, f"{mean_error(errs):.3f}",
                     *[f"{errs[d][p]:.3f}" for d in parents for p in parents],
                     f"{trip.max():.0f} / {trip.mean():.2f}", f"{time.time() - t0:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    head = ["setting", "mean error", *[f"do({d}): {p} error" for d in parents for p in parents],
            "null round trip max / mean (0–255)", "s"]
    print(f"\nval images {args.start}..{args.start + judge.n - 1} (n = {judge.n}), seed {args.seed}\n")
    print(md_table(head, rows))


if __name__ == "__main__":
    main()
