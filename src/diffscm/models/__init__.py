"""Models: the diffusion image mechanism, noise-aware anti-causal predictors, the clean-image oracle, the benchmark's judges, and the VAEs/classifier of evaluation and baselines."""
from .diffusion import DiffusionModel
from .flow import AttributeFlow
from .judge import Judge
from .predictor import NoiseAwarePredictor, Oracle, RegressionOracle
from .registry import load_model
from .vae import VAE, Classifier

__all__ = ["AttributeFlow", "DiffusionModel", "Judge", "NoiseAwarePredictor", "Oracle", "RegressionOracle", "VAE", "Classifier", "load_model"]
