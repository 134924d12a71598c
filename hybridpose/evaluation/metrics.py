"""Evaluation of out-of-fold predictions (``oof_predictions.csv``, see docs/FORMATS.md).

Abstention: the keypoint branch gives no answer for photos without a detected person
(empty probability and ``pred_`` cells). Such rows are counted in ``n_abstained``;
``top1``, ``top5`` and ``macro_f1`` are computed over the rows where the branch
answered (how good the branch is when it speaks), while ``top1_all`` and
``top5_all`` divide by every row, counting abstentions as wrong (what the branch
delivers on its own, comparable across branches).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from ..atomic import write_csv, write_json
from ..data.hierarchy import Hierarchy
from ..run.predtable import branch_names, pred_column, prob_column, rules_column, true_column

COMBINED = ("fused", "rules")  # the pipeline's outputs, listed after the run's branches
DISPLAY_NAMES = {
    "keypoint": "keypoint branch",
    "keypoint_linear": "linear keypoint branch",
    "image": "image branch",
    "fused": "fused",
    "rules": "fused + rules",
}
METRIC_COLUMNS = ["branch", "level", "n", "n_abstained", "top1", "top1_all", "top5", "macro_f1", "top5_all"]
YOGA82_LEVELS = frozenset({"class6", "class20", "class82"})
TOP_K = 5


def display_name(branch: str) -> str:
    return DISPLAY_NAMES.get(branch, branch)


def coarse_to_fine(hierarchy: Hierarchy) -> list[str]:
    return list(reversed(hierarchy.levels))


def level_filename(prefix: str, level: str, suffix: str) -> str:
    """``per_class_<level>.csv`` etc., with characters unsafe in file names replaced."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', level)}{suffix}"


# ---------------------------------------------------------------- labels and probabilities


def _label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        # Integer class ids read back as floats when the column has empty cells.
        if value.is_integer():
            return str(int(value))
    elif not isinstance(value, str) and pd.isna(value):
        return None
    text = str(value).strip()
    return text or None


def labels(values: Sequence[Any] | pd.Series) -> np.ndarray:
    """Object array of labels as strings, None where the cell is empty."""
    out = np.empty(len(values), dtype=object)
    out[:] = [_label(v) for v in values]
    return out


def truth(frame: pd.DataFrame, level: str) -> np.ndarray | None:
    col = true_column(level)
    return labels(frame[col]) if col in frame.columns else None


def prob_columns(frame: pd.DataFrame, branch: str, level: str) -> dict[str, str]:
    """class -> column for the ``<branch>:<level>:<class>`` columns present."""
    prefix = prob_column(branch, level, "")
    return {c[len(prefix):]: c for c in frame.columns if isinstance(c, str) and c.startswith(prefix)}


def level_probs(
    frame: pd.DataFrame, hierarchy: Hierarchy, branch: str, level: str
) -> tuple[np.ndarray, list[str]] | None:
    """(rows x classes probabilities, class names) of a branch at a level, or None.

    Falls back to summing the leaf probabilities over the hierarchy when the level
    has no columns of its own. Rows where the branch abstained are all NaN.
    """
    if branch == "rules":
        return None
    cols = prob_columns(frame, branch, level)
    if cols:
        names = sorted(cols)
        return frame[[cols[n] for n in names]].to_numpy(dtype=float), names
    leaf_cols = prob_columns(frame, branch, hierarchy.leaf_level)
    if level != hierarchy.leaf_level and set(leaf_cols) == set(hierarchy.leaves):
        leaf = frame[[leaf_cols[n] for n in hierarchy.leaves]].to_numpy(dtype=float)
        return leaf @ hierarchy.leaf_to_level(level), hierarchy.classes(level)
    return None


def predictions(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str, level: str) -> np.ndarray | None:
    """Predicted label per row (None where the branch abstained), or None if the branch has no output."""
    col = rules_column(level) if branch == "rules" else pred_column(branch, level)
    if col in frame.columns:
        return labels(frame[col])
    probs = level_probs(frame, hierarchy, branch, level)
    if probs is None:
        return None
    p, names = probs
    answered = np.isfinite(p).any(axis=1)
    best = np.argmax(np.where(np.isfinite(p), p, -np.inf), axis=1)
    out = np.empty(len(p), dtype=object)
    out[:] = [names[j] if ok else None for j, ok in zip(best, answered)]
    return out


def _present(values: np.ndarray) -> np.ndarray:
    return np.array([v is not None for v in values], dtype=bool)


def _topk_hits(p: np.ndarray, names: list[str], true: np.ndarray, k: int) -> np.ndarray:
    """Whether the true class ranks within the top k. A true class absent from the
    columns is a miss; ties with the k-th score count as hits."""
    index = {n: j for j, n in enumerate(names)}
    hits = np.zeros(len(p), dtype=bool)
    for i, label in enumerate(true):
        j = index.get(label)
        if j is not None:
            hits[i] = np.sum(p[i] > p[i, j]) < k
    return hits


# ---------------------------------------------------------------- metrics


def _level_row(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str, level: str) -> dict | None:
    true = truth(frame, level)
    pred = predictions(frame, hierarchy, branch, level)
    if true is None or pred is None:
        return None
    has_truth = _present(true)
    answered = has_truth & _present(pred)
    n, n_answered = int(has_truth.sum()), int(answered.sum())
    t, p = true[answered], pred[answered]
    n_correct = int(np.sum(t == p))
    row = {
        "branch": branch,
        "level": level,
        "n": n,
        "n_abstained": n - n_answered,
        "top1": n_correct / n_answered if n_answered else math.nan,
        "top1_all": n_correct / n if n else math.nan,
        "top5": math.nan,
        "top5_all": math.nan,
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)) if n_answered else math.nan,
    }
    probs = level_probs(frame, hierarchy, branch, level)
    if probs is not None:
        scores, names = probs
        scored = answered & np.isfinite(scores).any(axis=1)
        hits = _topk_hits(scores[scored], names, true[scored], TOP_K)
        row["top5"] = float(hits.mean()) if hits.size else math.nan
        row["top5_all"] = float(hits.sum() / n) if n else math.nan
    return row


def level_metrics(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str) -> pd.DataFrame:
    """One row per level: n, n_abstained, top1, top1_all, top5, macro_f1, top5_all.

    Levels for which the branch has no output (or the frame no truth) are left out.
    """
    rows = [_level_row(frame, hierarchy, branch, level) for level in hierarchy.levels]
    return pd.DataFrame([r for r in rows if r is not None], columns=METRIC_COLUMNS)


def metrics_table(frame: pd.DataFrame, hierarchy: Hierarchy) -> pd.DataFrame:
    """level_metrics of every branch that has output, stacked."""
    parts = [level_metrics(frame, hierarchy, b) for b in frame_branches(frame, hierarchy)]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def frame_branches(frame: pd.DataFrame, hierarchy: Hierarchy) -> list[str]:
    """Branches with columns in the table (probabilities or labels), then fused, then rules."""
    names = list(branch_names(frame))
    for c in frame.columns:
        for lv in hierarchy.levels:
            if isinstance(c, str) and c.startswith("pred_") and c.endswith(f"_{lv}") and len(c) > len(lv) + 6:
                names.append(c[len("pred_"):-len(lv) - 1])
    if any(rules_column(lv) in frame.columns for lv in hierarchy.levels):
        names.append("rules")
    ordered = [b for b in dict.fromkeys(names) if b not in COMBINED]
    return [*ordered, *[b for b in COMBINED if b in names]]


def available_branches(frame: pd.DataFrame, hierarchy: Hierarchy) -> list[str]:
    return [b for b in frame_branches(frame, hierarchy)
            if any(predictions(frame, hierarchy, b, lv) is not None for lv in hierarchy.levels)]


def best_branch(frame: pd.DataFrame, hierarchy: Hierarchy) -> str:
    """The branch the pipeline ships: fused + rules when calibrated, else fused."""
    branches = available_branches(frame, hierarchy)
    if not branches:
        raise ValueError("the frame has no prediction columns of any branch (pred_*, rules_* or <branch>:<level>:<class>).")
    for b in ("rules", "fused"):
        if b in branches:
            return b
    return branches[-1]


def _lookup(table: pd.DataFrame, branch: str, level: str, col: str) -> float:
    hit = table[(table["branch"] == branch) & (table["level"] == level)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def ablation_table(frame: pd.DataFrame, hierarchy: Hierarchy, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows = branches with output, columns per level (coarse to fine):
    ``<level> top-1`` (answered rows), ``<level> top-1 all`` (abstention = wrong), ``<level> top-5``."""
    table = metrics_table(frame, hierarchy) if table is None else table
    rows = []
    for branch in dict.fromkeys(table["branch"]):
        row: dict[str, Any] = {"branch": display_name(branch)}
        for level in coarse_to_fine(hierarchy):
            row[f"{level} top-1"] = _lookup(table, branch, level, "top1")
            row[f"{level} top-1 all"] = _lookup(table, branch, level, "top1_all")
            row[f"{level} top-5"] = _lookup(table, branch, level, "top5")
        rows.append(row)
    return pd.DataFrame(rows)


def yoga82_table(
    frame: pd.DataFrame, hierarchy: Hierarchy, table: pd.DataFrame | None = None
) -> pd.DataFrame | None:
    """The Yoga-82 paper's layout, in percent: rows = branches, columns
    ``<n> classes top-1`` / ``<n> classes top-5`` per level, coarse to fine, where n is
    the number of classes at that level. Scores count every photo (abstention = wrong),
    as the paper does. None unless the levels are class6/class20/class82."""
    if set(hierarchy.levels) != YOGA82_LEVELS:
        return None
    table = metrics_table(frame, hierarchy) if table is None else table
    rows = []
    for branch in dict.fromkeys(table["branch"]):
        row: dict[str, Any] = {"branch": display_name(branch)}
        for level in coarse_to_fine(hierarchy):
            n = len(hierarchy.classes(level))
            row[f"{n} classes top-1"] = 100 * _lookup(table, branch, level, "top1_all")
            row[f"{n} classes top-5"] = 100 * _lookup(table, branch, level, "top5_all")
        rows.append(row)
    return pd.DataFrame(rows)


def _answered(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str, level: str) -> tuple[np.ndarray, np.ndarray]:
    true = truth(frame, level)
    pred = predictions(frame, hierarchy, branch, level)
    if true is None or pred is None:
        raise ValueError(f"no {display_name(branch)} predictions or no true labels at level {level!r}.")
    keep = _present(true) & _present(pred)
    return true[keep], pred[keep]


def _class_names(hierarchy: Hierarchy, level: str, *seen: np.ndarray) -> list[str]:
    names = hierarchy.classes(level)
    extra = sorted(set().union(*[set(s) for s in seen]) - set(names))
    return names + extra


def per_class_report(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str, level: str) -> pd.DataFrame:
    """class, precision, recall, f1, support over the rows where the branch answered."""
    t, p = _answered(frame, hierarchy, branch, level)
    names = _class_names(hierarchy, level, t, p)
    if len(t) == 0:
        zeros = np.zeros(len(names))
        return pd.DataFrame({"class": names, "precision": zeros, "recall": zeros, "f1": zeros, "support": zeros.astype(int)})
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=names, zero_division=0)
    return pd.DataFrame({"class": names, "precision": prec, "recall": rec, "f1": f1, "support": sup})


def confusion(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str, level: str) -> tuple[np.ndarray, list[str]]:
    """(counts[true, predicted], class names) over the rows where the branch answered."""
    t, p = _answered(frame, hierarchy, branch, level)
    names = _class_names(hierarchy, level, t, p)
    if len(t) == 0:
        return np.zeros((len(names), len(names)), dtype=int), names
    return confusion_matrix(t, p, labels=names), names


# ---------------------------------------------------------------- writing


def _json_safe(value: Any) -> Any:
    """NaN -> None, so metrics.json stays valid JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _rules_fired(frame: pd.DataFrame) -> dict[str, int]:
    if "rule" not in frame.columns:
        return {}
    fired = pd.Series([r for r in labels(frame["rule"]) if r is not None], dtype=object)
    return {str(k): int(v) for k, v in fired.value_counts().items()}


def _write_level_outputs(
    frame: pd.DataFrame, hierarchy: Hierarchy, out: Path, branch: str, table: pd.DataFrame, title: str
) -> list[str]:
    from ..viz.plots import plot_confusion  # matplotlib only when writing

    files = []
    for level in hierarchy.levels:
        if predictions(frame, hierarchy, branch, level) is None or truth(frame, level) is None:
            continue
        name = level_filename("per_class", level, ".csv")
        write_csv(out / name, per_class_report(frame, hierarchy, branch, level))
        counts, names = confusion(frame, hierarchy, branch, level)
        top1 = _lookup(table, branch, level, "top1")
        png = level_filename("confusion", level, ".png")
        heading = f"{title}: {level}, {display_name(branch)} (top-1 {top1:.1%}, n={int(counts.sum())})"
        plot_confusion(counts, names, heading, out / png)
        files += [name, png]
    return files


def evaluate_frame(frame: pd.DataFrame, hierarchy: Hierarchy, out_dir: str | Path, *, title: str) -> dict:
    """Write metrics.csv, ablation.csv, per_class_<level>.csv, confusion_<level>.png,
    yoga82_table.csv (Yoga-82 levels only) and metrics.json into out_dir; return the summary."""
    out = Path(out_dir)
    table = metrics_table(frame, hierarchy)
    best = best_branch(frame, hierarchy)
    write_csv(out / "metrics.csv", table)
    write_csv(out / "ablation.csv", ablation_table(frame, hierarchy, table))
    files = ["metrics.csv", "ablation.csv"]
    files += _write_level_outputs(frame, hierarchy, out, best, table, title)
    yoga = yoga82_table(frame, hierarchy, table)
    if yoga is not None:
        write_csv(out / "yoga82_table.csv", yoga)
        files.append("yoga82_table.csv")
    best_rows = table[table["branch"] == best].set_index("level")
    summary = {
        "title": title,
        "n_photos": len(frame),
        "levels": list(hierarchy.levels),
        "branches": list(dict.fromkeys(table["branch"])),
        "best_branch": best,
        "best_branch_name": display_name(best),
        "headline": {
            level: {k: best_rows.at[level, k] for k in ("top1", "top5", "macro_f1")}
            for level in coarse_to_fine(hierarchy)
            if level in best_rows.index
        },
        "rules_fired": _rules_fired(frame),
        "metrics": table.to_dict(orient="records"),
        "yoga82": None if yoga is None else yoga.to_dict(orient="records"),
        "files": files + ["metrics.json"],
    }
    summary = _json_safe(summary)
    write_json(out / "metrics.json", summary)
    return summary
