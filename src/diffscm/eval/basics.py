"""Acceptance measurements of the MNIST SCM: oracle accuracy, null-intervention error, effectiveness."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..data import from_model_range, to_model_range
from ..scm.mechanisms import InferenceOptions
from ..models import Oracle
from ..scm.core import SCM


def classify(oracle: Oracle, images_u8: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Oracle labels of uint8 images."""
    dev = next(oracle.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(images_u8), batch_size):
            out.append(oracle(to_model_range(images_u8[i:i + batch_size]).to(dev)).argmax(1).cpu())
    return torch.cat(out).numpy()


def predictor_accuracy(scm: SCM, images_u8: np.ndarray, labels: np.ndarray, timesteps: list[int], seed: int = 0,
                       name: str = "digit", batch_size: int = 500) -> dict[int, float]:
    """Accuracy of the noise-aware predictor on x_t ~ q(x_t | x_0) at each timestep (fixed noise seed)."""
    pred = scm.image_mechanism.predictors[name]
    a = scm.image_mechanism.alphas_cumprod.cpu()
    gen = torch.Generator().manual_seed(seed)
    x0 = to_model_range(images_u8)
    noise = torch.randn(x0.shape, generator=gen)
    out = {}
    with torch.inference_mode():
        for t in timesteps:
            hits = []
            for i in range(0, len(x0), batch_size):
                xt = a[t].sqrt() * x0[i:i + batch_size] + (1 - a[t]).sqrt() * noise[i:i + batch_size]
                tt = torch.full((len(xt),), t, dtype=torch.long, device=scm.device)
                hits.append(pred(xt.to(scm.device), tt).argmax(1).cpu().numpy() == labels[i:i + batch_size])
            out[t] = float(np.concatenate(hits).mean())
    return out


def null_intervention(scm: SCM, images_u8: np.ndarray, digits: np.ndarray, opts: InferenceOptions,
                      progress: bool = True) -> dict:
    """Abduct, then predict with the factual parents (do nothing): mean |x − x̂| on [0, 1] and timing."""
    x = to_model_range(images_u8)
    t0 = time.time()
    res = scm.counterfactual({scm.image_name: x, "digit": torch.as_tensor(digits)}, {}, opts, progress=progress)
    sec = time.time() - t0
    rec = from_model_range(res[scm.image_name])
    err = np.abs(rec.astype(np.float64) - images_u8.astype(np.float64)) / 255.0
    return {"mae": float(err.mean()), "mae_per_image": err.mean(axis=(1, 2)), "seconds": sec, "reconstruction": rec}


def effectiveness(scm: SCM, oracle: Oracle, images_u8: np.ndarray, digits: np.ndarray, targets: np.ndarray,
                  opts: InferenceOptions, progress: bool = True) -> dict:
    """Fraction of counterfactuals do(digit = target) that the oracle classifies as the target."""
    x = to_model_range(images_u8)
    t0 = time.time()
    res = scm.counterfactual({scm.image_name: x, "digit": torch.as_tensor(digits)},
                             {"digit": torch.as_tensor(targets)}, opts, progress=progress)
    sec = time.time() - t0
    cf = from_model_range(res[scm.image_name])
    pred = classify(oracle, cf)
    hit = pred == np.asarray(targets)
    l1 = np.abs(cf.astype(np.float64) - images_u8.astype(np.float64)).mean(axis=(1, 2))
    return {"effectiveness": float(hit.mean()), "hits": hit, "images_per_s": len(x) / sec, "seconds": sec,
            "l1_change_255": float(l1.mean()), "counterfactual": cf}


def random_targets(digits: np.ndarray, seed: int, num_classes: int = 10) -> np.ndarray:
    """A target ≠ the factual digit per sample, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(digits),), generator=g).numpy()
    return (np.asarray(digits) + shift) % num_classes
