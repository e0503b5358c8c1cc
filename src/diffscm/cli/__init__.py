"""The ``diffscm`` command line: one module per command, each importing its stack only when it runs."""
from . import data, measure, train, fit, counterfactual, pack, evaluate, localize, sweep, convert, explore  # noqa: F401  (register commands)
from .app import app, main

__all__ = ["app", "main"]
