"""Baseline counterfactual methods evaluated by the same harness as Diff-SCM."""
from .cvae import CVAEMethod
from .prototype import PrototypeMethod, PrototypeParams

__all__ = ["CVAEMethod", "PrototypeMethod", "PrototypeParams"]
