"""How graph variables become model inputs: the conditioning spec of a model, and a variable's untrained flow."""
from __future__ import annotations

import numpy as np
import torch

from ..models import AttributeFlow
from .graph import CausalGraph


def mean_std(v: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (never zero) used to standardise a variable."""
    return float(np.mean(v)), float(np.std(v) + 1e-8)


def cond_spec(graph: CausalGraph, names, attrs: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Encoding of conditioning variables: categorical by class; continuous standardised with the data's stats, or
    (``attrs=None``, for a parent-conditioned ε-model) by the variable's support."""
    spec = []
    for n in names:
        v = graph.variables[n]
        if v.kind == "categorical":
            spec.append({"name": n, "kind": "categorical", "num_classes": v.num_classes})
        elif attrs is None:
            spec.append({"name": n, "kind": "continuous", "low": v.low, "high": v.high})
        else:
            m, s = mean_std(attrs[n])
            spec.append({"name": n, "kind": "continuous", "mean": m, "std": s})
    return spec


def make_flow(graph: CausalGraph, name: str, table: dict[str, np.ndarray]) -> AttributeFlow:
    """An untrained flow for continuous variable ``name``, standardised with the table's statistics."""
    var = graph.variables[name]
    probe = AttributeFlow({"target": name, "low": var.low, "high": var.high})
    m, s = mean_std(probe.unconstrain(torch.as_tensor(np.asarray(table[name]))).numpy())
    return AttributeFlow({"target": name, "low": var.low, "high": var.high, "mean": m, "std": s,
                          "parents": cond_spec(graph, var.parents, table)})
