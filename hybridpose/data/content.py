"""Files by content: the hash that keys every cache (poses, frames), and where the caches live."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path


def file_sha256(path: str | Path) -> str | None:
    """Content hash of a regular file; None when it cannot be read or is not a regular file."""
    try:
        return sha256_of_regular_file(path)
    except OSError:
        return None


def sha256_of_regular_file(path: str | Path) -> str:
    # O_NONBLOCK: opening a FIFO (swapped in after it was classified) returns at once instead of waiting for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        h = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYBRIDPOSE_CACHE") or Path.home() / ".cache" / "hybridpose")
