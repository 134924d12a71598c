"""A keypoint branch's model file: one JSON object with a format tag and a version, read back with one clear error."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .. import atomic
from ..errors import RunError


def model_path(where, filename: str) -> Path:
    """A file path, or the branch's file ``filename`` in a run folder."""
    return where.file(filename) if hasattr(where, "file") else Path(where)


def write_model_file(path: Path, fmt: str, fields: dict) -> None:
    atomic.write_json(path, {"format": fmt, "version": 1, **fields})


def read_model_file(path: Path, fmt: str, required: Sequence[str], what: str,
                    parse: Callable[[dict], Any] = lambda d: None) -> tuple[dict, Any]:
    """The saved fields and ``parse(fields)``; a RunError naming ``what`` when the file is missing, not JSON, of
    another format, lacks a ``required`` field, or ``parse`` fails on it."""
    try:
        d = atomic.read_json(path)
        if not isinstance(d, dict) or d.get("format") != fmt or any(k not in d for k in required):
            raise ValueError
        return d, parse(d)
    except Exception:  # one answer for every way the file can be wrong
        raise RunError(f"{path}: not a hybridpose {what} (missing or corrupt); run `hybridpose fit` again.") from None
