"""Atomic writes: a file or folder appears complete or not at all, and what was there survives a failure."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_dir(path: str | Path, write) -> None:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` into place; an existing ``path`` is replaced only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        write(tmp)
        tmp.chmod(0o755)
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:
                os.replace(old, path)  # put the previous content back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj) -> None:
    """``obj`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")
