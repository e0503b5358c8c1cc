"""A docs/RESULTS.md section for an SCM fitted by `diffscm fit` and scored by `diffscm evaluate` on its folder:
the wall time of every part (from the packed `training.json` files) and the evaluation table (from its JSON).

    python benchmarks/fit_report.py --model runs/cm/quick --eval r.json --key colour-mnist-quick \
        --title "Colour-MNIST, quick budget" --command "diffscm fit …" --command "diffscm evaluate …"
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffscm.eval.protocols.generic import generic_table
from diffscm.eval.report import md_table, write_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--title", required=True)
    ap.add_argument("--command", action="append", default=[], help="the commands that made the model and the JSON")
    args = ap.parse_args()
    res = json.loads(args.eval.read_text())
    rows, total = [], 0.0
    for tj in sorted(args.model.rglob("training.json")):
        t = json.loads(tj.read_text())
        total += t["wall_seconds"]
        rows.append([tj.parent.relative_to(args.model).as_posix(), t["steps"], t["train"]["batch_size"],
                     f"{t['wall_seconds'] / 60:.1f} min", f"{t['final_loss']:.4f}"])
    p = res["protocol"]
    defaults = json.loads((args.model / "scm.json").read_text())["defaults"]
    chosen = defaults.get("cfg_weights") or defaults.get("scales")
    md = [f"### {args.title}", "", "Commands (2-core CPU):", "", *[f"    {c}" for c in args.command], "",
          md_table(["part", "steps", "batch", "wall", "final loss"], rows), "",
          f"Training wall time of the packed parts: {total / 60:.1f} min (the selection models and the tuning on "
          "validation images are in the command's wall time).", "",
          f"Guidance defaults chosen on validation images by the selection models: `{json.dumps(chosen)}`, scope "
          f"`{defaults.get('guidance', 'all')}`; the "
          "evaluation runs at these defaults, settings `" + json.dumps({k: res["settings"].get(k) for k in
                                                                      ("steps", "inversion", "guidance", "cfg_weights", "scales")}) + "`.", "",
          f"Evaluation: the first {p['n']} images of split `{res['split']}`, seeds {p['seeds']}; reversibility on the "
          f"first {p['rev_n']}, composition m = 10 on the first {p['comp_n']}; mean [95% bootstrap CI over images]. "
          "Effectiveness columns: the SCM's oracles read each parent of the counterfactual: accuracy (categorical), or "
          "MAE against the counterfactual value and `_within`, the fraction read within half a bin (1/18 of the "
          "support) of it (continuous). `true_l1`: L1 (0–255) against the true counterfactual, on the images that "
          "have one (the generator's rendering; a new digit has none).", "", generic_table(res)]
    write_section(ROOT / "docs" / "RESULTS.md", args.key, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
