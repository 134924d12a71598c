"""Class hierarchy: leaves (finest level) and their ancestors at coarser levels.

Levels are ordered finest first, as in the hierarchy CSV: ``class,subgroup,group``.
Without a hierarchy there is one level, named ``class``.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DatasetError


@dataclass
class Hierarchy:
    levels: list[str]
    # leaf -> its ancestors at levels[1:], in level order
    ancestors: dict[str, list[str]]
    leaves: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.leaves = sorted(self.ancestors)
        for leaf, anc in self.ancestors.items():
            if len(anc) != len(self.levels) - 1:
                raise DatasetError(f"class {leaf!r} has {len(anc)} ancestors, expected {len(self.levels) - 1}")

    @classmethod
    def flat(cls, leaves: Iterable[str], level: str = "class") -> "Hierarchy":
        return cls([level], {leaf: [] for leaf in leaves})

    @property
    def leaf_level(self) -> str:
        return self.levels[0]

    def classes(self, level: str) -> list[str]:
        if level == self.leaf_level:
            return list(self.leaves)
        i = self._index(level)
        return sorted({anc[i - 1] for anc in self.ancestors.values()})

    def level_sizes(self) -> dict[str, int]:
        """Number of classes at each level, finest first."""
        return {lv: len(self.classes(lv)) for lv in self.levels}

    def ancestor(self, leaf: str, level: str) -> str:
        i = self._index(level)
        return leaf if i == 0 else self.ancestors[leaf][i - 1]

    def path(self, leaf: str) -> dict[str, str]:
        """All labels of a leaf, one per level."""
        return {level: self.ancestor(leaf, level) for level in self.levels}

    def leaf_to_level(self, level: str) -> np.ndarray:
        """Matrix M (n_leaves x n_level_classes), M[i, j] = 1 if leaf i lies under class j."""
        names = self.classes(level)
        index = {n: j for j, n in enumerate(names)}
        m = np.zeros((len(self.leaves), len(names)), dtype=np.float32)
        for i, leaf in enumerate(self.leaves):
            m[i, index[self.ancestor(leaf, level)]] = 1.0
        return m

    def siblings(self) -> list[tuple[str, str]]:
        """Pairs of leaves that share their parent (all leaves are siblings if flat)."""
        parent = (lambda leaf: self.ancestors[leaf][0]) if len(self.levels) > 1 else (lambda leaf: "")
        out = []
        for i, a in enumerate(self.leaves):
            for b in self.leaves[i + 1 :]:
                if parent(a) == parent(b):
                    out.append((a, b))
        return out

    def subset(self, leaves: Sequence[str]) -> "Hierarchy":
        return Hierarchy(list(self.levels), {leaf: list(self.ancestors[leaf]) for leaf in leaves})

    def to_dict(self) -> dict:
        return {"levels": self.levels, "ancestors": self.ancestors}

    @classmethod
    def from_dict(cls, d: dict) -> "Hierarchy":
        return cls(list(d["levels"]), {k: list(v) for k, v in d["ancestors"].items()})

    def _index(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError:
            raise KeyError(f"unknown hierarchy level {level!r}; levels are {self.levels}") from None


def read_hierarchy_csv(path: str | Path, leaves: Iterable[str] | None = None) -> Hierarchy:
    """Read ``class,parent,grandparent,...`` (header names the levels, finest first).

    Columns are separated by commas, or by ``;`` or tabs (spreadsheet exports; see sniff_delimiter).
    With ``leaves`` (the class folders found), checks that every leaf is listed.
    """
    path = Path(path)
    rows = read_table(path, "hierarchy file", "class,subgroup,group")
    if len(rows) < 2:
        raise DatasetError(f"{path}: hierarchy file needs a header row and one row per class.")
    header, body = rows[0][1], rows[1:]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise DatasetError(f"{path}: header {header} must name each level once, finest first (e.g. class,subgroup,group).")
    ancestors: dict[str, list[str]] = {}
    for lineno, row in body:
        if len(row) != len(header):
            raise DatasetError(f"{path}:{lineno}: expected {len(header)} columns ({','.join(header)}), found {len(row)}.")
        if any(not c for c in row):
            raise DatasetError(f"{path}:{lineno}: empty cell in {row}; give every class a name at every level.")
        leaf, anc = row[0], row[1:]
        if leaf in ancestors and ancestors[leaf] != anc:
            raise DatasetError(
                f"{path}:{lineno}: class {leaf!r} is listed twice with different parents "
                f"({ancestors[leaf]} and {anc}); give each class one parent."
            )
        ancestors[leaf] = anc
    _check_single_parents(path, header, ancestors)
    if leaves is not None:
        leaves = list(leaves)
        missing = sorted(set(leaves) - set(ancestors))
        if missing:
            hint = (f" (the file has one column, {header[0]!r}: separate the levels with commas, "
                    "e.g. class,subgroup,group)" if len(header) == 1 else "")
            raise DatasetError(
                f"{path}: classes {missing} have image folders but no row in the hierarchy{hint}; add a row for each."
            )
        ancestors = {leaf: ancestors[leaf] for leaf in leaves}
    return Hierarchy(header, ancestors)


DELIMITERS = (",", ";", "\t")


def read_table(path: Path, what: str, layout: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped cells) of each non-blank row of a small CSV (separator: see sniff_delimiter);
    a DatasetError naming the file, ``what`` it is and its ``layout`` when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read {what} ({e.strerror}).") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the {what} as a UTF-8 CSV ({layout}).") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text))
    return [(reader.line_num, cells) for cells in ([c.strip() for c in r] for r in reader) if any(cells)]


def sniff_delimiter(text: str) -> str:
    """The column separator of a CSV: ``,``, or ``;`` / tab (spreadsheet exports) when the header
    line holds those and no comma."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] and not counts[","] else ","


def _check_single_parents(path: Path, header: list[str], ancestors: dict[str, list[str]]) -> None:
    # A mid-level class must have one parent at every coarser level.
    for i in range(1, len(header) - 1):
        seen: dict[str, str] = {}
        for anc in ancestors.values():
            node, parent = anc[i - 1], anc[i]
            if seen.setdefault(node, parent) != parent:
                raise DatasetError(
                    f"{path}: {header[i]} {node!r} has two parents at level {header[i + 1]!r} "
                    f"({seen[node]!r} and {parent!r}); a class must have exactly one parent."
                )
