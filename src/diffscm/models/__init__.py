"""Models: the diffusion image mechanism, noise-aware anti-causal predictors, the clean-image oracle, the benchmark's judges, the VAEs/classifier of evaluation and baselines, and guided-diffusion's ImageNet models (adm.py)."""
from .adm import ADMClassifier
from .diffusion import DiffusionModel
from .flow import AttributeFlow
from .judge import Judge
from .predictor import NoiseAwarePredictor, Oracle, RegressionOracle
from .registry import load_model
from .vae import VAE, Classifier

__all__ = ["ADMClassifier", "AttributeFlow", "DiffusionModel", "Judge", "NoiseAwarePredictor", "Oracle", "RegressionOracle", "VAE", "Classifier", "load_model"]
