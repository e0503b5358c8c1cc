"""Evaluation: metrics, the generation/scoring harness, baselines, the protocols (MNIST, Morpho-MNIST, lesion
localisation) and their reports."""
