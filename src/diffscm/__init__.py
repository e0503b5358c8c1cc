"""diffscm: counterfactual images with diffusion-based structural causal models."""
__version__ = "0.1.0"
