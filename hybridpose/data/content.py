"""Files by content: the hash that keys every cache (poses, frames), and where the caches live."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from .images import HEIF_EXTENSIONS


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


def sniff(head: bytes) -> str | None:
    """The file extension of what the first bytes say the file is (a photo or a video format), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if head.startswith(b"BM") and len(head) >= 14:
        return ".bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[:4] == b"\x1aE\xdf\xa3":
        return ".mkv"  # Matroska and WebM
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return sorted(HEIF_EXTENSIONS)[0]
        return ".mov" if brand == b"qt  " else ".mp4"
    return None
