"""How close our regenerated Morpho-MNIST is to the community files, into docs/RESULTS.md.

    python benchmarks/morphomnist_data.py --reference MORPHO_DIR [--n 10000] [--workers 2]

MORPHO_DIR holds the community files of the Morpho-MNIST release (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz,
t10k-morpho.csv, train-labels-idx1-ubyte.gz).

* pixel error of our test images, rendered from real MNIST with the community (t, i) of ``t10k-morpho.csv``,
  against the official test images (``t10k-images-idx3-ubyte.gz``);
* our morphometrics on the *official* images against the CSV's sampled thickness/intensity;
* our morphometrics on *our* images against the targets (how well set_thickness / intensity rescaling hit them);
* the labels of the official files against MNIST's (same order).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffscm.data import load_mnist, read_idx
from diffscm.data import morphomnist as mm
from diffscm.eval.report import md_table, write_section

ROOT = Path(__file__).resolve().parents[1]


def stats(err: np.ndarray) -> dict:
    a = np.abs(err)
    return {"mae": float(a.mean()), "bias": float(err.mean()), "p95": float(np.quantile(a, 0.95)),
            "within_0.3": float((a <= 0.3).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reference", required=True, help="folder with the community Morpho-MNIST files")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    ap.add_argument("--json", default=str(ROOT / "docs" / "results" / "morphomnist_data.json"))
    args = ap.parse_args()
    ref_dir = Path(args.reference)
    official = read_idx(ref_dir / "t10k-images-idx3-ubyte.gz")[: args.n]
    labels = read_idx(ref_dir / "t10k-labels-idx1-ubyte.gz")[: args.n]
    _, y_test = load_mnist("test")
    train_labels = read_idx(ref_dir / "train-labels-idx1-ubyte.gz")
    _, y_train = load_mnist("train+valid")
    limit = None if args.n >= len(y_test) else args.n
    ours, attrs, _ = mm.load_split("test", csv_dir=ref_dir, limit=limit)
    ours = ours[: args.n]
    t, i = attrs["thickness"][: args.n], attrs["intensity"][: args.n]
    diff = ours.astype(np.float64) - official.astype(np.float64)
    per_image = np.abs(diff).reshape(len(diff), -1).mean(1)
    m_off = mm.measure_batch(official, workers=args.workers, progress=True)
    m_ours = mm.measure_batch(ours, workers=args.workers, progress=True)
    ti, ii = mm.METRIC_COLUMNS.index("thickness"), mm.METRIC_COLUMNS.index("intensity")
    res = {
        "n": int(args.n),
        "labels_match_test": bool(np.array_equal(labels, y_test[: args.n])),
        "labels_match_train": bool(np.array_equal(train_labels, y_train)),
        "pixel_mae": float(np.abs(diff).mean()), "pixel_exact": float((diff == 0).mean()),
        "pixel_within_1": float((np.abs(diff) <= 1).mean()),
        "per_image_mae_median": float(np.median(per_image)), "per_image_mae_p99": float(np.quantile(per_image, 0.99)),
        "per_image_mae_max": float(per_image.max()),
        "official_thickness_vs_csv": stats(m_off[:, ti] - t), "official_intensity_vs_csv": stats(m_off[:, ii] - i),
        "ours_thickness_vs_target": stats(m_ours[:, ti] - t), "ours_intensity_vs_target": stats(m_ours[:, ii] - i),
        "official_vs_ours_thickness": stats(m_ours[:, ti] - m_off[:, ti]),
        "corr_official_thickness_csv": float(np.corrcoef(m_off[:, ti], t)[0, 1]),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))

    def row(name, d, unit):
        return [name, f"{d['mae']:.3f} {unit}", f"{d['bias']:+.3f}", f"{d['p95']:.3f}", f"{100 * d['within_0.3']:.1f}%"]

    md = ["### Morpho-MNIST regenerated from real MNIST", "",
          f"Command: `python benchmarks/morphomnist_data.py --reference MORPHO_DIR --n {args.n}` (MORPHO_DIR: the "
          "community files of the Morpho-MNIST release; deterministic; the test split is built by `diffscm data "
          "morphomnist --split test --csv-dir MORPHO_DIR`, i.e. with the community (t, i) of every image).", "",
          f"Our test images against the official ones ({args.n} images, 0–255): pixel MAE **{res['pixel_mae']:.3f}**, "
          f"{100 * res['pixel_exact']:.1f}% of pixels identical, {100 * res['pixel_within_1']:.1f}% within ±1; per-image MAE "
          f"median {res['per_image_mae_median']:.3f}, 99th percentile {res['per_image_mae_p99']:.2f}, max "
          f"{res['per_image_mae_max']:.2f}. Labels of the official files equal MNIST's in order: test "
          f"{res['labels_match_test']}, train {res['labels_match_train']}.", "",
          md_table(["measurement", "MAE", "bias", "95th percentile of abs. error", "share with abs. error ≤ 0.3"], [
              row("our thickness of the official images vs the CSV's t", res["official_thickness_vs_csv"], "px"),
              row("our thickness of our images vs the target t (set_thickness)", res["ours_thickness_vs_target"], "px"),
              row("our thickness: our images vs the official images", res["official_vs_ours_thickness"], "px"),
              row("our intensity of the official images vs the CSV's i", res["official_intensity_vs_csv"], "/255"),
              row("our intensity of our images vs the target i", res["ours_intensity_vs_target"], "/255"),
          ]), "",
          f"Correlation of our measured thickness (official images) with the CSV: {res['corr_official_thickness_csv']:.4f}. "
          "The CSV holds the *sampled* targets, not measurements, so part of the thickness gap is the perturbation's own "
          "error (the disk radius is ⌊16·|Δ|/2⌋ hires pixels, a step of 1/8 px, and downscaling blurs the stroke). "
          f"Our renderings and the official ones measure alike (thickness bias {res['official_vs_ours_thickness']['bias']:+.3f} px, "
          "third row); the remaining pixel differences sit on stroke borders (interpolation details of the pyramid "
          "up/downsampling and of the anti-aliased disk). Intensities are stored truncated to uint8, hence the ≈ −0.5 "
          "bias of the intensity rows."]
    write_section(args.results, "morphomnist-data", "\n".join(md))


if __name__ == "__main__":
    main()
