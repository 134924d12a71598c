"""Labelled data sets: an image folder (one sub-folder per class) or a Yoga-82 list file.

Everything is validated up front so a long run never dies half way on a data problem.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .hierarchy import Hierarchy, read_hierarchy_csv, read_table
from .images import IMAGE_EXTENSIONS, MIN_SIDE, ImageLoadError, check_usable
from .sources import PhotoFolder, link_loops, loop_entry, photos

YOGA82_LEVELS = ["class82", "class20", "class6"]
YOGA82_CLASS6 = ["standing", "sitting", "balancing", "inverted", "reclining", "wheel"]


@dataclass
class Dataset:
    root: Path
    paths: list[Path]
    labels: list[str]  # leaf class of each photo
    hierarchy: Hierarchy
    flip_pairs: dict[str, str] = field(default_factory=dict)  # class -> its mirror class
    left_out: list[tuple[Path, str]] = field(default_factory=list)  # (file, why): found but not used

    def __len__(self) -> int:
        return len(self.paths)

    def level_labels(self, level: str) -> list[str]:
        return [self.hierarchy.ancestor(y, level) for y in self.labels]


def check_classes(ds: Dataset) -> None:
    """Training needs at least two classes to tell apart: a DatasetError that says so otherwise."""
    classes = sorted(set(ds.labels))
    if len(classes) < 2:
        raise DatasetError(f"{ds.root}: only one class ({', '.join(map(repr, classes))}); a classifier needs at least "
                           "two classes to tell apart: add a sub-folder of photos for another class.")


def list_images(root: str | Path) -> list[Path]:
    """The photo files under ``root`` (by extension), sorted, hidden files skipped; ``root`` itself if a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    return photos(PhotoFolder.entries(root))


def load_dataset(path: str | Path, *, hierarchy: str | Path | None = None, images: str | Path | None = None,
                 flip_pairs: str | None = None) -> Dataset:
    """An image folder, or a Yoga-82 list (``.txt``) whose images lie under ``images``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder; give an image folder with one sub-folder per class.")
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise DatasetError(f"{path}: is an image; give a folder with one sub-folder per class, or a Yoga-82 list file.")
    if hierarchy and not Path(hierarchy).is_file():
        raise DatasetError(f"--hierarchy {hierarchy}: file not found; give a CSV with a header naming the levels "
                           "(class,subgroup,group) and one row per class.")
    if path.is_file():
        if hierarchy:
            raise DatasetError(f"--hierarchy {hierarchy}: not used with a Yoga-82 list ({path.name}): its levels "
                               f"{', '.join(YOGA82_LEVELS)} come from the list's own columns; leave --hierarchy out.")
        ds = load_yoga82_list(path, images)
    else:
        if images:
            raise DatasetError(f"--images {images}: only for a Yoga-82 list; {path} is an image folder whose photos "
                               "lie in its class sub-folders; leave --images out.")
        ds = load_image_folder(path, hierarchy)
    ds.flip_pairs = parse_flip_pairs(flip_pairs, ds)
    return ds


def load_image_folder(root: Path, hierarchy: str | Path | None = None) -> Dataset:
    try:
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"{root}: cannot read folder ({e.strerror}).") from None
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders found; put each class's photos in a folder named after the class.")
    left_out = [(d, loop_entry(d).reason) for d in class_dirs if link_loops(d)]
    class_dirs = [d for d in class_dirs if not link_loops(d)]
    paths, labels, empty = [], [], []
    for d in class_dirs:
        entries = PhotoFolder.entries(d)
        files = photos(entries)
        left_out += [(e.path, e.reason) for e in entries if e.status == "broken_link"]
        if not files:
            empty.append(d.name)
        paths += files
        labels += [d.name] * len(files)
    if empty:
        raise DatasetError(f"{root}: class folders {empty} hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); add photos or remove the folders.")
    leaves = [d.name for d in class_dirs]
    hfile = Path(hierarchy) if hierarchy else root / "hierarchy.csv"
    if hierarchy and not hfile.is_file():
        raise DatasetError(f"--hierarchy {hfile}: file not found.")
    h = read_hierarchy_csv(hfile, leaves) if hfile.exists() else Hierarchy.flat(leaves)
    return Dataset(root, paths, labels, h, left_out=left_out)


def load_yoga82_list(list_file: Path, images: str | Path | None) -> Dataset:
    root = Path(images) if images else list_file.parent
    if not root.is_dir():
        raise DatasetError(f"{root}: image root not found; pass --images ROOT, the folder holding the Yoga-82 pose folders.")
    names = _yoga82_names(list_file.parent / "yoga82_hierarchy.csv")
    paths, labels, ancestors = [], [], {}
    try:
        lines = list(enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{list_file}: not a readable text list ({type(e).__name__}); expected lines 'Folder/image.jpg,class6,class20,class82'.") from None
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rsplit(",", 3)]
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise DatasetError(f"{list_file}:{lineno}: expected 'Folder/image.jpg,class6,class20,class82', got {line.strip()!r}.")
        rel, c6, c20, c82 = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        leaf = names.get(c82, f"class82_{c82:02d}")
        anc = [f"class20_{c20:02d}", YOGA82_CLASS6[c6] if c6 < len(YOGA82_CLASS6) else f"class6_{c6}"]
        if ancestors.setdefault(leaf, anc) != anc:
            raise DatasetError(f"{list_file}:{lineno}: class {leaf!r} appears with two parents ({ancestors[leaf]} and {anc}).")
        paths.append(root / rel)
        labels.append(leaf)
    if not paths:
        raise DatasetError(f"{list_file}: the list is empty.")
    present = [p.exists() for p in paths]
    if not any(present):
        raise DatasetError(f"{root}: none of the {len(paths)} images of {list_file.name} is there; check --images.")
    if not all(present):  # Yoga-82 is distributed as URLs; some never download
        from ..progress import log

        log(f"[yellow]{len(paths) - sum(present)} of {len(paths)} images of {list_file.name} are not under {root}; left out.")
        paths = [p for p, ok in zip(paths, present) if ok]
        labels = [y for y, ok in zip(labels, present) if ok]
    return Dataset(root, paths, labels, Hierarchy(list(YOGA82_LEVELS), ancestors).subset(sorted(set(labels))))


def leave_out_unusable(ds: Dataset) -> None:
    """Take the photos that cannot be trained on out of ``ds`` (into ``ds.left_out``): unreadable, truncated, or
    smaller than ``images.MIN_SIDE`` px on a side (the pose step refuses those as ``too_small``; trained on, each
    would be a gray crop with its folder's label). A DatasetError names a class left with no usable photo."""
    usable = []
    for path in ds.paths:
        try:
            check_usable(path)
            usable.append(True)
        except ImageLoadError as e:
            usable.append(False)
            ds.left_out.append((path, f"{e.status}: {e.reason}"))
    kept = {y for y, ok in zip(ds.labels, usable) if ok}
    empty = [c for c in dict.fromkeys(ds.labels) if c not in kept]
    if empty:
        first = next(p for p, y in zip(ds.paths, ds.labels) if y == empty[0])
        why = dict(ds.left_out)[first]
        raise DatasetError(f"{ds.root}: class(es) {empty} hold no usable photo (every one unreadable or smaller than "
                           f"{MIN_SIDE}x{MIN_SIDE} px; e.g. {first}: {why}); add readable photos or remove the class.")
    ds.paths = [p for p, ok in zip(ds.paths, usable) if ok]
    ds.labels = [y for y, ok in zip(ds.labels, usable) if ok]


def left_out_warning(ds: Dataset, listing: Path | None = None, shown: int = 5) -> str:
    """One line naming the files of ``ds`` left out (the first ``shown``, and where ``listing`` has them all)."""
    if not ds.left_out:
        return ""
    names = [f"{_relative(p, ds.root)} ({why})" for p, why in ds.left_out[:shown]]
    more = len(ds.left_out) - len(names)
    tail = f"; and {more} more" if more else ""
    where = f"; the full list is in {listing}" if listing is not None else ""
    return f"warning: {len(ds.left_out)} file(s) of {ds.root} left out of training: {', '.join(names)}{tail}{where}."


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _yoga82_names(path: Path) -> dict[int, str]:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {int(r["class82_id"]): r["pose_name"] for r in csv.DictReader(fh)}


def parse_flip_pairs(spec: str | None, ds: Dataset) -> dict[str, str]:
    """``A:B,C:D`` or a flip_pairs.csv (left,right) at the data root; classes that mirror into each other.

    Errors name where the pair came from (``--flip-pairs`` or the file and line) and what to do.
    """
    pairs: list[tuple[str, str, str]] = []  # (left, right, where)
    if spec:
        for item in spec.split(","):
            a, sep, b = item.partition(":")
            if not sep or not a.strip() or not b.strip():
                raise DatasetError(f"--flip-pairs: {item!r} is not of the form LEFT_CLASS:RIGHT_CLASS.")
            pairs.append((a.strip(), b.strip(), "--flip-pairs"))
    elif (ds.root / "flip_pairs.csv").exists():
        pairs = read_flip_pairs_csv(ds.root / "flip_pairs.csv")
    out: dict[str, str] = {}
    known = ds.hierarchy.leaves
    for a, b, where in pairs:
        for c in (a, b):
            if c not in known:
                raise DatasetError(f"{where}: flip pair {a}:{b}: class {c!r} is not one of the data set's classes "
                                   f"({', '.join(known)}).")
        if a == b:
            raise DatasetError(f"{where}: flip pair {a}:{b} pairs a class with itself; give two different classes.")
        for c, other in ((a, b), (b, a)):
            if out.get(c, other) != other:
                raise DatasetError(f"{where}: class {c!r} is in two flip pairs ({c}:{out[c]} and {a}:{b}); "
                                   "a class mirrors into one class.")
        out[a], out[b] = b, a
    return out


def undeclared_mirror_pairs(classes: list[str], flip_pairs: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of classes whose names turn into each other when "left" and "right" swap (``left``/``right``,
    ``turn_left``/``turn_right``) and that are not declared flip pairs: a mirrored photo of one is probably the
    other, which flip augmentation cannot know unless told."""
    known, out = set(classes), []
    for c in sorted(known):
        other = re.sub(r"left|right", lambda m: "right" if m.group(0) == "left" else "left", c)
        if other != c and other in known and c < other and flip_pairs.get(c) != other:
            out.append((c, other))
    return out


def read_flip_pairs_csv(path: Path) -> list[tuple[str, str, str]]:
    """(left, right, "FILE:LINE") of each row of a ``left,right`` CSV (header optional; ``;``/tab accepted)."""
    pairs = []
    for i, (lineno, cells) in enumerate(read_table(path, "flip pairs file", "left,right")):
        if i == 0 and cells[0].lower() == "left":  # the header
            continue
        if len(cells) != 2 or not all(cells):
            raise DatasetError(f"{path}:{lineno}: expected two classes 'left,right', got {','.join(cells)!r}; "
                               "one pair of mirror classes per line.")
        pairs.append((cells[0], cells[1], f"{path}:{lineno}"))
    return pairs
