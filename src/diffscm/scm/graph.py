"""Causal graphs: typed variables, parents, validation and topological order."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DiffSCMError

KINDS = ("categorical", "continuous", "image")
ORACLE_VIEWS = ("image", "channel-max")

MNIST_GRAPH = {"variables": [
    {"name": "digit", "kind": "categorical", "num_classes": 10, "parents": []},
    {"name": "image", "kind": "image", "parents": ["digit"]},
]}
# Morpho-MNIST (DeepSCM): thickness -> intensity; digit, thickness, intensity -> image
MORPHO_GRAPH = {"variables": [
    {"name": "digit", "kind": "categorical", "num_classes": 10, "parents": []},
    {"name": "thickness", "kind": "continuous", "low": 0.5, "high": 7.0, "parents": []},
    {"name": "intensity", "kind": "continuous", "low": 64.0, "high": 255.0, "parents": ["thickness"]},
    {"name": "image", "kind": "image", "parents": ["digit", "thickness", "intensity"]},
]}


@dataclass(frozen=True)
class Variable:
    """A node: ``categorical`` (``num_classes``), ``continuous`` (support ``low``..``high``) or ``image``.

    ``oracle_view`` (attributes only): what the clean-image oracle and the selection model of this attribute see,
    ``image`` (default) or ``channel-max`` (the per-pixel maximum over the channels: a colour-blind view, for an
    attribute that must be read from shape while another parent sets the colour)."""

    name: str
    kind: str
    parents: tuple[str, ...] = ()
    num_classes: int | None = None
    low: float | None = None
    high: float | None = None
    oracle_view: str | None = None
    categories: tuple[str, ...] | None = None    # names of a categorical variable's classes, in class order

    def class_index(self, value: str) -> int | None:
        """The class a name denotes (case and ``_``/space insensitive), or None when ``value`` names no class."""
        if not self.categories:
            return None
        key = value.strip().lower().replace("_", " ")
        for i, name in enumerate(self.categories):
            if name.lower().replace("_", " ") == key:
                return i
        return None

    def check_value(self, value: float) -> None:
        """Raise a one-line error when ``value`` lies outside this variable's support."""
        if not math.isfinite(float(value)):
            raise DiffSCMError(f"{self.name} must be a finite number, got {value}")
        if self.kind == "categorical":
            if float(value) != int(value) or not 0 <= int(value) < self.num_classes:
                raise DiffSCMError(f"{self.name} must be an integer in 0..{self.num_classes - 1}, got {value:g}")
        elif self.kind == "continuous":
            lo = -float("inf") if self.low is None else self.low
            hi = float("inf") if self.high is None else self.high
            if not lo <= float(value) <= hi:
                raise DiffSCMError(f"{self.name} must lie in [{lo:g}, {hi:g}], got {value:g}")


@dataclass
class CausalGraph:
    """A DAG of :class:`Variable` nodes, validated on construction."""

    variables: dict[str, Variable] = field(default_factory=dict)
    mechanism: str | None = None     # the image mechanism `diffscm fit` trains: conditional (default) or paper

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, spec: dict) -> "CausalGraph":
        """Build from ``{"variables": [{"name", "kind", "parents", ...}, ...]}``."""
        try:
            items = spec["variables"]
            if not isinstance(items, list):
                raise TypeError("'variables' must be a list")
            variables = {}
            for v in items:
                unknown = set(v) - {"name", "kind", "parents", "num_classes", "low", "high", "oracle_view", "categories"}
                if unknown:
                    raise DiffSCMError(f"variable {v.get('name', '?')!r} has unknown field(s): {', '.join(sorted(unknown))}")
                var = Variable(name=v["name"], kind=v["kind"], parents=tuple(v.get("parents", ())),
                               num_classes=v.get("num_classes"), low=v.get("low"), high=v.get("high"),
                               oracle_view=v.get("oracle_view"),
                               categories=tuple(v["categories"]) if v.get("categories") is not None else None)
                if var.name in variables:
                    raise DiffSCMError(f"variable {var.name!r} is declared twice")
                variables[var.name] = var
        except (KeyError, TypeError) as exc:
            raise DiffSCMError(f"graph spec is malformed: missing or wrong field {exc}") from None
        unknown = set(spec) - {"variables", "mechanism"}
        if unknown:
            raise DiffSCMError(f"graph spec has unknown top-level field(s): {', '.join(sorted(unknown))}")
        return cls(variables, spec.get("mechanism"))

    @classmethod
    def from_file(cls, path: str | Path) -> "CausalGraph":
        """Read a graph from a ``.json``, ``.yaml`` or ``.yml`` file (same schema as :meth:`from_dict`)."""
        path = Path(path)
        if not path.exists():
            raise DiffSCMError(f"graph file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                spec = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                raise DiffSCMError(f"{path} is not valid YAML{where}") from None
        else:
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DiffSCMError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(spec, dict):
            raise DiffSCMError(f"{path} must hold a mapping with a 'variables' list")
        return cls.from_dict(spec)

    from_json = from_file

    def to_dict(self) -> dict:
        out = []
        for v in self.variables.values():
            d = {"name": v.name, "kind": v.kind, "parents": list(v.parents)}
            d.update({k: getattr(v, k) for k in ("num_classes", "low", "high", "oracle_view")
                      if getattr(v, k) is not None})
            if v.categories is not None:
                d["categories"] = list(v.categories)
            out.append(d)
        return {"variables": out, **({"mechanism": self.mechanism} if self.mechanism else {})}

    def validate(self) -> None:
        if self.mechanism not in (None, "conditional", "paper"):
            raise DiffSCMError(f"graph mechanism {self.mechanism!r}: use conditional or paper")
        for v in self.variables.values():
            if v.kind not in KINDS:
                raise DiffSCMError(f"variable {v.name!r} has unknown kind {v.kind!r} (use {', '.join(KINDS)})")
            if v.kind == "categorical" and (not isinstance(v.num_classes, int) or v.num_classes < 2):
                raise DiffSCMError(f"categorical variable {v.name!r} needs num_classes >= 2")
            if v.kind == "continuous" and v.low is not None and v.high is not None and not v.low < v.high:
                raise DiffSCMError(f"continuous variable {v.name!r} needs low < high, got [{v.low}, {v.high}]")
            if v.categories is not None:
                names = [str(c).lower().replace("_", " ") for c in v.categories]
                if v.kind != "categorical" or len(names) != v.num_classes or len(set(names)) != len(names) or \
                        not all(isinstance(c, str) and c.strip() for c in v.categories):
                    raise DiffSCMError(f"variable {v.name!r}: categories must be {v.num_classes} distinct names of a "
                                       "categorical variable's classes")
            if v.oracle_view is not None and (v.kind == "image" or v.oracle_view not in ORACLE_VIEWS):
                raise DiffSCMError(f"variable {v.name!r}: oracle_view {v.oracle_view!r} (use "
                                   f"{' or '.join(ORACLE_VIEWS)}, on attributes only)")
            if v.kind == "image" and not v.parents:
                raise DiffSCMError(f"image variable {v.name!r} needs at least one parent")
            for p in v.parents:
                if p not in self.variables:
                    raise DiffSCMError(f"variable {v.name!r} has unknown parent {p!r}")
                if self.variables[p].kind == "image":
                    raise DiffSCMError(f"variable {v.name!r} has an image parent {p!r}; only attributes may be parents")
        self.topological_order()

    def check_table(self, files: list[str], table: dict, where: str) -> None:
        """One-line errors for a column the graph needs but labels.csv lacks, and for a value outside its variable's
        support (a categorical value that is not an integer class, or a continuous one outside [low, high])."""
        for v in self.variables.values():
            if v.kind == "image":
                continue
            if v.name not in table:
                raise DiffSCMError(f"{where} has no column {v.name!r}, which the graph's variable {v.name} needs "
                                   f"(columns: {', '.join(table) or 'none'})")
            col = table[v.name]
            if col.dtype.kind not in "iuf":
                bad = next(i for i, x in enumerate(col) if not self._is_number(x))
                raise DiffSCMError(f"{where}: {v.name} = {col[bad]!r} of {files[bad]} is not a number")
            x = col.astype(np.float64)
            if not np.isfinite(x).all():
                bad = int(np.flatnonzero(~np.isfinite(x))[0])
                raise DiffSCMError(f"{where}: {v.name} of {files[bad]} is not finite")
            if v.kind == "categorical":
                bad = np.flatnonzero((x != np.round(x)) | (x < 0) | (x >= v.num_classes))
                if len(bad):
                    raise DiffSCMError(f"{where}: {v.name} = {x[bad[0]]:g} of {files[bad[0]]} is not a class in "
                                       f"0..{v.num_classes - 1}")
            else:
                lo = -np.inf if v.low is None else v.low
                hi = np.inf if v.high is None else v.high
                bad = np.flatnonzero((x < lo) | (x > hi))
                if len(bad):
                    raise DiffSCMError(f"{where}: {v.name} = {x[bad[0]]:g} of {files[bad[0]]} lies outside the graph's "
                                       f"support [{lo:g}, {hi:g}]")

    @staticmethod
    def _is_number(x) -> bool:
        try:
            float(x)
        except (TypeError, ValueError):
            return False
        return True

    def topological_order(self) -> list[str]:
        order, state = [], {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "active":
                raise DiffSCMError(f"graph has a cycle: {' -> '.join(path + (name,))}")
            state[name] = "active"
            for p in self.variables[name].parents:
                visit(p, path + (name,))
            state[name] = "done"
            order.append(name)

        for n in self.variables:
            visit(n, ())
        return order

    def children(self, name: str) -> list[str]:
        return [v.name for v in self.variables.values() if name in v.parents]

    def descendants(self, names) -> set[str]:
        """All nodes reachable from ``names`` (excluding the nodes themselves unless reachable)."""
        seen, stack = set(), list(names)
        while stack:
            for c in self.children(stack.pop()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return seen

    @property
    def image(self) -> Variable:
        images = [v for v in self.variables.values() if v.kind == "image"]
        if len(images) != 1:
            raise DiffSCMError(f"graph must have exactly one image variable, has {len(images)}")
        return images[0]
