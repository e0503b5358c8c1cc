"""cVAE-SCM (DeepSCM-style): image := decoder(z, digit); abduct z as the posterior mean of q(z | x, digit)."""
from __future__ import annotations

import numpy as np
import torch

from ...data import from_model_range, to_model_range
from ...models import VAE
from ...models.io import weights_key


class CVAEMethod:
    name = "cvae"

    def __init__(self, cvae: VAE, batch_size: int = 500):
        if not cvae.conditional:
            raise ValueError("the cVAE baseline needs a conditional VAE (num_classes > 0)")
        self.model, self.batch_size = cvae.eval(), batch_size

    @property
    def _dev(self):
        return next(self.model.parameters()).device

    def settings(self) -> dict:
        return {"method": "cvae", "latent": self.model.config["latent"], "abduction": "posterior mean",
                "weights": weights_key(self.model)}

    def abduct(self, x_u8: np.ndarray, digits: np.ndarray) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for i in range(0, len(x_u8), self.batch_size):
                x = to_model_range(x_u8[i:i + self.batch_size]).to(self._dev)
                y = torch.as_tensor(digits[i:i + self.batch_size], device=self._dev)
                out.append(self.model.encode(x, y)[0].cpu())
        return torch.cat(out)

    def predict(self, latent: torch.Tensor, digits: np.ndarray, seed: int, factual=None) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(latent), self.batch_size):
                y = torch.as_tensor(digits[i:i + self.batch_size], device=self._dev)
                out.append(from_model_range(self.model.decode(latent[i:i + self.batch_size].to(self._dev), y)))
        return np.concatenate(out)
