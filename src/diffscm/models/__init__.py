"""Models: the diffusion image mechanism, noise-aware anti-causal predictors and the clean-image oracle."""
from .diffusion import DiffusionModel
from .predictor import NoiseAwarePredictor, Oracle, load_model

__all__ = ["DiffusionModel", "NoiseAwarePredictor", "Oracle", "load_model"]
