"""Temporal statistics of a clip: every keypoint feature of the skeleton, summarised over the clip's frames.

For each named feature ``f`` of the skeleton (``min_knee_angle``, ``nose_x``, ...):

    min_<f>  max_<f>  range_<f> (max - min)  mean_<f>  std_<f>  speed_<f> (mean |change| per second)

and ``found``: the share of the clip's frames with a skeleton. Frames without one are left out of the
statistics; a clip with no skeleton in any frame gets NaN everywhere (the keypoint branch abstains, a rule
does not fire). These columns are the clip's features: the clip keypoint branch reads them and rules
(``range_right_index_x >= 0.31 -> wagging_finger``) name them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..skeletons import Skeleton, get_skeleton

STATISTICS = ("min", "max", "range", "mean", "std", "speed")
FOUND = "found"


def statistic_names(skeleton: Skeleton | str | None = None) -> list[str]:
    sk = get_skeleton(skeleton)
    return [f"{s}_{f}" for s in STATISTICS for f in sk.feature_names()] + [FOUND]


def clip_statistics(kp: np.ndarray, times: Sequence[float], skeleton: Skeleton | str | None = None) -> dict[str, float]:
    """One clip: (T, n, 4) pixel keypoints of its frames (NaN rows: no skeleton) and their times in seconds."""
    sk = get_skeleton(skeleton)
    names = sk.feature_names()
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, sk.n, 4)
    ok = np.isfinite(kp).all(axis=(1, 2))
    out = {n: np.nan for n in statistic_names(sk)}
    out[FOUND] = float(ok.mean()) if len(ok) else 0.0
    if not ok.any():
        return out
    f = np.asarray(sk.features(kp[ok])[names], dtype=np.float64)   # (T_ok, F)
    t = np.asarray(times, dtype=np.float64)[ok]
    with np.errstate(all="ignore"), _quiet():
        lo, hi = np.nanmin(f, 0), np.nanmax(f, 0)
        stats = {"min": lo, "max": hi, "range": hi - lo, "mean": np.nanmean(f, 0), "std": np.nanstd(f, 0)}
        if len(f) >= 2:
            dt = np.diff(t)[:, None]
            dt[dt <= 0] = np.nan
            stats["speed"] = np.nanmean(np.abs(np.diff(f, axis=0)) / dt, 0)
        else:
            stats["speed"] = np.full(len(names), np.nan)
    for s in STATISTICS:
        for name, v in zip(names, stats[s]):
            out[f"{s}_{name}"] = float(v)
    return out


def clip_table(kp: np.ndarray, times: Sequence[float], clip_ids: Sequence, skeleton: Skeleton | str | None = None,
               order: Sequence | None = None) -> pd.DataFrame:
    """One row of statistics per clip (in ``order``, default first appearance) from per-frame keypoints."""
    sk = get_skeleton(skeleton)
    ids = pd.Series(list(clip_ids))
    order = list(order) if order is not None else list(dict.fromkeys(ids))
    groups = {c: np.flatnonzero(ids.to_numpy() == c) for c in order}
    times = np.asarray(times, dtype=np.float64)
    rows = [clip_statistics(kp[idx], times[idx], sk) if len(idx) else clip_statistics(sk.empty(0), [], sk)
            for idx in groups.values()]
    return pd.DataFrame(rows, columns=statistic_names(sk))


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
