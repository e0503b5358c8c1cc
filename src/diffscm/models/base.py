"""Shared ``save_pretrained`` / ``from_pretrained`` for every model kind."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DiffSCMError
from .io import load_config, load_state_into, load_tensors, save_checkpoint


class Pretrained(torch.nn.Module):
    """A module rebuilt from a JSON config; weights stored as safetensors."""

    kind: str = ""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> None:
        config = {"kind": self.kind, **self.config, **(extra or {})}
        save_checkpoint(path, config, self.state_dict())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu"):
        config = load_config(path, expected_kind=cls.kind)
        config.pop("kind")
        meta = config.pop("meta", None)
        try:
            model = cls(config)
        except (TypeError, ValueError, KeyError) as exc:
            raise DiffSCMError(f"checkpoint {path}: config does not describe a {cls.kind} model ({exc})") from None
        load_state_into(model, load_tensors(path), path)
        model.meta = meta or {}
        return model.to(device).eval()
