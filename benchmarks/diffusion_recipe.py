"""Retrain only the image model of a finished `diffscm fit` under another recipe, keeping every other part.

The other parts (flows, oracles, selection models, VAE) are copied from ``--from`` (a fit's work folder), so two
recipes can be compared with the same judges: score both with `benchmarks/selection_diagnosis.py` and the
source fit's selection models. The result is packed (not tuned) into ``--out``.

    python benchmarks/diffusion_recipe.py --graph examples/graphs/colour-mnist.yaml --data-dir data/cm \
        --from runs/cm/quick.parts --out runs/cm/additive --budget quick \
        --set diffusion=1500 --set p_parent=0.2 --set p_all=0.1 --set scale_shift=false

Each ``--set`` overrides one field of the budget (`diffscm.train.fit.Budget`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from diffscm.scm.graph import CausalGraph
from diffscm.train.fit import BUDGETS, fit_scm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graph", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--from", dest="source", type=Path, required=True, help="work folder of a finished fit")
    ap.add_argument("--out", type=Path, required=True, help="SCM folder to write (its parts go to OUT.parts)")
    ap.add_argument("--budget", default="quick", choices=list(BUDGETS))
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a budget field, as JSON")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = {f.name for f in dataclasses.fields(BUDGETS[args.budget])}
    changes = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in names or name == "name":
            raise SystemExit(f"--set {item}: not a budget field ({', '.join(sorted(names - {'name'}))})")
        changes[name] = json.loads(value)
    budget = dataclasses.replace(BUDGETS[args.budget], **changes)
    work = args.out.parent / f"{args.out.name}.parts"
    work.mkdir(parents=True, exist_ok=True)
    for part in sorted(args.source.iterdir()):
        if part.is_dir() and part.name != "diffusion" and not (work / part.name).exists():
            shutil.copytree(part, work / part.name)
    fit_scm(CausalGraph.from_file(args.graph), args.data_dir, args.out, budget=budget, work=work, resume=True,
            seed=args.seed, progress=False, command=f"benchmarks/diffusion_recipe.py {' '.join(args.set)}")
    print(args.out)


if __name__ == "__main__":
    main()
