"""The package's import graph: no cycles between modules, and each room imports only from the rooms below it.

Rooms, bottom to top: the runtime leaves (errors, device, distributed, schedule, files, progress) · models, data ·
scm · train, eval · service (what the command line and the explorer server share) · cli. The package's ``__init__`` (the public facade, which imports lazily) is above them all.
Function-local imports count too: they fail the same way at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "diffscm"
ROOMS = {"errors": 0, "device": 0, "distributed": 0, "schedule": 0, "files": 0, "progress": 0, "markdown": 0,
         "models": 1, "data": 1, "scm": 2, "train": 3, "eval": 3, "service": 4, "cli": 5}


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = ("diffscm",) + p.relative_to(PKG).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """diffscm modules imported anywhere in ``path`` (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "diffscm"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "diffscm":
                target = node.module
            else:
                continue
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
    # importing a.b.c runs a/__init__ and a/b/__init__ first, except the packages the importer already sits in
    mine = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 2)}
    full = set()
    for t in out:
        parts = t.split(".")
        full |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} - mine
    return {t for t in full if t in known and t != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def room(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) == 1:
        return "diffscm", 99
    return parts[1], ROOMS[parts[1]]


def test_every_module_sits_in_a_room():
    assert {room(m)[0] for m in modules()} - set(ROOMS) == {"diffscm"}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_rooms_import_only_downwards():
    wrong = []
    for m, targets in graph().items():
        r_name, r = room(m)
        for t in targets:
            t_name, tr = room(t)
            if tr > r or (tr == r and t_name != r_name and r > 0):
                wrong.append(f"{m} -> {t}")
    assert wrong == []


def test_the_checker_sees_a_cycle(tmp_path):
    # the checker itself: a relative import loop between two modules is an edge both ways
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n")
    known = {"diffscm.scm.a", "diffscm.scm.b"}
    assert imports("diffscm.scm.a", tmp_path / "a.py", known) == {"diffscm.scm.b"}
    assert imports("diffscm.scm.b", tmp_path / "b.py", known) == {"diffscm.scm.a"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", ["SCM", "CausalGraph", "InferenceOptions", "abduct", "act", "predict", "load_model",
                                  "DiffSCMError"])
def test_public_api_is_reexported(name):
    import diffscm

    assert name in diffscm.__all__ and getattr(diffscm, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    import diffscm

    with pytest.raises(AttributeError):
        diffscm.no_such_name   # noqa: B018
