"""Lesion-localisation metrics: pixel Dice at a threshold, pixel AUPRC, image-level AUROC, threshold selection.

* Dice of one image: 2|P ∩ G| / (|P| + |G|) with P = {map > τ}; reported as the mean over images whose ground
  truth mask is non-empty (lesioned images), the convention of weakly supervised segmentation papers;
* AUPRC: average precision of the pixel scores against the pixel labels over all pixels of all images
  (Σ_k (R_k − R_{k−1}) P_k over distinct score thresholds, as scikit-learn's ``average_precision_score``);
* AUROC: area under the ROC of image-level scores vs image labels, ties counted one half (Mann–Whitney U).
"""
from __future__ import annotations

import numpy as np


def dice_scores(maps: np.ndarray, masks: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image Dice of ``maps > threshold`` against boolean ``masks`` (N×H×W); NaN where both are empty."""
    pred = np.asarray(maps) > threshold
    gt = np.asarray(masks).astype(bool)
    inter = (pred & gt).reshape(len(gt), -1).sum(1)
    denom = pred.reshape(len(gt), -1).sum(1) + gt.reshape(len(gt), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), np.nan)


def mean_dice(maps: np.ndarray, masks: np.ndarray, threshold: float) -> float:
    """Mean Dice over images with a non-empty mask."""
    has = np.asarray(masks).reshape(len(masks), -1).any(1)
    if not has.any():
        return float("nan")
    return float(np.mean(dice_scores(np.asarray(maps)[has], np.asarray(masks)[has], threshold)))


def best_threshold(maps: np.ndarray, masks: np.ndarray, candidates: np.ndarray | None = None) -> tuple[float, float]:
    """The threshold maximising :func:`mean_dice` (chosen on validation data) and the Dice it reaches."""
    maps = np.asarray(maps)
    if candidates is None:
        lo, hi = float(maps.min()), float(maps.max())
        candidates = np.unique(np.quantile(maps, np.linspace(0.5, 0.9999, 200))) if hi > lo else np.array([lo])
    scores = [mean_dice(maps, masks, float(c)) for c in candidates]
    k = int(np.nanargmax(scores))
    return float(candidates[k]), float(scores[k])


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (area under the precision–recall curve, step-wise) of scores vs binary labels."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]   # last index of each distinct score
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count ½)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def image_scores(maps: np.ndarray, top: int = 10) -> np.ndarray:
    """Image-level anomaly score: the mean of each map's ``top`` largest values (a robust maximum)."""
    flat = np.asarray(maps).reshape(len(maps), -1)
    top = min(top, flat.shape[1])
    return np.sort(flat, axis=1)[:, -top:].mean(1)
