"""Choose the Morpho-MNIST SCM's defaults on validation images, by a rule fixed before the sweep.

    python benchmarks/morpho_front.py --model morphomnist --data-dir DIR [--n 200] [--mechanisms conditional,paper]

DIR: a folder written by `diffscm data morphomnist --csv-dir MORPHO_DIR --split train --out DIR` (the 60k training
split). Validation images: the first --n of its last 2000 images, which training holds out (`--split train`); their
true counterfactuals are rendered from their source MNIST digits. Interventions as in the counterfactual
benchmark (one parent at a time: thickness or intensity from the training split's values in another of 9 equal bins,
or another digit), seed 0.

Selection signals — none of them is one of the benchmark's judges, which score only the test table:

* thickness and intensity of the counterfactual measured with our morphometrics, against those measured on the true
  counterfactual (under do(digit), on the factual, whose thickness and intensity do not change);
* the SCM's clean-image digit oracle: the target digit under do(digit), the factual digit under do(t) and do(i);
* the null intervention's L1 (0–255), images/s, and reversibility L1 (0–255) on the first REV_N = 25 images only
  (it costs more than the rest together and serves only as a filter).

Grids, the same budget of 24 settings for each mechanism, every setting with exact inversion (K fixed-point
iterations per step) and its weights and scales acting on the intervened parents only (abduction and un-intervened
parents unguided). Per-parent weights and scales, because probes of a part-trained model on validation images showed
the parents need different amounts: a classifier-free weight on thickness barely moves the measured thickness,
while an anti-causal thickness term removes its under-shoot; a weight just above 1 removes the intensity
under-shoot; anti-causal intensity guidance makes intensity worse.

* conditional: (N, K) ∈ {(5, 0), (10, 0), (20, 1)} × w_digit ∈ {1.5, 2} × (w_thickness, w_intensity,
  s_thickness) ∈ {(1, 1, 0), (1, 1.2, 0), (1, 1.2, 2), (1.5, 1.2, 2)}; plus ANCHOR (N = 50, K = 2, unguided: the
  most expensive, which only sets the floor and is never chosen);
* paper: (N, K) ∈ {(10, 0), (20, 0), (10, 1), (20, 1)} × scales (s_digit, s_thickness, s_intensity) ∈
  {(4, 2, 1), (4, 4, 2), (8, 2, 1), (8, 4, 2), (8, 4, 4), (16, 4, 2)}.

The rule, written down before the sweep:

  1. keep the settings with null L1 ≤ 1.0, digit accuracy ≥ 0.95 under every intervention and reversibility ≤ 10;
  2. score each by the mean, over do(t), do(i), do(d) and the two attributes, of its measured error divided by the
     published HVAE's error in that column (thickness .086 / .224 / .117 px, intensity 1.99 / 3.52 / 2.10): below 1
     is better than HVAE on average;
  3. choose the lowest score; settings within 2% of it count as ties and the cheapest of those wins (fewest network
     evaluations per counterfactual, as counted by ``mnist_front.cost``; then the most images/s). If none passes
     step 1, the lowest score among those with null L1 ≤ 1.0.

Writes docs/results/morpho_front.json and the `morpho-front` section of docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np

from diffscm.data import load_mnist
from diffscm.data import morphomnist as mm
from diffscm.data.mnist import cache_dir
from diffscm.device import pick_device
from diffscm.eval.basics import classify
from diffscm.eval.metrics import l1_255
from diffscm.eval.protocols.morpho import CFBENCH, CONTINUOUS, MorphoDiffSCM, MorphoProtocol, generate_morpho, true_counterfactuals
from diffscm.eval.report import md_table, write_section
from diffscm.scm import SCM
from diffscm.data.morphomnist import MORPHO_VALID, load_morpho_folder, morpho_split
from mnist_front import cost

ROOT = Path(__file__).resolve().parents[1]
HVAE = {"thickness": (.086, .224, .117), "intensity": (1.99, 3.52, 2.10)}
REV_N = 25
ANCHOR = {"mechanism": "conditional", "steps": 50, "inversion": "exact", "inversion_iters": 2,
          "w": {"digit": 1.0, "thickness": 1.0, "intensity": 1.0}, "scales": {}}


def grid(mechanisms) -> list[dict]:
    out = []
    if "conditional" in mechanisms:
        out += [{"mechanism": "conditional", "steps": n, "inversion": "exact", "inversion_iters": k,
                 "w": {"digit": wd, "thickness": wt, "intensity": wi}, "scales": {"thickness": st} if st else {}}
                for (n, k), wd, (wt, wi, st) in itertools.product(((5, 0), (10, 0), (20, 1)), (1.5, 2.0),
                                                                    ((1.0, 1.0, 0.0), (1.0, 1.2, 0.0), (1.0, 1.2, 2.0),
                                                                     (1.5, 1.2, 2.0)))]
        out.append(dict(ANCHOR))
    if "paper" in mechanisms:
        out += [{"mechanism": "paper", "steps": n, "inversion": "exact", "inversion_iters": k,
                 "scales": {"digit": sd, "thickness": st, "intensity": si}}
                for (n, k), (sd, st, si) in itertools.product(((10, 0), (20, 0), (10, 1), (20, 1)),
                                                              ((4.0, 2.0, 1.0), (4.0, 4.0, 2.0), (8.0, 2.0, 1.0),
                                                               (8.0, 4.0, 2.0), (8.0, 4.0, 4.0), (16.0, 4.0, 2.0)))]
    return out


def options(scm: SCM, st: dict):
    """Inference options of one grid point (weights and scales on the intervened parents only)."""
    return scm.options(mechanism=st["mechanism"], steps=st["steps"], ratio=1.0, inversion=st["inversion"],
                       inversion_iters=st["inversion_iters"], abduction="factual", clip=False, dynamic_norm=False,
                       guidance="intervened", scales=dict(st["scales"]), cfg_weights=dict(st.get("w", {})))


def score(row: dict) -> float:
    return float(np.mean([row[f"{a}_mae_{k}"] / HVAE[a][j] for a in CONTINUOUS for j, k in enumerate(CFBENCH)]))


def choose(rows: list[dict]) -> dict:
    """The rule of the module docstring."""
    ok = [r for r in rows if r["null_l1"] <= 1.0 and r["reversibility_l1"] <= 10
          and min(r[f"digit_accuracy_{k}"] for k in CFBENCH) >= 0.95]
    if not ok:
        pool = [r for r in rows if r["null_l1"] <= 1.0] or rows
        return min(pool, key=lambda r: r["score"])
    best = min(r["score"] for r in ok)
    return min((r for r in ok if r["score"] <= 1.02 * best), key=lambda r: (evaluations(r), -r["images_per_s"]))


def evaluations(r: dict) -> int:
    """Network evaluations per counterfactual (``mnist_front.cost``): a classifier-free weight ≠ 1 on any parent
    counts as one more ε pass per step, an anti-causal scale on any parent as one predictor gradient."""
    guided = any(v != 1 for v in r.get("w", {}).values())
    return cost({**r, "w": 2.0 if guided else 1.0, "scale": float(any(r["scales"].values())), "guidance": "intervened"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="morphomnist")
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mechanisms", default="conditional,paper")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", type=Path, default=cache_dir() / "evaluate_morpho")
    ap.add_argument("--rows", type=Path, default=cache_dir() / "morpho_front_rows.jsonl",
                    help="finished settings, one JSON line each: a rerun skips those measured with the same model, "
                         "options and images")
    args = ap.parse_args()
    scm = SCM.from_pretrained(args.model, pick_device(args.device))
    x_tr, a_tr, _ = load_morpho_folder(args.data_dir, "train")
    if len(x_tr) != 60000:
        raise SystemExit(f"{args.data_dir} holds {len(x_tr)} training images; build the full 60k split")
    x_val, a_val = morpho_split(x_tr, a_tr, "valid")
    src, _ = load_mnist("train+valid")
    n = min(args.n, MORPHO_VALID)
    x, attrs, source = x_val[:n], {k: v[:n] for k, v in a_val.items()}, src[-MORPHO_VALID:][:n]
    pool = {k: morpho_split(x_tr, a_tr, "train")[1][k] for k in CONTINUOUS}
    proto = MorphoProtocol(n=n, seeds=(0,), rev_seeds=(0,), rev_n=REV_N, comp_m=(1,), comp_n=0, protocol="cfbench")
    rows = []
    oracle = scm.oracles["digit"]
    done = {}
    if args.rows.exists():
        for line in args.rows.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    images = hashlib.sha256(x.tobytes()).hexdigest()[:12]
    true_cf = None
    for st in grid(args.mechanisms.split(",")):
        method = MorphoDiffSCM(scm, options(scm, st))
        key = hashlib.sha256(json.dumps({"method": method.settings(), "images": images}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        if key in done:
            rows.append(done[key])
            print(f"reused: {json.dumps(st)}", flush=True)
            continue
        t0 = time.perf_counter()
        gen = generate_morpho(method, scm, x, attrs, pool, proto, args.cache, progress=False)
        if true_cf is None:
            true_cf = true_counterfactuals(source, gen.truth, proto, args.cache, progress=False)
            meas_true = {k: mm.measure_batch(v) for k, v in true_cf.items()}
            meas_x = mm.measure_batch(x)
        row = {**st, "null_l1": float(l1_255(x, gen.comp[1]).mean())}
        rev = []
        for k in CFBENCH:
            cf = gen.cf[(0, k)]
            m_cf, m_ref = mm.measure_batch(cf), (meas_x if k == "digit" else meas_true[(0, k)])
            for a in CONTINUOUS:
                c = mm.METRIC_COLUMNS.index(a)
                row[f"{a}_mae_{k}"] = float(np.nanmean(np.abs(m_cf[:, c] - m_ref[:, c])))
            row[f"digit_accuracy_{k}"] = float((classify(oracle, cf) == gen.target[0][k]["digit"]).mean())
            back = gen.rev[(0, k)]
            rev.append(l1_255(x[:len(back)], back).mean())
        row["reversibility_l1"] = float(np.mean(rev))
        row["images_per_s"] = n / (gen.seconds["abduct"] + np.mean([gen.seconds[f"cf_0_{k}"] for k in CFBENCH]))
        row["score"] = score(row)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["key"] = key
        rows.append(row)
        with args.rows.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    choice = {m: choose([r for r in rows if r["mechanism"] == m and not (m == "conditional" and r["steps"] == ANCHOR["steps"])])
              for m in ("conditional", "paper") if any(r["mechanism"] == m for r in rows)}
    cmd = f"python benchmarks/morpho_front.py --model {args.model} --data-dir DIR --n {n} --mechanisms {args.mechanisms}"
    out = {"n": n, "rows": rows, "choice": choice, "command": cmd}
    (ROOT / "docs" / "results" / "morpho_front.json").write_text(json.dumps(out, indent=1) + "\n")
    table = []
    for r in rows:
        ws = " ".join(([f"w {'/'.join(f'{v:g}' for v in r['w'].values())}"] if "w" in r else [])
                      + ([f"s {','.join(f'{k[0]}={v:g}' for k, v in r['scales'].items())}"] if r["scales"] else []))
        inv = r["inversion"] + (f" K={r['inversion_iters']}" if r["inversion"] == "exact" else "")
        table.append([r["mechanism"], r["steps"], inv, ws,
                      " / ".join(f"{r[f'thickness_mae_{k}']:.3f}" for k in CFBENCH),
                      " / ".join(f"{r[f'intensity_mae_{k}']:.2f}" for k in CFBENCH),
                      " / ".join(f"{r[f'digit_accuracy_{k}']:.3f}" for k in CFBENCH),
                      f"{r['null_l1']:.2f}", f"{r['reversibility_l1']:.2f}", f"{r['score']:.3f}", f"{r['images_per_s']:.1f}"])
    md = ["### Morpho-MNIST: defaults chosen on validation images", "",
          f"Command: `{cmd}` (DIR: the 60k training split built with the community values). {n} held-out validation "
          "images; the rule is in the script's docstring. Errors measured with our morphometrics against the measured "
          "true counterfactual; digit accuracy by the SCM's clean-image oracle (not the benchmark's judges).", "",
          md_table(["mechanism", "N", "inversion", "weights digit/thickness/intensity, scales", "thickness MAE do(t)/do(i)/do(d)", "intensity MAE do(t)/do(i)/do(d)",
                    "digit acc. do(t)/do(i)/do(d)", "null L1", f"rev. L1 (first {REV_N})", "score (÷ HVAE)", "img/s"], table), "",
          "Chosen: " + "; ".join(f"{m}: {json.dumps({k: c[k] for k in ('steps', 'inversion', 'inversion_iters', 'w', 'scales') if k in c})}"
                                 for m, c in choice.items())]
    write_section(ROOT / "docs" / "RESULTS.md", "morpho-front", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
