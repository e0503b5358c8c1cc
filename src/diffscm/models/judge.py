"""The counterfactual benchmark's judges (Melistas et al., 2024, after causal-gen): small CNNs on the 32×32
zero-padded image that score a counterfactual's digit, thickness and intensity.

The input is the 28×28 image zero-padded by 2 pixels, then scaled to [−1, 1] (the padding becomes −1, as in the
benchmark, which pads before normalising). Continuous targets are min–max scaled to [−1, 1] with the benchmark's
fixed ranges; the thickness judge also sees the (scaled) intensity, concatenated after pooling. Evaluation only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pretrained

# the benchmark's fixed min–max ranges of the Morpho-MNIST attributes
RANGES = {"thickness": (0.87598526, 6.255515), "intensity": (66.601204, 254.90317)}


def to_unit(values: torch.Tensor, name: str) -> torch.Tensor:
    lo, hi = RANGES[name]
    return 2 * (values - lo) / (hi - lo) - 1


def from_unit(z: torch.Tensor, name: str) -> torch.Tensor:
    lo, hi = RANGES[name]
    return (z + 1) / 2 * (hi - lo) + lo


def _block(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class Judge(Pretrained):
    """causal-gen's CNN (width 8): conv7 → [conv3 s2, conv3] × 3 → global mean → FC(64) → output.

    ``target`` ``digit``: 10 logits; ``thickness``/``intensity``: one value on the [−1, 1] scale. ``context``
    names attributes concatenated after pooling (the benchmark's thickness judge uses ``intensity``).
    """

    kind = "judge"

    def __init__(self, config: dict):
        config = {"target": "digit", "context": [], "width": 8, **config}
        super().__init__(config)
        w = config["width"]
        self.body = nn.Sequential(_block(1, w, 7, 1), _block(w, 2 * w, 3, 2), _block(2 * w, 2 * w, 3, 1),
                                  _block(2 * w, 4 * w, 3, 2), _block(4 * w, 4 * w, 3, 1), _block(4 * w, 8 * w, 3, 2))
        n_out = 10 if config["target"] == "digit" else 1
        self.fc = nn.Sequential(nn.Linear(8 * w + len(config["context"]), 8 * w, bias=False), nn.BatchNorm1d(8 * w),
                                nn.LeakyReLU(0.1), nn.Linear(8 * w, n_out))

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """Model-range 28×28 images ([−1, 1], background −1) → the padded 32×32 input."""
        return F.pad(x, [2, 2, 2, 2], value=-1.0) if x.shape[-1] == 28 else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (digit) or the scaled value (N,); ``context`` (N, len(context)) in the attributes' own units."""
        h = self.features(x)
        if self.config["context"]:
            if context is None:
                raise ValueError(f"the {self.config['target']} judge needs its context {self.config['context']}")
            ctx = torch.stack([to_unit(context[:, j].float(), n) for j, n in enumerate(self.config["context"])], 1)
            h = torch.cat([h, ctx.to(h)], 1)
        out = self.fc(h)
        return out if self.config["target"] == "digit" else out.squeeze(1)

    def predict(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The digit (argmax) or the value in the attribute's units (px, 0–255)."""
        out = self(x, context)
        return out.argmax(1) if self.config["target"] == "digit" else from_unit(out, self.config["target"])
