"""Atomic file writes: write to a temporary file beside the target, then rename.

An interrupted run therefore never leaves a half-written table or checkpoint:
the target either holds the old content or the complete new one.

The temporary file is ``.<name>.<pid>-<host>-<random>.tmp`` (``host``: 8 hex digits naming the machine).
A run killed outright (SIGKILL, power loss) cannot remove it, so each write first removes the stale
temporaries of the same target: those written on this machine by a process that no longer exists, and
those whose writer cannot be checked (another machine sharing the folder, or the older
``.<name>.<random>.tmp`` names) once untouched for ``STALE_AGE`` seconds. A temporary of a live
process on this machine is never removed, however old.

A write that finds the disk full raises ``DiskFullError`` (one line: the file, the free space) and leaves
no temporary behind. ``load_torch`` reads a PyTorch file as plain data only (``weights_only``): a file
that would run code when unpickled raises ``NotPlainData`` and nothing of it runs.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import HybridPoseError

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(HybridPoseError, OSError):
    """A file could not be written for want of space; no part of it is left. An OSError too (errno ENOSPC),
    so code that handles a failed write as one still does; built as ``OSError(errno, message, file)``,
    so it pickles (a Ray worker's error reaches the driver)."""

    def __str__(self) -> str:
        return self.strerror


class NotPlainData(ValueError):
    """A PyTorch file that holds more than plain data (tensors, dicts, lists, numbers, strings): loading it
    would import or call code, so it was not loaded."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` in one rename."""
    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-{_HOST}-", suffix=".tmp", dir=target.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, target)
    except OSError as e:
        if e.errno not in _FULL or isinstance(e, DiskFullError):
            raise
        _discard(tmp)  # first, so the message counts the space it held as free
        raise disk_full(target) from None
    finally:
        _discard(tmp)


def _discard(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def disk_full(target: str | os.PathLike) -> DiskFullError:
    """The one-line error for ``target`` not written for want of space."""
    target = Path(target)
    free = _free_bytes(target.parent)
    where = "free space unknown" if free is None else f"{_size_text(free)} free in {target.parent}"
    return DiskFullError(errno.ENOSPC, f"{target}: not written, the disk is full ({where}); "
                         "nothing half-written is left and the files written before it are kept: free some space "
                         "and run the same command again to go on from there", str(target))


def _free_bytes(folder: Path) -> int | None:
    """Bytes this process may still write under ``folder`` (root may use the reserved blocks)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # gone, or not POSIX
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _size_text(n: float) -> str:
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000:
            break
    return f"{n:.1f} {unit}"


STALE_AGE = 3600.0  # seconds; for temporaries whose writer cannot be checked
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_OURS = re.compile(r"(\d+)-([0-9a-f]{8})-[A-Za-z0-9_]+")  # pid-host-random
_OLD = re.compile(r"[A-Za-z0-9_]{8}")  # tempfile's random part, as named before the pid was added


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the stale ``.<name>.*.tmp`` temporaries of ``target`` left by killed writers; returns them."""
    target = Path(target)
    prefix = f".{target.name}."
    removed = []
    try:
        names = [e.name for e in os.scandir(target.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        middle = name[len(prefix):-len(".tmp")]
        ours = _OURS.fullmatch(middle)
        path = target.parent / name
        if ours and ours.group(2) == _HOST and os.name == "posix":
            stale = not _alive(int(ours.group(1)))
        elif ours or _OLD.fullmatch(middle):
            try:
                stale = time.time() - path.lstat().st_mtime > STALE_AGE
            except OSError:
                continue
        else:
            continue  # not a temporary of this target (e.g. of ``<name>.bak``)
        if stale:
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id we can check: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_csv(path: str | os.PathLike, frame: "Any", **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError:
            # torch's writer reports a full disk without an errno ("[enforce fail at inline_container.cc]
            # unexpected pos"): it was one when the tensors need more than the space there was
            free = _free_bytes(tmp.parent)
            if free is not None and _tensor_bytes(obj) > free + tmp.stat().st_size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists and tuples)."""
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    numel, size = getattr(obj, "numel", None), getattr(obj, "element_size", None)
    return int(numel() * size()) if callable(numel) and callable(size) else 0


def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load`` of plain data only, on the CPU; ``NotPlainData`` (naming what it asked for) when the
    file would import or call anything: that is refused before any of it runs. Other failures (a damaged
    file) raise as ``torch.load`` raises them."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the caller says what is wrong
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise NotPlainData(f"unpickling it would call {found.group(1)}" if found else "it holds more than plain data") from None


def save_figure(path: str | os.PathLike, fig: "Any", dpi: int = 120) -> None:
    suffix = Path(path).suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=suffix)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
