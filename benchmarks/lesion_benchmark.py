"""Lesion-MNIST localisation benchmark: implicit guidance vs classifier guidance vs AnoDDPM-style vs VAE.

    for s in 0 1 2; do diffscm data lesion-mnist --seed $s --train $([ $s = 0 ] && echo 20000 || echo 0) \\
        --val 500 --test 1000 --out runs/lesion/data-seed$s; done
    python benchmarks/lesion_benchmark.py data --data runs/lesion/data-seed0 runs/lesion/data-seed1 runs/lesion/data-seed2
    python benchmarks/lesion_benchmark.py sweep --data runs/lesion/data-seed0 --n-val 100 --steps 50
    python benchmarks/lesion_benchmark.py table --data runs/lesion/data-seed0 runs/lesion/data-seed1 runs/lesion/data-seed2 \\
        --n-val 100 --n-test 200 --from-sweep

``sweep`` searches dynamic normalisation, w, L, the classifier scale s, the AnoDDPM L and the grid size N on the
validation split of seed 0 (one at a time, keeping the best Dice at the best threshold) and plots Dice vs w and vs L; ``table`` runs the four methods on the val/test splits
of every seed (threshold chosen on val, applied to test) and draws image / mask / counterfactual / map per method.
Writes docs/results/lesion_{sweep,table}.json, the `lesion-sweep` / `lesion-table` sections of docs/RESULTS.md and
docs/evaluation/lesion/*.png. Generation is cached chunk by chunk (rerunning resumes).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from diffscm.eval.figures import heat_overlay
from diffscm.eval.protocols.lesion import localization_table
from diffscm.data.mnist import cache_dir
from diffscm.device import pick_device
from diffscm.eval.protocols.lesion import (
    LocalizationModels,
    LocalizationProtocol,
    evaluate_localization,
    healthy_images,
    load_benchmark_split,
    maps_of,
    sweep,
)
from diffscm.eval.report import md_table, write_section
from diffscm.files import write_text_atomic
from diffscm.scm import SCM

ROOT = Path(__file__).resolve().parents[1]


def _plot(rows: list[dict], param: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=120)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r[param], r["dice"]) for r in rows if r["method"] == method and param in r)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method)
    ax.set_xlabel({"w": "implicit guidance weight w", "ratio": "sampling progression ratio L"}.get(param, param))
    ax.set_ylabel("Dice (val, best threshold)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run_sweep(args, models, proto, cache) -> None:
    """Coordinate-wise search on seed 0's validation split; each step keeps the best Dice so far:
    dynamic normalisation (implicit) -> w -> L (implicit) -> L (anoddpm) -> s (classifier) -> N (implicit)."""
    root = Path(args.data[0])
    floats = lambda spec: [float(v) for v in spec.split(",")]  # noqa: E731
    plan = [("implicit", "dynamic_norm", [True, False]),
            ("implicit", "w", floats(args.w_values)),
            ("implicit", "ratio", floats(args.l_values)),
            ("anoddpm", "ratio", floats(args.l_values)),
            ("classifier", "classifier_scale", floats(args.s_values))]
    if args.n_values:
        plan.append(("implicit", "steps", [int(v) for v in args.n_values.split(",")]))
    rows, chosen, t0 = [], {}, time.time()
    start = asdict(proto)
    for method, param, values in plan:
        t = time.time()
        if proto_value(proto, method, param) not in values:
            values = [*values, proto_value(proto, method, param)]
        got = sweep(models, root, proto, method, param, values, 0, cache, progress=not args.quiet)
        for r in got:
            print(json.dumps(r), flush=True)
        rows += got
        best = max(got, key=lambda r: r["dice"])
        key = "anoddpm_ratio" if (method, param) == ("anoddpm", "ratio") else param
        proto = replace(proto, **{key: best[param]})
        chosen[key] = best[param]
        print(f"# {method} {param}: best {best[param]} (Dice {best['dice']:.3f}); {time.time() - t:.0f} s", flush=True)
    out = {"command": args.command_line, "start": start, "chosen": chosen, "protocol": asdict(proto), "data": str(root),
           "rows": rows, "wall_seconds": round(time.time() - t0, 1)}
    write_text_atomic(ROOT / "docs/results/lesion_sweep.json", json.dumps(out, indent=2) + "\n")
    figs = ROOT / "docs/evaluation/lesion"
    _plot([r for r in rows if "w" in r], "w", figs / "dice_vs_w.png", "implicit guidance; other settings as chosen before w")
    _plot([r for r in rows if "ratio" in r], "ratio", figs / "dice_vs_L.png", "L; other settings as chosen before L")
    table_rows = []
    for r in rows:
        param = next(k for k in ("dynamic_norm", "w", "ratio", "classifier_scale", "steps") if k in r)
        table_rows.append([r["method"], f"{param} = {r[param]}", f"{r['dice']:.3f}", f"{r['auprc']:.3f}",
                           f"{r['auroc']:.3f}"])
    n_les = int(load_benchmark_split(root, "val", proto.n_val, models.label).table[models.label].sum())
    md = ("### Lesion localisation: settings searched on validation\n\n"
          f"Validation split of seed 0 ({proto.n_val} images, {n_les} lesioned). Start: N = {start['steps']}, "
          f"L = {start['ratio']}, w = {start['w']}, s = {start['classifier_scale']}, dynamic normalisation "
          f"{'on' if start['dynamic_norm'] else 'off'}; one setting varied at a time, in the order of the table, each "
          "keeping the best Dice (at the best threshold on this split) for the next. Chosen: "
          + ", ".join(f"{k} = {v}" for k, v in chosen.items()) + f". Wall time {out['wall_seconds'] / 60:.0f} min.\n\n"
          f"```\n{args.command_line}\n```\n\n"
          + md_table(["method", "setting", "Dice (val)", "AUPRC (val)", "AUROC (val)"], table_rows)
          + "\n\n![Dice vs w](evaluation/lesion/dice_vs_w.png) ![Dice vs L](evaluation/lesion/dice_vs_L.png)\n")
    write_section(ROOT / "docs/RESULTS.md", "lesion-sweep", md)


def proto_value(proto, method: str, param: str):
    if (method, param) == ("anoddpm", "ratio"):
        return proto.anoddpm_ratio or proto.ratio
    return getattr(proto, param)


def _figure(models, proto, root: Path, cache, path: Path, n: int = 6) -> None:
    from diffscm.eval.viz import save_grid

    test = load_benchmark_split(root, "test", proto.n_test, models.label)
    idx = np.flatnonzero(test.table[models.label] == 1)[:n]
    rows = [("image", np.round(test.images[idx, 0] * 255).astype(np.uint8)),
            ("lesion mask", (test.masks[idx] * 255).astype(np.uint8))]
    maps = {}
    for method in ("implicit", "classifier", "anoddpm", "vae"):
        xh = healthy_images(models, method, test, proto, 0, cache, f"figure {method}", progress=False)
        maps[method] = m = maps_of(test, xh, proto)
        rows.append((f"{method} x_h", np.round(xh[idx, 0] * 255).astype(np.uint8)))
        rows.append((f"{method} map", np.round(np.clip(m[idx] / 0.5, 0, 1) * 255).astype(np.uint8)))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(rows, path, scale=3, label_width=110)
    # a colour overlay of the implicit method for the README
    from PIL import Image

    tiles = [heat_overlay(test.images[k], maps["implicit"][k], 0.5) for k in idx]
    Image.fromarray(np.concatenate(tiles, 1)).resize((28 * 4 * len(idx), 28 * 4), Image.NEAREST).save(path.with_name("overlay_implicit.png"))


def run_table(args, models, proto, cache) -> None:
    roots = {}
    for k, d in enumerate(args.data):
        info = json.loads((Path(d) / "dataset.json").read_text())
        roots[int(info.get("seed", k))] = Path(d)
    t0 = time.time()
    res = evaluate_localization(models, roots, proto, args.methods.split(","), cache, progress=not args.quiet)
    res["wall_seconds"] = round(time.time() - t0, 1)
    res["command"] = args.command_line
    write_text_atomic(ROOT / "docs/results/lesion_table.json", json.dumps(res, indent=2) + "\n")
    fig = ROOT / "docs/evaluation/lesion/examples.png"
    _figure(models, proto, roots[min(roots)], cache, fig)
    n_les = []
    for s, r in sorted(roots.items()):
        t = load_benchmark_split(r, "test", proto.n_test, models.label)
        n_les.append(int(t.table[models.label].sum()))
    md = ("### Lesion localisation on Lesion-MNIST\n\n"
          f"Seeds {', '.join(map(str, sorted(roots)))}: each seed is its own Lesion-MNIST draw (lesions and digits); "
          f"{proto.n_val} validation images choose the Dice threshold, {proto.n_test} test images "
          f"({', '.join(map(str, n_les))} lesioned) are scored. Mean over seeds with a 95% t-interval "
          f"[low, high]. Grid N = {proto.steps}, L = {proto.ratio}; dynamic normalisation "
          f"{'on' if proto.dynamic_norm else 'off'}; map = |x − x_h| ({proto.reduce} over channels, σ = {proto.sigma}); "
          f"image score = mean of the map's top {proto.top} pixels. Wall time {res['wall_seconds'] / 60:.0f} min on "
          f"this machine.\n\n```\n{args.command_line}\n```\n\n" + localization_table(res)
          + "\n\nPer seed (test Dice / AUPRC / AUROC):\n\n"
          + md_table(["method", *[f"seed {s}" for s in sorted(roots)]],
                     [[m, *[f"{p['dice']:.3f} / {p['auprc']:.3f} / {p['auroc']:.3f}" for p in r["per_seed"]]]
                      for m, r in res["methods"].items()])
          + "\n\n![examples](evaluation/lesion/examples.png)\n\n"
          "Rows: lesioned test images of seed 0, their masks, then per method the healthy image x_h and the map "
          "(|x − x_h| / 0.5, white = 0.5 or more).\n")
    write_section(ROOT / "docs/RESULTS.md", "lesion-table", md)
    print(localization_table(res))


def run_data(args) -> None:
    """Statistics of the Lesion-MNIST folders (no model needed)."""
    from diffscm.data.folder import load_folder

    rows, stats = [], []
    for d in args.data:
        info = json.loads((Path(d) / "dataset.json").read_text())
        for split in info["counts"]:
            ds = load_folder(d, split=split)
            les = ds.table["lesion"] == 1
            area = ds.masks[les].reshape(int(les.sum()), -1).sum(1)
            dark = float(np.mean(ds.table["polarity"][les] == "dark"))
            st = {"seed": info["seed"], "split": split, "n": len(ds), "lesioned": int(les.sum()),
                  "mask_px_mean": float(area.mean()), "mask_px_min": int(area.min()), "mask_px_max": int(area.max()),
                  "dark_fraction": dark, "lesion_pixel_fraction": float(ds.masks.mean())}
            stats.append(st)
            rows.append([info["seed"], split, len(ds), st["lesioned"], f"{st['mask_px_mean']:.1f} ({st['mask_px_min']}–{st['mask_px_max']})",
                         f"{dark:.2f}", f"{100 * st['lesion_pixel_fraction']:.2f}%"])
    write_text_atomic(ROOT / "docs/results/lesion_data.json", json.dumps({"command": args.command_line, "splits": stats}, indent=2) + "\n")
    md = ("### Lesion-MNIST: the benchmark data\n\n"
          "Real MNIST digits; a random half of each split gets one synthetic lesion (generator documented in "
          "`diffscm.data.lesions`: centre on a foreground pixel, elliptical, semi-axes U(2, 5) px, soft edge, smooth "
          "noise texture, dark (a textured hole in the stroke) or bright (a swelling into the background), contrast "
          "U(0.5, 1)); the mask is the lesion's pixels that changed by ≥ 0.1. Seeds draw independent lesions and, for "
          "val/test, disjoint digits.\n\n"
          f"```\n{args.command_line}\n```\n\n"
          + md_table(["seed", "split", "images", "lesioned", "mask pixels mean (min–max)", "dark fraction",
                      "lesion pixels / all pixels"], rows) + "\n")
    write_section(ROOT / "docs/RESULTS.md", "lesion-data", md)
    print(md)


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["data", "sweep", "table"])
    ap.add_argument("--model", default="lesion-mnist")
    ap.add_argument("--data", nargs="+", required=True, help="dataset folders (one per seed; sweep uses the first)")
    ap.add_argument("--methods", default="implicit,classifier,anoddpm,vae")
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--ratio", type=float, default=None)
    ap.add_argument("--w", type=float, default=None)
    ap.add_argument("--classifier-scale", type=float, default=None)
    ap.add_argument("--anoddpm-ratio", type=float, default=None, help="L of the AnoDDPM-style baseline (default --ratio)")
    ap.add_argument("--sigma", type=float, default=0.0)
    ap.add_argument("--w-values", default="0,1,2,3,5,8")
    ap.add_argument("--l-values", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--s-values", default="0.5,2,8")
    ap.add_argument("--n-values", default="25,50,100")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", default=str(cache_dir() / "evaluate_lesion"))
    ap.add_argument("--from-sweep", action="store_true", help="table: use the settings chosen by the sweep "
                    "(docs/results/lesion_sweep.json); explicit flags still win")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    args.command_line = "python benchmarks/lesion_benchmark.py " + " ".join(sys.argv[1:])
    if args.stage == "data":
        return run_data(args)
    scm = SCM.from_pretrained(args.model, pick_device(args.device))
    models = LocalizationModels.from_scm(scm)
    proto = LocalizationProtocol.from_scm(scm, models.label, n_val=args.n_val, n_test=args.n_test,
                                          batch_size=args.batch_size, chunk=args.batch_size, sigma=args.sigma)
    if args.stage == "table" and args.from_sweep:
        chosen = json.loads((ROOT / "docs/results/lesion_sweep.json").read_text())["chosen"]
        proto = replace(proto, **chosen)
    over = {"steps": args.steps, "ratio": args.ratio, "w": args.w, "classifier_scale": args.classifier_scale,
            "anoddpm_ratio": args.anoddpm_ratio}
    proto = replace(proto, **{k: v for k, v in over.items() if v is not None})
    cache = Path(args.cache)
    (run_sweep if args.stage == "sweep" else run_table)(args, models, proto, cache)


if __name__ == "__main__":
    main()
