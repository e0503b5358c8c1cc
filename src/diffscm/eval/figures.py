"""Evaluation and sweep reports: ``index.md`` + PNG plots and image grids, written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import atomic_write_dir
from .report import fmt, md_table, results_table
from .viz import save_grid

GRID_N = 12


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn (not at start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_methods(results: list[dict], path: Path) -> None:
    """Bar charts of the main metrics per method with their 95% CIs."""
    keys = [("effectiveness", "effectiveness ↑"), ("cld", "CLD (0.8/0.2) ↓"), ("reversibility_l1", "reversibility L1 ↓"),
            ("composition_l1_10", "composition L1, m=10 ↓"), ("kid_oracle", "KID (oracle) ↓")]
    keys = [(k, t) for k, t in keys if any(k in r["metrics"] for r in results)]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 3.2))
    axes = np.atleast_1d(axes)
    names = [r["method"] for r in results]
    for ax, (k, title) in zip(axes, keys):
        m = [r["metrics"].get(k) or {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan} for r in results]
        mean = np.array([v["mean"] for v in m])
        err = np.clip(np.array([[v["mean"] - v["ci_low"] for v in m], [v["ci_high"] - v["mean"] for v in m]]), 0, None)
        ax.bar(range(len(m)), mean, yerr=err, capsize=3, color=[f"C{i}" for i in range(len(m))])
        ax.set_xticks(range(len(m)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_evaluation_report(out: Path, results: list[dict], generated: dict, real: dict) -> None:
    """Table of all methods, a plot of the main metrics, one factual/counterfactual/reversal grid per method."""
    def write(tmp: Path) -> None:
        plot_methods(results, tmp / "metrics.png")
        lines = ["# Counterfactual evaluation", "",
                 f"The first n images of the `{results[0]['protocol']['split']}` split (n per row; composition m=10 on "
                 f"the first images as listed), seeds {results[0]['protocol']['seeds']}; mean [bootstrap 95% CI over "
                 "images]; KID ×10³ as mean ± subset std [range over seeds], FID with its range over seeds. L1 on the "
                 "0–255 scale. The real set of KID/FID is held-out `valid` images.", "",
                 results_table(results), "",
                 f"The same measures for {real['n']} real {results[0]['protocol']['split']} images (the floor for this "
                 f"sample size): KID ×10³ {real['kid_oracle_real'] * 1e3:.2f} ± {real['kid_oracle_real_std'] * 1e3:.2f}, "
                 f"FID {real['fid_oracle_real']:.2f}.", "",
                 "![metrics](metrics.png)", ""]
        for r in results:
            gen = generated[r["method"]]
            s = sorted(gen.cf)[0] if gen.cf else None
            rows = [("factual", gen.x[:GRID_N])]
            labels = [str(int(d)) for d in gen.digits[:GRID_N]]
            if s is not None:
                rows.append(("do(digit)", gen.cf[s][:GRID_N]))
                labels = [f"{int(d)}>{int(t)}" for d, t in zip(gen.digits[:GRID_N], gen.targets[s][:GRID_N])]
            if gen.rev:
                rows.append(("reversed", gen.rev[s][:GRID_N]))
            for m, imgs in sorted(gen.comp.items()):
                rows.append((f"null x{m}", imgs[:GRID_N]))
            name = f"grid_{r['method']}.png"
            save_grid(rows, tmp / name, col_labels=labels)
            lines += [f"## {r['method']}", "", f"Settings: `{json.dumps(r['settings'], default=str)}`", "",
                      f"![{r['method']}]({name})", ""]
        (tmp / "index.md").write_text("\n".join(lines))

    atomic_write_dir(out, write)


def plot_sweep(results: list[dict], param: str, path: Path) -> None:
    """CLD (both weightings) and effectiveness against the swept parameter, with 95% CIs."""
    vals = [r["value"] for r in results]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, label in (("cld", "CLD (w = 0.8/0.2)"), ("cld_equal_weights", "CLD (w = 0.5/0.5)")):
        m = [r["metrics"][key] for r in results]
        axes[0].errorbar(vals, [v["mean"] for v in m], yerr=_err(m),
                         marker="o", capsize=3, label=label)
    e = [r["metrics"]["effectiveness"] for r in results]
    axes[1].errorbar(vals, [v["mean"] for v in e], yerr=_err(e),
                     marker="o", capsize=3, color="C2")
    axes[0].set_ylabel("CLD ↓")
    axes[1].set_ylabel("effectiveness ↑")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel({"scale": "guidance scale s", "steps": "DDIM grid N", "ratio": "ratio L"}[param])
        if param == "scale" and min(vals) >= 0 and max(vals) > 8 * max(min(v for v in vals if v > 0), 1e-9):
            ax.set_xscale("symlog", linthresh=0.5)
        ax.grid(alpha=0.3)
    r0 = results[0]
    fig.suptitle(f"Diff-SCM on MNIST ({r0['split']} split, n = {r0['n']}, seed {r0['seed']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sweep_report(out: Path, param: str, results: list[dict], generated: list) -> None:
    """Plot, table and the grid of counterfactuals against the swept value (the paper's figure)."""
    def write(tmp: Path) -> None:
        plot_sweep(results, param, tmp / f"sweep_{param}.png")
        first = generated[0]
        s = sorted(first.cf)[0]
        rows = [("factual", first.x[:GRID_N])]
        for r, gen in zip(results, generated):
            rows.append((f"{param}={r['value']:g}", gen.cf[s][:GRID_N]))
        labels = [f"{int(d)}>{int(t)}" for d, t in zip(first.digits[:GRID_N], first.targets[s][:GRID_N])]
        save_grid(rows, tmp / f"grid_{param}.png", col_labels=labels)
        table = md_table([param, "effectiveness ↑", "CLD (0.8/0.2) ↓", "CLD (0.5/0.5) ↓", "KID ↓", "FID ↓", "L1 change"],
                         [[f"{r['value']:g}"] + [_fmt(r["metrics"][k]) for k in
                                                 ("effectiveness", "cld", "cld_equal_weights", "kid_oracle", "fid_oracle", "cf_l1_change")]
                          for r in results])
        r0 = results[0]
        text = [f"# Sweep of {param}", "", f"{r0['n']} images of the `{r0['split']}` split, seed {r0['seed']}, judged "
                f"by the {r0.get('judge', 'oracle')} classifier; mean [bootstrap 95% CI; KID: ± subset std].", "", table, "", f"![sweep](sweep_{param}.png)", "",
                f"![grid](grid_{param}.png)", ""]
        (tmp / "index.md").write_text("\n".join(text))

    atomic_write_dir(out, write)


def _err(m: list[dict]) -> np.ndarray:
    return np.clip(np.array([[v["mean"] - v["ci_low"] for v in m], [v["ci_high"] - v["mean"] for v in m]]), 0, None)


def _fmt(m: dict) -> str:
    return fmt(m, 3)


def heat_overlay(image: np.ndarray, amap: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """RGB uint8: the image in grey with the anomaly map (``inferno``, 0..vmax) blended where it is high."""
    from matplotlib import colormaps

    grey = image.mean(0) if image.ndim == 3 else image
    vmax = float(amap.max()) if vmax is None else vmax
    a = np.clip(amap / vmax, 0, 1) if vmax > 0 else np.zeros_like(amap)
    heat = colormaps["inferno"](a)[..., :3]
    base = np.repeat(grey[..., None], 3, axis=2)
    alpha = a[..., None] * 0.8
    return np.round((base * (1 - alpha) + heat * alpha) * 255).astype(np.uint8)
