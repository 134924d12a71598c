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
from .estimators import ESTIMATORS, looked_twice
from .result import PoseResult
from .workers import run_pose

BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
HEAD_COLUMNS = ["path", "sha256", "status", "reason", "width", "height"]
PERSON_COLUMNS = ["person", "person_score"]  # the multi-person table's: index left to right, the model's confidence


def estimator_class(skeleton: Skeleton | str | None = None, max_people: int = 1, second_look: bool = False) -> type:
    """The pose front end class that finds ``skeleton``'s keypoints; with ``max_people`` > 1 the multi-person
    model that stands in for it (an estimator whose ``people_of`` names it), where there is one; with
    ``second_look``, followed on a photo where it finds nobody by its second look (``second_look_of``)."""
    sk = get_skeleton(skeleton)
    chosen = ESTIMATORS.get(sk.estimator, error=f"skeleton {sk.name!r} has no pose model here; give its keypoints "
                                                 "with --keypoints FILE.")
    if max_people > 1:
        chosen = next((ESTIMATORS[n] for n in ESTIMATORS.names()
                       if getattr(ESTIMATORS[n], "people_of", None) == sk.estimator), chosen)
    second = retry_class(chosen, "second_look_of") if second_look else None
    return looked_twice(chosen, second) if second is not None else chosen


def retry_class(estimator: type, of: str = "retry_of") -> type | None:
    """The estimator registered as ``estimator``'s second look at what it found nothing in: a clip's frames
    (its ``retry_of``), or with ``of="second_look_of"`` a photo (stricter: a photo has no other frames to outvote
    a stray find)."""
    for name in ESTIMATORS.names():
        if getattr(ESTIMATORS[name], of, None) == estimator.name:
            return ESTIMATORS[name]
    return None


def extract(
    paths: Sequence[str | Path],
    *,
    cache_dir: str | Path | None = None,
    workers: int = DEFAULTS.pose_workers,
    show_progress: bool = True,
    use_cache: bool = True,
    skeleton: Skeleton | str | None = None,
    max_people: int = 1,
    retry: bool = False,
    second_look: bool = False,
) -> pd.DataFrame:
    """Poses table for ``paths`` (one row each, in order; with ``max_people`` > 1 one row per person found,
    up to that many, and the person columns). Cached results cost no pose model run. ``retry``: frames of a
    clip the pose model found nothing in get a second look from its retry estimator (``retry_class``), where it
    has one; ``second_look``: photos do, from its stricter photo estimator (``second_look_of``)."""
    estimator = estimator_class(skeleton, max_people, second_look)
    paths = [str(p) for p in paths]
    shas, results = _results(paths, estimator, cache_dir, workers, show_progress, use_cache)
    second = retry_class(estimator) if retry else None
    nobody = getattr(estimator, "missing", ("no_person",))[0]
    missing = [i for i, r in enumerate(results) if second is not None and r.status == nobody]
    if missing:
        _, again = _results([paths[i] for i in missing], second, cache_dir, workers, show_progress, use_cache)
        for i, r in zip(missing, again):
            if r.status == "ok":
                results[i] = r
    return make_table(paths, shas, results, estimator.skeleton_name, max_people if max_people > 1 else None)


def _results(paths: list[str], estimator: type, cache_dir, workers, show_progress, use_cache):
    cache = PoseCache(cache_dir, estimator.version) if use_cache else None
    try:
        lookup = look_up(paths, cache)
        results = [lookup.known(i) for i in range(len(paths))]
        _compute(paths, lookup, results, cache, workers, show_progress, estimator)
    finally:
        if cache is not None:
            cache.close()
    return lookup.shas, results


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
               skeleton: Skeleton | str | None = None, max_people: int | None = None) -> pd.DataFrame:
    """The poses table (docs/FORMATS.md): one row per path, keypoint columns named by the skeleton; with
    ``max_people``, one row per person (up to that many, at least one row per path) and the person columns."""
    skeleton = get_skeleton(skeleton)
    people = [(i, p) for i, r in enumerate(results) for p in person_rows(r, max_people)]  # type: ignore[arg-type]
    rows = np.full((len(people), 4 + len(skeleton.columns)), np.nan)
    for j, (_, p) in enumerate(people):
        if p.box is not None:
            rows[j, :4] = p.box
        if p.keypoints is not None:
            rows[j, 4:] = np.asarray(p.keypoints).reshape(-1)
    rs = [results[i] for i, _ in people]
    head = pd.DataFrame({
        "path": [paths[i] for i, _ in people], "sha256": [shas[i] or "" for i, _ in people],
        "status": [r.status for r in rs], "reason": [r.reason for r in rs],  # type: ignore[union-attr]
        "width": [r.width for r in rs], "height": [r.height for r in rs],  # type: ignore[union-attr]
    })
    if max_people is not None:
        head["person"] = [p.index for _, p in people]
        head["person_score"] = [np.nan if p.score is None else p.score for _, p in people]
    return pd.concat([head, pd.DataFrame(rows, columns=[*BOX_COLUMNS, *skeleton.columns])], axis=1)


def person_rows(result: PoseResult, max_people: int | None) -> list:
    """The rows a photo's result gives: its one person (the single-person table), or each person up to
    ``max_people``."""
    from .result import Person

    if max_people is None:
        return [Person(0, result.box, result.keypoints, None)]
    return result.persons(max_people)


PERSON_CHOICES = ("largest", "center")  # whose pose a training photo's label belongs to


def choose_person(table: pd.DataFrame, how: str = DEFAULTS.person) -> tuple[pd.DataFrame, int]:
    """One row per photo of a multi-person poses table (its rows in order): the person a photo's label belongs
    to, ``largest`` (the largest box) or ``center`` (the box whose centre is nearest the photo's), with a
    ``people`` column (how many were found); and how many photos had more than one person."""
    if how not in PERSON_CHOICES:
        raise ValueError(f"person {how!r}: choose one of {', '.join(PERSON_CHOICES)}")
    photo = (table["path"] != table["path"].shift()).cumsum().to_numpy()
    box = boxes_array(table)
    if how == "largest":
        key = -(box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    else:
        size = table[["width", "height"]].to_numpy(np.float64)
        key = np.hypot((box[:, 0] + box[:, 2] - size[:, 0]) / size[:, 0], (box[:, 1] + box[:, 3] - size[:, 1]) / size[:, 1])
    key = np.where(np.isfinite(key), key, np.inf)
    order = np.lexsort((key, photo))  # by photo, then best first
    first = np.r_[True, photo[order][1:] != photo[order][:-1]]
    found = np.bincount(photo, weights=(table["status"] == "ok").to_numpy(np.float64))[1:].astype(int)
    chosen = table.iloc[np.sort(order[first])].reset_index(drop=True)
    chosen["people"] = found  # people found in the photo
    return chosen, int((found > 1).sum())


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
