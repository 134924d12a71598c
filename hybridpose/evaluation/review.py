"""Material for a human review: the most confidently wrong photos and probable label errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import write_csv
from ..data.hierarchy import Hierarchy
from ..viz.plots import contact_sheet
from .metrics import labels, level_probs, predictions, truth

TOP_LOSS_COLUMNS = ["path", "true", "predicted", "correct", "p_true", "p_pred", "loss"]
DUPLICATE_COLUMNS = ["group", "path", "label"]
# Probabilities are clipped here so a zero probability gives a finite loss.
EPS = 1e-12


def top_losses(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str = "fused", n: int = 24) -> pd.DataFrame:
    """The n photos with the largest cross-entropy of the true leaf under the branch's leaf
    probabilities: the wrong ones first, then the least sure right ones, which are worth a look
    when cleaning labels too (rows where the branch abstained are skipped)."""
    leaf = hierarchy.leaf_level
    probs = level_probs(frame, hierarchy, branch, leaf)
    true, pred = truth(frame, leaf), predictions(frame, hierarchy, branch, leaf)
    if probs is None or true is None or pred is None:
        raise ValueError(f"no {branch} leaf probabilities or no true_{leaf} column to rank losses by.")
    p, names = probs
    index = {c: j for j, c in enumerate(names)}
    paths = labels(frame["path"]) if "path" in frame.columns else np.full(len(frame), None, dtype=object)
    rows = []
    for i in range(len(frame)):
        t, q = true[i], pred[i]
        if t is None or q is None or not np.isfinite(p[i]).any():
            continue
        p_true = float(p[i, index[t]]) if t in index else 0.0
        p_pred = float(p[i, index[q]]) if q in index else math.nan
        loss = -math.log(min(max(p_true, EPS), 1.0))
        rows.append((paths[i], t, q, t == q, p_true, p_pred, loss))
    out = pd.DataFrame(rows, columns=TOP_LOSS_COLUMNS)
    return out.sort_values("loss", ascending=False, kind="stable").head(n).reset_index(drop=True)


def duplicate_groups(folds_frame: pd.DataFrame) -> pd.DataFrame:
    """Near-duplicate groups (``group`` of folds.csv) holding more than one photo and
    more than one label: one of the labels is likely wrong."""
    if folds_frame is None or folds_frame.empty:
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    df = pd.DataFrame(
        {"group": labels(folds_frame["group"]), "path": labels(folds_frame["path"]), "label": labels(folds_frame["label"])}
    ).dropna(subset=["group"])
    stats = df.groupby("group")["label"].agg(["size", "nunique"])
    mixed = stats.index[(stats["size"] > 1) & (stats["nunique"] > 1)]
    out = df[df["group"].isin(set(mixed))]
    return out.sort_values(["group", "label", "path"], kind="stable").reset_index(drop=True)[DUPLICATE_COLUMNS]


def _resolve(path: str | None, image_root: str | Path | None) -> str:
    if not isinstance(path, str):
        return ""
    p = Path(path)
    return str(p if p.is_absolute() or image_root is None else Path(image_root) / p)


def _shown(path: str):
    """What the sheet draws: a photo's path; a clip (a video or a frame folder) by its first frame."""
    from ..data.video import is_video

    if path and (is_video(path) or Path(path).is_dir()):
        from ..data.clips import preview  # imported for clips only: it registers the clip input sources

        return preview(path)
    return path


def _caption(row) -> list[str]:
    name = Path(row.path).name if isinstance(row.path, str) else ""
    return [f"true {row.true}", f"pred {row.predicted} {row.p_pred:.2f}", name]


def _review_branch(frame: pd.DataFrame, hierarchy: Hierarchy, branch: str) -> str | None:
    for b in (branch, "fused", "image", "keypoint"):
        if level_probs(frame, hierarchy, b, hierarchy.leaf_level) is not None:
            return b
    return None


def write_review(
    frame: pd.DataFrame,
    folds_frame: pd.DataFrame | None,
    hierarchy: Hierarchy,
    out_dir: str | Path,
    *,
    branch: str = "fused",
    n: int = 24,
    image_root: str | Path | None = None,
) -> dict:
    """Write top_losses.csv, top_losses.png and duplicates_across_classes.csv into out_dir.

    Relative photo paths are resolved against image_root when given.
    """
    out = Path(out_dir)
    used = _review_branch(frame, hierarchy, branch)
    losses = top_losses(frame, hierarchy, used, n) if used else pd.DataFrame(columns=TOP_LOSS_COLUMNS)
    write_csv(out / "top_losses.csv", losses)
    items = [(_shown(_resolve(r.path, image_root)), _caption(r)) for r in losses.itertuples(index=False)]
    contact_sheet(items, out / "top_losses.png", cols=6, thumb=200)
    dups = duplicate_groups(folds_frame) if folds_frame is not None else pd.DataFrame(columns=DUPLICATE_COLUMNS)
    write_csv(out / "duplicates_across_classes.csv", dups)
    return {
        "review_branch": used,
        "top_losses": len(losses),
        "duplicate_groups": int(dups["group"].nunique()),
        "files": ["top_losses.csv", "top_losses.png", "duplicates_across_classes.csv"],
    }
