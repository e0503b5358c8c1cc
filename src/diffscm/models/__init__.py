"""Models: the diffusion image mechanism, noise-aware anti-causal predictors the clean-image oracle, and the VAEs/classifier of evaluation and baselines."""
from .diffusion import DiffusionModel
from .predictor import NoiseAwarePredictor, Oracle, load_model
from .vae import VAE, Classifier

__all__ = ["DiffusionModel", "NoiseAwarePredictor", "Oracle", "VAE", "Classifier", "load_model"]
