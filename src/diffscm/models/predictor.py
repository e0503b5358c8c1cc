"""Anti-causal predictors p_φ(pa | x_t, t) (noise-aware) and the clean-image oracle classifier."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pretrained


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int):
        super().__init__()
        self.n1 = nn.GroupNorm(groups, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(groups, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class NoiseAwarePredictor(Pretrained):
    """Time-conditioned CNN predicting one parent from a noisy image x_t.

    ``target_kind`` ``categorical`` outputs ``num_classes`` logits; ``continuous`` outputs a Gaussian mean and
    log-σ for a value standardised by ``target_mean``/``target_std``. Timesteps are on the diffusion model's
    0..T-1 scale — the very values the sampler passes — so training and querying cannot disagree.
    """

    kind = "predictor"

    def __init__(self, config: dict):
        config = {"in_channels": 1, "channels": [32, 64, 64], "temb_dim": 128, "groups": 8,
                  "target": "digit", "target_kind": "categorical", "num_classes": 10,
                  "target_mean": 0.0, "target_std": 1.0, "num_train_timesteps": 1000, **config}
        super().__init__(config)
        if config["target_kind"] not in ("categorical", "continuous"):
            raise ValueError(f"unknown target_kind {config['target_kind']!r}")
        ch, td, g = config["channels"], config["temb_dim"], config["groups"]
        self.temb = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.inp = nn.Conv2d(config["in_channels"], ch[0], 3, padding=1)
        blocks, downs = [], []
        cin = ch[0]
        for i, c in enumerate(ch):
            blocks.append(_ResBlock(cin, c, td, g))
            downs.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(ch) - 1 else nn.Identity())
            cin = c
        self.blocks, self.downs = nn.ModuleList(blocks), nn.ModuleList(downs)
        self.out_norm = nn.GroupNorm(g, cin)
        n_out = config["num_classes"] if config["target_kind"] == "categorical" else 2
        self.head = nn.Linear(cin, n_out)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.temb(timestep_embedding(t, self.config["temb_dim"]))
        h = self.inp(x)
        for block, down in zip(self.blocks, self.downs):
            h = down(block(h, temb))
        h = F.silu(self.out_norm(h)).mean(dim=(2, 3))
        return self.head(h)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p_φ(value | x_t, t) per sample (categorical: log-softmax; continuous: Gaussian log-density of the
        standardised value, i.e. up to the constant log ``target_std``, which guidance gradients ignore)."""
        out = self(x, t)
        if self.config["target_kind"] == "categorical":
            return out.log_softmax(dim=1).gather(1, value.long().view(-1, 1)).squeeze(1)
        z = (value.float() - self.config["target_mean"]) / self.config["target_std"]
        mu, log_sigma = out[:, 0], out[:, 1].clamp(-7, 5)
        return -0.5 * ((z - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)


class Oracle(Pretrained):
    """Clean-image CNN classifier used only for evaluation (never for guidance).

    ``view`` ``channel-max`` reads the per-pixel maximum over the ``in_channels`` channels (colour-blind)."""

    kind = "oracle"

    def __init__(self, config: dict):
        config = {"in_channels": 1, "num_classes": 10, "image_size": 28, **config}
        super().__init__(config)
        # large images are average-pooled by ``input_pool`` first, so the head stays small
        self.input_pool = int(config.get("input_pool", 1))
        self.view = config.get("view", "image")
        if self.view not in ("image", "channel-max"):
            raise ValueError(f"oracle view {self.view!r}: use image or channel-max")
        s = config["image_size"] // self.input_pool // 4
        c1, c2 = config.get("channels", [32, 64])
        hidden = config.get("hidden", 128)
        self.conv = nn.Sequential(
            nn.Conv2d(1 if self.view == "channel-max" else config["in_channels"], c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(c2 * s * s, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(hidden, config["num_classes"]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (``hidden``-d, 128 by default) features, e.g. for a Fréchet distance."""
        if self.view == "channel-max":
            x = x.amax(1, keepdim=True)
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class RegressionOracle(Oracle):
    """Clean-image CNN regressor of one continuous attribute (evaluation only); outputs the value in its units."""

    kind = "regressor"

    def __init__(self, config: dict):
        super().__init__({"target": "thickness", "target_mean": 0.0, "target_std": 1.0, **config, "num_classes": 1})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised prediction (N,)."""
        return self.head(self.features(x)).squeeze(1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x) * self.config["target_std"] + self.config["target_mean"]
