"""Auxiliary image models: (conditional) VAEs and autoencoders for CLD and the baselines, and a small classifier.

* ``VAE({"latent": 16})`` — unconditional VAE whose posteriors q(z | x) define the CLD divergence;
* ``VAE({"latent": 16, "num_classes": 10})`` — conditional VAE p(x | z, y), the DeepSCM-style baseline;
* ``VAE({"latent": 16, "variational": False})`` — deterministic autoencoder of the prototype baseline.

Images enter in the model range [-1, 1]; the decoder outputs Bernoulli logits over pixel intensities in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Pretrained
from .predictor import Oracle


class VAE(Pretrained):
    """Convolutional (conditional) VAE / autoencoder for C×S×S images (default 1×28×28). ``channels`` lists the width
    after each stride-2 convolution, so S / ``input_pool`` must be divisible by 2**len(channels) (default [32, 64]).
    With ``input_pool`` f > 1 the model sees the images average-pooled by f (encoder input, reconstruction target and
    decoder output alike): for large images whose CLD posteriors need no full-resolution decoder."""

    kind = "vae"

    def __init__(self, config: dict):
        config = {"latent": 16, "num_classes": 0, "variational": True, "channels": [32, 64], "in_channels": 1,
                  "cond": None, "size": 28, **config}
        super().__init__(config)
        ch = list(config["channels"])
        k, cin, depth = self.cond_dim, config["in_channels"], len(ch)
        self.input_pool = f = int(config.get("input_pool", 1))
        if depth < 1 or config["size"] % f or (config["size"] // f) % 2 ** depth:
            raise ValueError(f"VAE image size / input_pool must be divisible by {2 ** depth}, got {config['size']} / {f}")
        self._s4 = s4 = config["size"] // f // 2 ** depth
        enc: list[nn.Module] = []
        for c_in, c_out in zip([cin + k] + ch[:-1], ch):
            enc += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.SiLU()]
        self.enc = nn.Sequential(*enc, nn.Flatten(), nn.Linear(ch[-1] * s4 * s4, 256), nn.SiLU())
        self.to_stats = nn.Linear(256, config["latent"] * (2 if config["variational"] else 1))
        self.dec_in = nn.Sequential(nn.Linear(config["latent"] + k, 256), nn.SiLU(), nn.Linear(256, ch[-1] * s4 * s4), nn.SiLU())
        dec: list[nn.Module] = []
        for c_in, c_out in zip(ch[::-1][:-1], ch[::-1][1:]):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.SiLU()]
        self.dec = nn.Sequential(*dec, nn.ConvTranspose2d(ch[0], cin, 4, 2, 1))   # logits

    @property
    def cond_dim(self) -> int:
        spec = self.config["cond"]
        if spec:
            return sum(p["num_classes"] if p["kind"] == "categorical" else 1 for p in spec)
        return self.config["num_classes"]

    @property
    def conditional(self) -> bool:
        return self.cond_dim > 0

    def _onehot(self, y: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
        """Condition vector: one-hot digit, or for ``cond`` specs one-hot categorical + standardised continuous
        columns of ``y`` (N, len(cond))."""
        if not self.conditional:
            return None
        if y is None:
            raise ValueError("a conditional VAE needs labels")
        y = y.to(ref.device)
        spec = self.config["cond"]
        if not spec:
            return F.one_hot(y.long(), self.config["num_classes"]).to(ref.dtype)
        y = y.view(y.shape[0], -1)
        cols = []
        for j, p in enumerate(spec):
            if p["kind"] == "categorical":
                cols.append(F.one_hot(y[:, j].long(), p["num_classes"]).to(ref.dtype))
            else:
                cols.append(((y[:, j].to(ref.dtype) - p["mean"]) / p["std"]).view(-1, 1))
        return torch.cat(cols, dim=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.input_pool) if self.input_pool > 1 else x

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z | x[, y]) (log-variance is −inf-free zeros for an autoencoder)."""
        h = x = self._pool(x)
        oh = self._onehot(y, x)
        if oh is not None:
            h = torch.cat([h, oh[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        stats = self.to_stats(self.enc(h))
        if not self.config["variational"]:
            return stats, torch.zeros_like(stats)
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        oh = self._onehot(y, z)
        h = self.dec_in(z if oh is None else torch.cat([z, oh], dim=1))
        return self.dec(h.view(-1, self.config["channels"][-1], self._s4, self._s4))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean as an image in [-1, 1]."""
        return torch.sigmoid(self.decode_logits(z, y)) * 2 - 1

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction from the posterior mean, in [-1, 1]."""
        return self.decode(self.encode(x, y)[0], y)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator | None = None,
             beta: float = 1.0) -> torch.Tensor:
        """Negative ELBO per image (Bernoulli likelihood on intensities in [0, 1]); BCE only for an autoencoder."""
        mu, logvar = self.encode(x, y)
        z = mu
        if self.config["variational"]:
            z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        target = (self._pool(x) + 1) / 2
        rec = F.binary_cross_entropy_with_logits(self.decode_logits(z, y), target, reduction="none").flatten(1).sum(1)
        if not self.config["variational"]:
            return rec.mean()
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
        return (rec + beta * kl).mean()


class Classifier(Oracle):
    """A clean-image classifier distinct from the oracle (used by the prototype baseline, never for scoring)."""

    kind = "classifier"
