"""Colour-MNIST: real MNIST digits drawn in a colour that the digit causes, with noise (digit -> hue -> image).

As in causal-gen's Colour-MNIST, each digit class has its own foreground hue, with the same noise (sigma = 0.05) and
the same small share of images (p = 0.01) whose hue is uniform instead:

    hue   := u_uniform                               if b = 1,   b ~ Bernoulli(0.01),  u_uniform ~ U(0, 1)
             (digit + 0.5) / 10 + sigma * u_hue      otherwise,  u_hue ~ N(0, 1) truncated (below)
    image := the MNIST digit (zero-padded to 32x32) times the fully saturated RGB colour of ``hue``, on black

u_hue is truncated to |u_hue| <= 2.5 and to the values that keep the hue inside [0, 1] (by rejection, so no mass
piles up at the bounds). The noise makes neighbouring digits' hues overlap, and the uniform share puts every digit in
every colour: without them, do(hue) would ask the image model about digit-colour pairs it has never seen.

The hue spans 5/6 of the colour wheel (0° to 300°), so that no two hues share a colour: on the full wheel, hue 0
and hue 1 would both be red, and an oracle could not tell them apart. Because the image mechanism is known, the true
counterfactual of any do(hue) is the same MNIST digit rendered in the new hue (:func:`render`).
"""
from __future__ import annotations

import numpy as np

from ..errors import DiffSCMError

SIGMA = 0.05       # causal-gen's Colour-MNIST: the hue noise ...
P_UNIFORM = 0.01   # ... and the share of images whose hue is uniform
TRUNCATE = 2.5
SIZE = 32
SOURCES = {"train": "train", "val": "valid", "test": "test"}   # our split -> the MNIST split its digits come from
GRAPH = {"variables": [   # also examples/graphs/colour-mnist.yaml, and in each built folder's dataset.json
    {"name": "digit", "kind": "categorical", "num_classes": 10, "parents": [], "oracle_view": "channel-max"},
    {"name": "hue", "kind": "continuous", "low": 0.0, "high": 1.0, "parents": ["digit"]},
    {"name": "image", "kind": "image", "parents": ["digit", "hue"]},
]}


WHEEL = 5.0 / 6.0   # the part of the colour wheel that hues 0..1 span: red (0°) to magenta (300°)


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Fully saturated, full-value RGB in [0, 1] of hues in [0, 1] (N -> N x 3): the HSV colour at WHEEL * hue turns."""
    h = WHEEL * np.asarray(hue, dtype=np.float64)[..., None]
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0      # the HSV -> RGB formula with S = V = 1
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def hue_mechanism(digit: np.ndarray, u_hue: np.ndarray, u_uniform: np.ndarray | None = None,
                  uniform: np.ndarray | None = None) -> np.ndarray:
    """hue := u_uniform where ``uniform``, else (digit + 0.5) / 10 + SIGMA * u_hue, clipped to [0, 1] (the clip only
    acts on counterfactual digits: sampled noise keeps the factual hue inside)."""
    band = np.clip((np.asarray(digit, dtype=np.float64) + 0.5) / 10.0 + SIGMA * np.asarray(u_hue, dtype=np.float64),
                   0.0, 1.0)
    if uniform is None:
        return band
    return np.where(np.asarray(uniform, dtype=bool), np.asarray(u_uniform, dtype=np.float64), band)


def sample_noise(digit: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The hue noise of each digit: ``uniform`` ~ Bernoulli(P_UNIFORM), ``u_uniform`` ~ U(0, 1), and ``u_hue`` ~ N(0, 1)
    truncated to [-TRUNCATE, TRUNCATE] and to the values whose band hue lies in [0, 1] (by rejection)."""
    digit = np.asarray(digit, dtype=np.float64)
    n = len(digit)
    uniform = rng.random(n) < P_UNIFORM
    u_uniform = rng.random(n)
    u = rng.standard_normal(n)

    def bad(k):
        h = (digit[k] + 0.5) / 10.0 + SIGMA * u[k]
        return (np.abs(u[k]) > TRUNCATE) | (h < 0.0) | (h > 1.0)

    idx = np.flatnonzero(bad(np.arange(n)))
    while len(idx):
        u[idx] = rng.standard_normal(len(idx))
        idx = idx[bad(idx)]
    return {"u_hue": u, "u_uniform": u_uniform, "uniform": uniform}


def render(digits_u8: np.ndarray, hue: np.ndarray) -> np.ndarray:
    """uint8 N x 3 x 32 x 32: each 28 x 28 MNIST digit, zero-padded by 2 px, in the colour of its hue."""
    digits_u8 = np.asarray(digits_u8)
    if digits_u8.ndim != 3 or digits_u8.shape[1:] != (28, 28):
        raise DiffSCMError(f"render needs N x 28 x 28 MNIST digits, got shape {digits_u8.shape}")
    hue = np.asarray(hue, dtype=np.float64)
    if hue.shape != (len(digits_u8),):
        raise DiffSCMError(f"render needs one hue per digit: {len(digits_u8)} digits, hue shape {hue.shape}")
    if not np.all((hue >= 0) & (hue <= 1)):
        raise DiffSCMError("hue must lie in [0, 1]")
    pad = (SIZE - 28) // 2
    grey = np.zeros((len(digits_u8), SIZE, SIZE))
    grey[:, pad:pad + 28, pad:pad + 28] = digits_u8
    rgb = hue_to_rgb(hue)                                   # N x 3
    return np.round(grey[:, None] * rgb[:, :, None, None]).astype(np.uint8)


def colour_mnist(seed: int, counts: dict[str, int], data_dir=None) -> dict[str, dict[str, np.ndarray]]:
    """The splits ``train`` / ``val`` / ``test`` (first ``counts[split]`` digits of MNIST train / valid / test), each
    with images, digit, hue, its noise (u_hue, u_uniform, uniform) and the source MNIST index; seeded, one generator
    per split."""
    from .mnist import load_mnist

    out = {}
    for k, (split, n) in enumerate(counts.items()):
        if split not in SOURCES:
            raise DiffSCMError(f"unknown split {split!r} (train, val or test)")
        x, y = load_mnist(SOURCES[split], data_dir)
        if n > len(x):
            raise DiffSCMError(f"--{split} {n} exceeds the {len(x)} MNIST {SOURCES[split]} images")
        rng = np.random.default_rng([seed, k])
        noise = sample_noise(y[:n], rng)
        hue = hue_mechanism(y[:n], **noise)
        out[split] = {"images": render(x[:n], hue), "digit": np.asarray(y[:n], dtype=np.int64), "hue": hue,
                      **noise, "source_index": np.arange(n)}
    return out


def true_counterfactuals(split: str, source_index: np.ndarray, digit: np.ndarray, cf: dict[str, np.ndarray],
                         data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The true counterfactual images of rows of ``split`` under the counterfactual attributes ``cf`` (digit, hue),
    and a mask of the rows that have one: the same MNIST digit in the new hue, where the digit is unchanged (a new
    digit has no true image)."""
    from .mnist import load_mnist

    if split not in SOURCES:
        raise DiffSCMError(f"unknown split {split!r} (train, val or test)")
    x, _ = load_mnist(SOURCES[split], data_dir)
    ok = np.asarray(cf["digit"]) == np.asarray(digit)
    return render(x[np.asarray(source_index, dtype=np.int64)], np.clip(cf["hue"], 0.0, 1.0)), ok
