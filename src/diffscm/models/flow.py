"""Conditional normalizing flows (zuko) for continuous attributes: x_k := f_k(u_k, pa_k) with u_k ~ N(0, 1).

The value is first mapped to the real line by a fixed bijection chosen from its support (logit for a bounded
interval, log for a lower bound only) and standardised; a neural spline flow conditioned on the standardised
parents then maps it to the exogenous noise. Both directions are exact inverses, so abduction is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import zuko

from ..errors import DiffSCMError
from .base import Pretrained


class AttributeFlow(Pretrained):
    """p(value | parents) as a conditional spline flow.

    Config: ``target``; ``low``/``high`` support; ``parents`` as a list of ``{"name", "kind", "num_classes"?,
    "mean"?, "std"?}``; ``mean``/``std`` of the unconstrained target; ``transforms``, ``hidden``, ``bins``.
    """

    kind = "flow"

    def __init__(self, config: dict):
        config = {"low": None, "high": None, "parents": [], "mean": 0.0, "std": 1.0, "transforms": 3,
                  "hidden": [64, 64], "bins": 8, **config}
        super().__init__(config)
        self.context = sum(p["num_classes"] if p["kind"] == "categorical" else 1 for p in config["parents"])
        self.flow = zuko.flows.NSF(features=1, context=self.context, transforms=config["transforms"],
                                   hidden_features=list(config["hidden"]), bins=config["bins"])
        self.double()   # float64 throughout: abduction then prediction reproduces the value to ~1e-10

    # -- fixed bijection to the real line
    def unconstrain(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config["low"], self.config["high"]
        x = x.double()
        if lo is not None and hi is not None:
            p = ((x - lo) / (hi - lo)).clamp(1e-7, 1 - 1e-7)
            y = torch.log(p) - torch.log1p(-p)
        elif lo is not None:
            y = torch.log((x - lo).clamp_min(1e-12))
        else:
            y = x
        return (y - self.config["mean"]) / self.config["std"]

    def constrain(self, y: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config["low"], self.config["high"]
        y = y.double() * self.config["std"] + self.config["mean"]
        if lo is not None and hi is not None:
            return lo + (hi - lo) * torch.sigmoid(y)
        if lo is not None:
            return lo + torch.exp(y)
        return y

    def encode_parents(self, parents: dict[str, torch.Tensor], n: int, device) -> torch.Tensor | None:
        if not self.context:
            return None
        cols = []
        for p in self.config["parents"]:
            if p["name"] not in parents:
                raise DiffSCMError(f"flow of {self.config['target']!r} needs parent {p['name']!r}")
            v = torch.as_tensor(parents[p["name"]], device=device)
            if p["kind"] == "categorical":
                cols.append(F.one_hot(v.long(), p["num_classes"]).double())
            else:
                cols.append(((v.double() - p["mean"]) / p["std"]).view(-1, 1))
        return torch.cat(cols, dim=1).view(n, self.context)

    def _dist(self, parents: dict[str, torch.Tensor], n: int, device):
        ctx = self.encode_parents(parents, n, device)
        return self.flow(ctx) if ctx is not None else self.flow().expand((n,))

    def log_prob(self, value: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        """log-density of the standardised unconstrained value (the training objective)."""
        y = self.unconstrain(value).view(-1, 1)
        return self._dist(parents, y.shape[0], y.device).log_prob(y).float()

    def abduct(self, value: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exogenous noise u = T(value; parents), exactly."""
        y = self.unconstrain(value).view(-1, 1)
        with torch.no_grad():
            return self._dist(parents, y.shape[0], y.device).transform(y).view(-1)

    def forward(self, noise: torch.Tensor, parents: dict[str, torch.Tensor]) -> torch.Tensor:
        """value = T⁻¹(u; parents) in the variable's own units (float32; computed in float64)."""
        u = torch.as_tensor(noise).double().view(-1, 1)
        with torch.no_grad():
            y = self._dist(parents, u.shape[0], u.device).transform.inv(u).view(-1)
        return self.constrain(y).float()

    def sample(self, parents: dict[str, torch.Tensor], n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.randn(n, generator=generator, dtype=torch.float64)
        return self(u, parents)
