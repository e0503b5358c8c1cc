"""Parsing and checks shared by the commands; one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DiffSCMError


def parse_list(spec: str, flag: str, cast=float) -> list:
    """``"0,1,2"`` -> ``[0, 1, 2]`` with a one-line error."""
    try:
        vals = [cast(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise DiffSCMError(f"bad {flag} {spec!r}: use comma-separated numbers") from None
    if not vals:
        raise DiffSCMError(f"{flag} is empty")
    if len(set(vals)) != len(vals):
        raise DiffSCMError(f"{flag} {spec!r} repeats a value")
    return vals


def parse_where(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise DiffSCMError(f"--where {item!r} must be COLUMN=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DiffSCMError(f"--out {out} exists and is not a folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DiffSCMError(f"--out {out}: {parent} is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DiffSCMError(f"{out} already exists and is not empty; pass --overwrite or choose another --out")


def is_main() -> bool:
    from ..distributed import topology

    return topology().is_main


def load_scm(model: str, device: str):
    from ..distributed import device_for, topology
    from ..scm.core import SCM

    return SCM.from_pretrained(model, device_for(topology(), device))


def cfg_weights_for(scm, w: float) -> dict[str, float]:
    names = scm.image_mechanism.diffusion.parent_names
    if not names:
        raise DiffSCMError("--w needs a parent-conditioned diffusion model (the conditional mechanism)")
    return {n: float(w) for n in names}


def prepare_evaluation(split: str, json_out: Optional[Path], report: Optional[Path], overwrite: bool, model: str,
                        device: str, overrides: dict, w: Optional[float] = None):
    """Shared checks of evaluate/sweep (split, outputs) before loading the model."""
    if split not in ("test", "valid"):
        raise DiffSCMError(f"--split {split!r}: choose test or valid")
    check_outputs(json_out, report, overwrite)
    scm = load_scm(model, device)
    if w is not None:
        overrides = {**overrides, "cfg_weights": cfg_weights_for(scm, w)}
    scm.image_mechanism.mechanism(scm.options(**overrides))   # a bad mechanism/inversion is an error before any work
    return scm, overrides


def check_outputs(json_out: Optional[Path], report: Optional[Path], overwrite: bool) -> None:
    if json_out is None and report is None:
        raise DiffSCMError("nothing to write: pass --json FILE and/or --report DIR")
    if json_out is not None:
        if json_out.exists() and (json_out.is_dir() or not overwrite):
            raise DiffSCMError(f"--json {json_out} already exists; pass --overwrite or choose another file")
    if report is not None:
        check_out(report, overwrite)


def named_paths(items: list[str], flag: str, default_name: str | None) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if default_name is None:
                raise DiffSCMError(f"bad {flag} {item!r}: use NAME=DIR")
            name, path = default_name, item
        if name in out:
            raise DiffSCMError(f"{flag} gives {name!r} twice")
        out[name.strip()] = Path(path.strip())
    return out


def split_counts(out: Path, overwrite: bool, n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    """The non-empty splits of a dataset to build into ``out``; one-line errors for an existing ``out`` or no image."""
    if out.exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    counts = {k: n for k, n in (("train", n_train), ("val", n_val), ("test", n_test)) if n}
    if not counts:
        raise DiffSCMError("nothing to build: --train, --val and --test are all 0")
    return counts
