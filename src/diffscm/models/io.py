"""Checkpoint folders: ``config.json`` + ``model.safetensors``, written atomically, never pickles."""
from __future__ import annotations

import json
import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import DiffSCMError
from ..files import atomic_write_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_checkpoint(path: str | Path, config: dict, tensors: dict[str, torch.Tensor],
                    extra_files: dict[str, str] | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` (plus optional text files) atomically."""
    def write(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS_NAME))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    atomic_write_dir(path, write)


def load_config(path: str | Path, expected_kind: str | None = None) -> dict:
    """Read and check a checkpoint's ``config.json``."""
    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not path.is_dir():
        raise DiffSCMError(f"checkpoint {path} does not exist or is not a folder")
    if not cfg_path.exists():
        raise DiffSCMError(f"checkpoint {path} has no {CONFIG_NAME}")
    try:
        config = json.loads(cfg_path.read_bytes())
    except json.JSONDecodeError as exc:
        raise DiffSCMError(f"checkpoint {path}: {CONFIG_NAME} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise DiffSCMError(f"checkpoint {path}: {CONFIG_NAME} is not UTF-8 text") from None
    if not isinstance(config, dict) or not isinstance(config.get("kind"), str):
        raise DiffSCMError(f"checkpoint {path}: {CONFIG_NAME} has no 'kind' string")
    if expected_kind is not None and config["kind"] != expected_kind:
        raise DiffSCMError(f"checkpoint {path} holds a {config['kind']!r} model, expected {expected_kind!r}")
    return config


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` with a clear error when missing or corrupt."""
    w = Path(path) / WEIGHTS_NAME
    if not w.exists():
        raise DiffSCMError(f"checkpoint {path} has no {WEIGHTS_NAME}")
    try:
        return load_file(str(w))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DiffSCMError(f"checkpoint {path}: {WEIGHTS_NAME} is corrupt ({exc})") from None


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load weights strictly; a mismatch names the checkpoint and the first offending key."""
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shape = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or shape:
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                else f"shape of {shape[0]} is {tuple(tensors[shape[0]].shape)}, expected {tuple(own[shape[0]].shape)}")
        raise DiffSCMError(f"checkpoint {path} does not match its architecture ({what})")
    module.load_state_dict(tensors)


def weights_key(module: torch.nn.Module | None) -> str:
    """A short fingerprint of a module's weights (names and the first 4 KiB of each tensor): part of cache keys, so
    that a retrained model never reuses another model's cached outputs."""
    if module is None:
        return "none"
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])
    return h.hexdigest()[:12]
