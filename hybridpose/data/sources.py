"""Input sources: what a path a user gives turns into, one entry per file.

A source is a small class registered by name with ``accepts(path)``, ``entries(path)`` and a
``priority``; the first (lowest priority) that accepts a path lists it, whatever was imported before.
Every file under a folder gets an entry, so that every file
gets a row in the outputs: photos to be read, and files that cannot be (``unsupported``,
``broken_link``, ``not_a_file``) with the reason already decided from the file system. Nothing but
regular files is ever opened.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import DatasetError
from ..registry import Registry
from .images import HEIF_EXTENSIONS, HEIF_MISSING_REASON, IMAGE_EXTENSIONS
from .video import is_video


@dataclass(frozen=True)
class Entry:
    path: Path
    status: str = ""   # "" = a photo to read; otherwise why it is not read
    reason: str = ""

    @property
    def readable(self) -> bool:
        return not self.status


SOURCES: Registry[type] = Registry("input source", order=lambda source: source.priority)
register = SOURCES.register


def classify(path: Path) -> Entry:
    """What a single path is, decided without opening it."""
    try:
        st = path.lstat()
    except OSError as e:
        return Entry(path, "unreadable", f"cannot access file ({e.strerror})")
    link = stat.S_ISLNK(st.st_mode)
    if link:
        try:
            st = path.stat()
        except OSError as e:
            if e.errno == errno.ELOOP:
                return Entry(path, "broken_link", "symbolic link loop (the links point at each other)")
            return Entry(path, "broken_link", f"symbolic link to a missing file ({_link_target(path)})")
    if stat.S_ISDIR(st.st_mode):
        if link:
            return Entry(path, "not_a_file", "symbolic link to a folder; links to folders are not followed")
        try:
            with os.scandir(path):
                pass
        except OSError as e:  # the same verdict as walk's for a folder it cannot enter
            return Entry(path, "unreadable", f"cannot list folder ({e.strerror})")
        return Entry(path, "not_a_file", "a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        return Entry(path, "not_a_file", "not a regular file (a FIFO, socket or device); never opened")
    if path.suffix.lower() in HEIF_EXTENSIONS and path.suffix.lower() not in IMAGE_EXTENSIONS:
        return Entry(path, "unsupported", HEIF_MISSING_REASON)
    if is_video(path):  # a clip run reads it; a photo run says how to predict it
        return Entry(path, "unsupported", f"a video ({path.suffix.lower()}): predict it with a run fitted on clips "
                                          "(videos or frame folders; docs/CLIPS.md)")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        kind = path.suffix.lower() or "no extension"
        return Entry(path, "unsupported", f"not a photo format hybridpose reads ({kind}); "
                                          f"supported: {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Entry(path)


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "target unknown"


@register
class PhotoFile:
    name = "photo"
    priority = 10

    @staticmethod
    def accepts(path: Path) -> bool:
        return not path.is_dir()

    @staticmethod
    def entries(path: Path) -> list[Entry]:
        return [classify(path)]


@register
class PhotoFolder:
    """Every file under a folder (recursively, hidden files and folders skipped), sorted."""
    name = "folder"
    priority = 10

    @staticmethod
    def accepts(path: Path) -> bool:
        return path.is_dir()

    @staticmethod
    def entries(path: Path) -> list[Entry]:
        errors: list[OSError] = []
        entries = [classify(p) for p in walk(path, errors)]
        for e in errors:  # a sub-folder that cannot be listed gets a row too
            if Path(e.filename) == Path(path):
                raise DatasetError(f"{path}: cannot read folder ({e.strerror}).")
            entries.append(Entry(Path(e.filename), "unreadable", f"cannot list folder ({e.strerror})"))
        return sorted(entries, key=lambda e: e.path)


def walk(root: Path, errors: list[OSError] | None = None) -> list[Path]:
    """Files (and links, FIFOs, ...) under ``root``; links to folders are not followed (no loops). Folders that
    cannot be listed are appended to ``errors`` (as the OSError) when it is given.

    A folder named like a photo (``x.jpg/``) is listed too (it gets a ``not_a_file`` row) and still searched."""
    out: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False, onerror=None if errors is None else errors.append):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder)
        # a symlink to a folder is listed by os.walk among dirs: treat it as an entry, not a folder to enter
        for d in list(dirs):
            if (base / d).is_symlink():
                dirs.remove(d)
                files.append(d)
            elif Path(d).suffix.lower() in IMAGE_EXTENSIONS | HEIF_EXTENSIONS:
                files.append(d)
        out.extend(base / f for f in files if not f.startswith(".") and not (base == root and f in DATASET_FILES))
    return sorted(out)


# Files at a data folder's root that describe the data set (read by hybridpose itself), not inputs.
DATASET_FILES = frozenset({"hierarchy.csv", "flip_pairs.csv", "groups.csv"})


def open_inputs(path: str | Path) -> list[Entry]:
    """The entries of an input path (a photo or a folder); a DatasetError when it does not exist or is a folder
    with nothing to read. A single file given by name always gets its entry (a FIFO, a link, a .txt: a row)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise DatasetError(f"{path}: no such file or folder.")
    for source in SOURCES.ordered():
        if source.accepts(path):
            entries = source.entries(path)
            break
    if not any(e.readable for e in entries) and source is not PhotoFile:
        found = f" (only {len(entries)} file(s) that are not photos)" if entries else ""
        raise DatasetError(f"{path}: no images found{found}; looked for {', '.join(sorted(IMAGE_EXTENSIONS))}.")
    return entries


def photos(entries: Iterable[Entry]) -> list[Path]:
    return [e.path for e in entries if e.readable]
