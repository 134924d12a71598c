"""Pose front end: the keypoints of every photo, from its skeleton's pose model, cached by content.

`extract` turns a list of image paths into the poses table (docs/FORMATS.md), one row per
image whatever happens to it: bad files get a status and a reason, never an exception. The pieces it
uses: ``result`` (one photo's ``PoseResult``), ``cache`` (the one cache protocol: hash, look up, compute
what is missing, store), ``workers`` (the one pool of pose-model processes) and ``estimators/`` (one module
per pose model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..defaults import DEFAULTS
from ..progress import progress_bar
from ..skeletons import Skeleton, get_skeleton
from .cache import Lookup, PoseCache, look_up
from .estimators import ESTIMATORS
from .result import PoseResult
from .workers import run_pose

BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
HEAD_COLUMNS = ["path", "sha256", "status", "reason", "width", "height"]

def estimator_class(skeleton: Skeleton | str | None = None) -> type:
    """The pose front end class that finds ``skeleton``'s keypoints."""
    sk = get_skeleton(skeleton)
    return ESTIMATORS.get(sk.estimator, error=f"skeleton {sk.name!r} has no pose model here; give its keypoints "
                                               "with --keypoints FILE.")


def extract(
    paths: Sequence[str | Path],
    *,
    cache_dir: str | Path | None = None,
    workers: int = DEFAULTS.pose_workers,
    show_progress: bool = True,
    use_cache: bool = True,
    skeleton: Skeleton | str | None = None,
) -> pd.DataFrame:
    """Poses table for ``paths`` (one row each, in order). Cached results cost no pose model run."""
    estimator = estimator_class(skeleton)
    paths = [str(p) for p in paths]
    cache = PoseCache(cache_dir, estimator.version) if use_cache else None
    try:
        lookup = look_up(paths, cache)
        results = [lookup.known(i) for i in range(len(paths))]
        _compute(paths, lookup, results, cache, workers, show_progress, estimator)
    finally:
        if cache is not None:
            cache.close()
    return make_table(paths, lookup.shas, results, estimator.skeleton_name)


def _compute(paths, lookup: Lookup, results, cache, workers, show_progress, estimator) -> None:
    todo = lookup.todo()
    pending: list[tuple[str, PoseResult]] = []
    with progress_bar("pose", total=len(todo), enabled=show_progress and bool(todo)) as advance:
        for j, result in run_pose([paths[i] for i in todo], workers, estimator):
            i = todo[j]
            results[i] = result
            pending.append((lookup.shas[i], result))
            if cache is not None and len(pending) >= 32:
                cache.put_many(pending)
                pending.clear()
            advance()
    if cache is not None and pending:
        cache.put_many(pending)
    _fill_duplicates(lookup.shas, results)


def _fill_duplicates(shas, results) -> None:
    by_sha = {s: r for s, r in zip(shas, results) if r is not None and s}
    for i, r in enumerate(results):
        if r is None:
            results[i] = by_sha[shas[i]]


def make_table(paths: list[str], shas: list[str | None], results: list[PoseResult | None],
               skeleton: Skeleton | str | None = None) -> pd.DataFrame:
    """The poses table (docs/FORMATS.md): one row per path, keypoint columns named by the skeleton."""
    skeleton = get_skeleton(skeleton)
    rows = np.full((len(paths), 4 + len(skeleton.columns)), np.nan)
    for i, r in enumerate(results):
        assert r is not None
        if r.box is not None:
            rows[i, :4] = r.box
        if r.keypoints is not None:
            rows[i, 4:] = np.asarray(r.keypoints).reshape(-1)
    head = pd.DataFrame({
        "path": paths, "sha256": [s or "" for s in shas],
        "status": [r.status for r in results], "reason": [r.reason for r in results],  # type: ignore[union-attr]
        "width": [r.width for r in results], "height": [r.height for r in results],  # type: ignore[union-attr]
    })
    return pd.concat([head, pd.DataFrame(rows, columns=[*BOX_COLUMNS, *skeleton.columns])], axis=1)


def table_skeleton(table: pd.DataFrame) -> Skeleton:
    """The skeleton whose keypoint columns the poses table holds."""
    from ..skeletons import SKELETONS, available

    for name in available():
        if set(SKELETONS[name].columns) <= set(table.columns):
            return SKELETONS[name]
    raise ValueError("the poses table has no complete set of keypoint columns of a known skeleton")


def keypoints_array(table: pd.DataFrame, skeleton: Skeleton | str | None = None) -> np.ndarray:
    """(N, n, 4) keypoints from a poses table; NaN where none were found."""
    sk = get_skeleton(skeleton) if skeleton is not None else table_skeleton(table)
    return table[sk.columns].to_numpy(dtype=np.float64).reshape(len(table), sk.n, 4)


def boxes_array(table: pd.DataFrame) -> np.ndarray:
    return table[BOX_COLUMNS].to_numpy(dtype=np.float64)


def summarize(table: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in table["status"].value_counts().items()}
