"""Device selection, done once per process."""
from __future__ import annotations

import torch

from .errors import DiffSCMError


def pick_device(preference: str = "auto") -> torch.device:
    """Return the device to use: ``auto`` picks CUDA, then MPS, then CPU."""
    preference = preference.lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise DiffSCMError(f"device {preference!r} requested but CUDA is not available")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise DiffSCMError("device 'mps' requested but MPS is not available")
    if preference not in ("cpu", "mps") and not preference.startswith("cuda"):
        raise DiffSCMError(f"unknown device {preference!r} (use auto, cpu, cuda, cuda:N or mps)")
    return torch.device(preference)
