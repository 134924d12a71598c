"""The prediction table shared by fit (oof_predictions.csv), evaluate and predict --detailed.

Columns: ``path``, ``fold``, ``status``, ``true_<level>``, per branch and level one probability
column per class ``<branch>:<level>:<class>`` and the label ``pred_<branch>_<level>`` (blank
where the branch abstained: a row of NaN), and after rules ``rules_<level>``.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.hierarchy import Hierarchy
from ..errors import HybridPoseError, RunError

Probs = Mapping[str, np.ndarray]  # level -> rows x classes


def prob_column(branch: str, level: str, cls: str) -> str:
    return f"{branch}:{level}:{cls}"


def true_column(level: str) -> str:
    return f"true_{level}"


def pred_column(branch: str, level: str) -> str:
    return f"pred_{branch}_{level}"


def rules_column(level: str) -> str:
    return f"rules_{level}"


def argmax_labels(p: np.ndarray, names: Sequence[str]) -> list[str]:
    """The most probable class per row; "" where the row is not finite (the branch abstained)."""
    ok = np.isfinite(p).all(1)
    return [names[i] if o else "" for i, o in zip(np.nan_to_num(p, nan=-1.0).argmax(1), ok)]


def answered(p: np.ndarray) -> np.ndarray:
    """Rows where a branch gave probabilities (it abstains with a row of NaN)."""
    return np.isfinite(p).all(1)


def prob_columns(h: Hierarchy, branches: Mapping[str, Probs]) -> dict[str, np.ndarray]:
    cols = {}
    for name, probs in branches.items():
        for lv in h.levels:
            for j, c in enumerate(h.classes(lv)):
                cols[prob_column(name, lv, c)] = probs[lv][:, j]
    return cols


def label_columns(h: Hierarchy, branches: Mapping[str, Probs], consistent: Sequence[str] = ("fused",)) -> dict[str, list]:
    """``pred_<branch>_<level>``; for the ``consistent`` branches the leaf decides and its ancestors follow."""
    cols: dict[str, list] = {}
    for name, probs in branches.items():
        leaf = argmax_labels(probs[h.leaf_level], h.leaves) if name in consistent else None
        for lv in h.levels:
            if leaf is not None:
                cols[pred_column(name, lv)] = [h.ancestor(x, lv) if x else "" for x in leaf]
            else:
                cols[pred_column(name, lv)] = argmax_labels(probs[lv], h.classes(lv))
    return cols


def read_probs(frame: pd.DataFrame, branch: str, level: str, classes: Sequence[str]) -> np.ndarray:
    return frame[[prob_column(branch, level, c) for c in classes]].to_numpy(dtype=float)


def branch_names(frame: pd.DataFrame) -> list[str]:
    """Branches with probability columns in the table, in column order."""
    seen: dict[str, None] = {}
    for c in frame.columns:
        if isinstance(c, str) and c.count(":") >= 2:
            seen.setdefault(c.split(":", 1)[0], None)
    return list(seen)


def table(h: Hierarchy, head: Mapping[str, object], truth: Mapping[str, Sequence[str]] | None,
          branches: Mapping[str, Probs]) -> pd.DataFrame:
    """One prediction table: ``head`` columns, ``true_*`` (if known), probabilities, then labels."""
    cols: dict[str, object] = dict(head)
    for lv, labels in (truth or {}).items():
        cols[true_column(lv)] = list(labels)
    cols.update(prob_columns(h, branches))
    cols.update(label_columns(h, branches))
    return pd.DataFrame(cols)


def prediction_columns(leaf: Sequence[str], leaf_p: np.ndarray, hierarchy: Hierarchy, rules: Sequence[str],
                  branches: Mapping[str, np.ndarray], top_k: int) -> dict[str, list]:
    """The label columns of predictions.csv, a row per ``leaf`` label (photos and clips alike): the label at
    every level, its confidence, the top-k leaves with their probabilities, the rule that decided and each
    branch's own top leaf (``branches``: leaf probabilities)."""
    h, leaves = hierarchy, hierarchy.leaves
    cols: dict[str, list] = {lv: [h.ancestor(label, lv) for label in leaf] for lv in h.levels}
    index = {c: j for j, c in enumerate(leaves)}
    cols["confidence"] = list(np.round([leaf_p[r, index[label]] for r, label in enumerate(leaf)], 4))
    order = np.argsort(-leaf_p, axis=1)[:, :top_k]
    for k in range(min(top_k, len(leaves))):
        cols[f"top{k + 1}"] = [leaves[j] for j in order[:, k]]
        cols[f"top{k + 1}_prob"] = list(np.round(leaf_p[np.arange(len(order)), order[:, k]], 4))
    cols["rule"] = list(rules)
    for name, probs in branches.items():
        cols[f"{name}_top"] = argmax_labels(probs, leaves)
    return cols


def column_names(h: Hierarchy, branches: Sequence[str]) -> list[str]:
    """The ``true_*``, probability and label columns `table` writes for these branches."""
    probs = [prob_column(b, lv, c) for b in branches for lv in h.levels for c in h.classes(lv)]
    return [*map(true_column, h.levels), *probs, *(pred_column(b, lv) for b in branches for lv in h.levels)]


def missing_columns(frame: pd.DataFrame, h: Hierarchy, branches: Sequence[str]) -> list[str]:
    """Columns an out-of-fold table of these branches must have and ``frame`` lacks (rules: all or none)."""
    expected = ["path", "fold", *column_names(h, branches)]
    rules = [*map(rules_column, h.levels), "rule"]
    if any(c in frame.columns for c in rules):  # calibrated: its rules columns too
        expected += rules
    return [c for c in expected if c not in frame.columns]


def read_table(path: Path, fix: str, error: type[HybridPoseError] = RunError) -> pd.DataFrame:
    """A CSV table hybridpose wrote (this table, folds.csv, ...), blank cells NaN; ``error`` naming the file and
    ``fix`` when it is not a readable CSV or its last line is cut short."""
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        kind = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else "not a CSV table"
        raise error(f"{path}: {kind}; {fix}.") from None
    if not _last_line_complete(path, len(frame.columns)):
        raise error(f"{path}: damaged (its last line is cut short); {fix}.")
    return frame


def _last_line_complete(path: Path, n_fields: int) -> bool:
    """False when the file ends without a newline inside a row that has fewer fields than the header
    (pandas fills the missing cells with blanks, as if the branch had abstained)."""
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        if fh.read(1) in (b"\n", b"\r"):
            return True
    with open(path, encoding="utf-8", newline="") as fh:
        last: list[str] = []
        for last in csv.reader(fh):
            pass
    return len(last) >= n_fields
