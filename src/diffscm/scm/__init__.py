"""The causal core: graph, SCM, image mechanisms, samplers and guidance.

``SCM`` and Pearl's three steps (:func:`abduct`, :func:`act`, :func:`predict`) live in :mod:`diffscm.scm.core`.
"""
from .core import PRETRAINED, SCM, Exogenous, abduct, abduct_attributes, act, batch_generator, predict, resolve_model
from .graph import CausalGraph
from .mechanisms import InferenceOptions

__all__ = ["PRETRAINED", "SCM", "Exogenous", "abduct", "abduct_attributes", "act", "batch_generator", "predict",
           "resolve_model", "CausalGraph", "InferenceOptions"]
