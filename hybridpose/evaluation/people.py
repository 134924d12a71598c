"""Several people in a labelled photo: the label belongs to one of them.

A photo's label names the pose of one subject. When the pose model found several people, the row that is
scored is the one ``fit --person`` would have given the label to (``largest`` by default, or ``center``);
the other people's rows are kept apart (``other_people.csv``), never scored against a label that is not theirs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.hierarchy import Hierarchy
from ..defaults import DEFAULTS
from ..pose.frontend import BOX_COLUMNS, choose_person
from ..run.predtable import pred_column, rules_column, true_column

PEOPLE_BANDS = ((0, "nobody"), (1, "1"), (2, "2"), (3, "3"), (4, "4 or more"))
OTHER_COLUMNS = ["path", "status", "person", *BOX_COLUMNS, "person_score"]


def several_rows(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` is a multi-person table (a ``person`` column: one row per person found)."""
    return "person" in frame.columns and "path" in frame.columns


def one_row_per_photo(frame: pd.DataFrame, how: str = DEFAULTS.person) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The row of each photo that its label belongs to (``how``: ``largest`` or ``center``, as ``fit --person``),
    with a ``people`` column (people found in the photo); and the other people's rows."""
    frame = frame.reset_index(drop=True)
    if how == "center" and not {"width", "height"} <= set(frame.columns):
        frame = frame.assign(**_image_sizes(frame["path"]))
    chosen, _ = choose_person(frame.assign(_row=np.arange(len(frame))), how)
    others = frame.drop(index=chosen["_row"].to_numpy())
    return chosen.drop(columns="_row"), others.reset_index(drop=True)


def _image_sizes(paths: pd.Series) -> dict[str, list[float]]:
    """Width and height of each photo, read from its header (nan where it cannot be opened)."""
    from PIL import Image

    sizes = {}
    for p in dict.fromkeys(paths):
        try:
            with Image.open(p) as im:
                sizes[p] = (float(im.width), float(im.height))
        except (OSError, ValueError):
            sizes[p] = (np.nan, np.nan)
    return {"width": [sizes[p][0] for p in paths], "height": [sizes[p][1] for p in paths]}


def people_bands(frame: pd.DataFrame, h: Hierarchy) -> list[dict]:
    """Photos by the number of people found in them: how many, and the scored person's top-1 (final label)."""
    if "people" not in frame.columns:
        return []
    leaf = h.leaf_level
    final = next((frame[c] for c in (rules_column(leaf), pred_column("fused", leaf), leaf) if c in frame), None)
    truth = frame[true_column(leaf)] if true_column(leaf) in frame else None
    right = (final.astype(str) == truth.astype(str)).to_numpy() if final is not None and truth is not None else None
    people = pd.to_numeric(frame["people"], errors="coerce").fillna(0).astype(int).to_numpy()
    rows = []
    for n, name in PEOPLE_BANDS:
        band = people >= n if n == PEOPLE_BANDS[-1][0] else people == n
        count = int(band.sum())
        top1 = round(100 * float(right[band].mean()), 1) if right is not None and count else None
        rows.append({"people found": name, "photos": count, "top-1 %": top1})
    return rows


def write_others(others: pd.DataFrame, h: Hierarchy, out_dir: Path) -> str | None:
    """``other_people.csv``: the people of labelled photos whose label is not theirs, with what they were
    predicted (not scored); None when there are none."""
    from ..atomic import write_csv

    ok = others[others["status"] == "ok"] if "status" in others else others
    if ok.empty:
        return None
    labels = [c for c in (*h.levels, "confidence") if c in ok.columns]
    write_csv(out_dir / "other_people.csv", ok[[c for c in OTHER_COLUMNS if c in ok.columns] + labels])
    return "other_people.csv"


def oof_people(frame: pd.DataFrame, poses: Path) -> pd.DataFrame:
    """The out-of-fold table with ``people`` from the run's poses.csv (written by ``fit --max-people N``)."""
    if not poses.is_file():
        return frame
    table = pd.read_csv(poses, usecols=lambda c: c in ("path", "people"))
    if "people" not in table or "path" not in frame:
        return frame
    return frame.assign(people=frame["path"].map(dict(zip(table["path"], table["people"]))))
