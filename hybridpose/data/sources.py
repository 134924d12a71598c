"""Input sources: what a path a user gives turns into, one entry per file.

A source is a small class registered by name with ``accepts(path)``, ``entries(path)`` and a
``priority``; the first (lowest priority) that accepts a path lists it, whatever was imported before.
Every file under a folder gets an entry, so that every file
gets a row in the outputs: photos to be read, and files that cannot be (``unsupported``,
``broken_link``, ``not_a_file``) with the reason already decided from the file system. Nothing but
regular files is ever opened. Links to folders are followed (shared data sets are often laid out with
them); a link to a folder that holds it (a loop) gets a ``broken_link`` row and is not entered.
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
            return loop_entry(path) if link_loops(path) else \
                Entry(path, "not_a_file", "symbolic link to a folder, where a file was expected")
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
    """Files (and links, FIFOs, ...) under ``root``, sorted. Links to folders are followed, except a link to a
    folder that holds it (``link_loops``): that link is listed, never entered. Folders that cannot be listed are
    appended to ``errors`` (as the OSError) when it is given.

    A folder named like a photo (``x.jpg/``) is listed too (it gets a ``not_a_file`` row) and still searched."""
    root = Path(root)
    out: list[Path] = []
    _walk(root, root, out, errors)
    return sorted(out)


def _walk(root: Path, folder: Path, out: list[Path], errors: list[OSError] | None) -> None:
    try:
        with os.scandir(folder) as it:
            items = sorted(it, key=lambda e: e.name)
    except OSError as e:
        if errors is not None:
            errors.append(e)
        return
    for item in items:
        if item.name.startswith("."):
            continue
        path = folder / item.name
        if not _is_dir(item):
            if not (folder == root and item.name in DATASET_FILES):
                out.append(path)
        elif item.is_symlink() and link_loops(path):
            out.append(path)  # classify gives it its row
        else:
            if Path(item.name).suffix.lower() in IMAGE_EXTENSIONS | HEIF_EXTENSIONS:
                out.append(path)
            _walk(root, path, out, errors)


def _is_dir(item: os.DirEntry) -> bool:
    try:
        return item.is_dir()  # follows a link; False for a broken one
    except OSError:  # links that point at each other (ELOOP) are not a folder
        return False


def link_loops(path: Path) -> bool:
    """Whether ``path`` is a link to a folder that holds it: one of the folders above it, as written or where the
    links above it land. Only a link can lead back up, so only links are asked."""
    if not path.is_symlink():
        return False
    try:
        target = _folder_id(path)
        return any(target in _ancestry(p) for p in Path(os.path.abspath(path)).parents)
    except OSError:
        return False


def _folder_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)  # links followed
    return st.st_dev, st.st_ino


def _ancestry(folder: Path) -> set[tuple[int, int]]:
    real = folder.resolve()
    return {_folder_id(p) for p in (real, *real.parents)}


def loop_entry(link: Path) -> Entry:
    """The row of a link to a folder that holds it."""
    return Entry(link, "broken_link", f"symbolic link loop: points at {_link_target(link)}, a folder that holds it; "
                                      "not followed; point it elsewhere or remove it")


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
