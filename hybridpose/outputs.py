"""Checks, before any work starts, that an output can be written where the user asked.

A long job (pose extraction, prediction, calibration) must not run for minutes and then die on
an output path that was never writable, nor rewrite some files of a run before failing on another.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import HybridPoseError


class OutputError(HybridPoseError):
    """An output path that cannot be written; the message names the option and what to do."""


def check_writable(path: str | Path, kind: str = "file", what: str = "--out", *, file_name: str = "",
                   fix: str = "give a path in a folder you can write to") -> Path:
    """``path`` if a ``kind`` ("file" or "folder") can be written there; an OutputError otherwise.

    ``what`` names the option in the message; ``file_name`` is the name suggested inside a folder
    given where a file is expected; ``fix`` says what to do when the place is not writable.

    Missing folders on the way are fine when they can be created (nothing is created here): the
    nearest existing folder must be writable (a temporary file is created and removed in it).
    """
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', not {kind!r}")
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if kind == "file" and path.is_dir():
        example = f" (e.g. {path / file_name})" if file_name else ""
        raise OutputError(f"{label}: is a folder; give a file name{example}.")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise OutputError(f"{label}: is a file, not a folder; give a new or existing folder.")
    folder = path if kind == "folder" else path.parent
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise OutputError(f"{label}: cannot be created, {existing} is a file, not a folder; give another path.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hybridpose-write-check-", dir=existing)
    except OSError as e:
        raise OutputError(f"{label}: cannot write in {existing} ({e.strerror or type(e).__name__}); {fix}.") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its closest ancestor that exists (``.`` for a relative path with none)."""
    current = folder
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    return current if str(current) else Path(".")
