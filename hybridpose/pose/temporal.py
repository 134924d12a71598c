"""Temporal statistics of a clip: the skeleton's features and its path through the frame, summarised over time.

Per-frame quantities ``f`` (each a column of the clip's frames):

- every named feature of the skeleton (``min_knee_angle``, ``index_tip_x``, ...: shape, relative to the wrist or hips);
- ``path_<k>_x``, ``path_<k>_y``: where tracked keypoint ``k`` (``Skeleton.tracked``: a hand's wrist, palm centre,
  index and thumb tips; a body's nose, wrists, hips and ankles) is, relative to its median place in the clip, in units
  of the skeleton's median size in the clip (palm, torso), y up: motion that holds across distance to the camera;
- ``frame_<k>_x``, ``frame_<k>_y``: the same point in [0, 1] of the frame's width and height (y up; NaN when the
  frame size is not given);
- ``topmost_x``, ``bottommost_x``, ``leftmost_y``, ``rightmost_y``: the x of the top-most keypoint of each frame
  (the y of the left-most, ...), in path units: ``range_topmost_x`` is how far the highest point (a raised
  fingertip) wags sideways.

For each ``f``, statistics that ignore the frames' order:

    min_<f>  max_<f>  range_<f> (max - min)  mean_<f>  std_<f>  speed_<f> (mean |change| per second)

and statistics that follow it (a clip played backwards swaps start and end and negates net):

    start_<f>, end_<f> (mean of the first / last few frames)   net_<f> (end - start)

Per tracked keypoint ``k``, of its path (lightly smoothed, y up): ``heading_cos_<k>``, ``heading_sin_<k>`` (the
direction from start to end; NaN when it hardly moved), ``straightness_<k>`` (displacement / path length),
``turning_<k>`` (signed total turning in degrees: > 0 counter-clockwise, about 360 a circle), ``reversals_x_<k>``,
``reversals_y_<k>`` (how often it turned back along that axis by more than ``REVERSAL_SIZE`` sizes: wagging, waving).

And ``found``: the share of the clip's frames with a skeleton. Only frames with one enter the statistics; a clip
with no skeleton in any frame gets NaN everywhere (the keypoint branch abstains, a rule does not fire). These
columns are the clip's features: the clip keypoint branch reads them and rules name them
(``range_topmost_x >= 0.9 -> wagging_finger``, ``net_path_index_tip_x >= 1.5 -> right``).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..skeletons import Skeleton, get_skeleton

STATISTICS = ("min", "max", "range", "mean", "std", "speed")
ORDER_STATISTICS = ("start", "end", "net")
PATH_STATISTICS = ("heading_cos", "heading_sin", "straightness", "turning", "reversals_x", "reversals_y")
EXTREMES = ("topmost_x", "bottommost_x", "leftmost_y", "rightmost_y")
FOUND = "found"
REVERSAL_SIZE = 0.25  # a turn back counts when the point moved back this many skeleton sizes
MIN_STEP = 0.1        # path steps shorter than this (sizes) are jitter for the turning angle
MIN_DISPLACEMENT = 0.05  # below this (sizes) a path has no direction


def motion_names(skeleton: Skeleton | str | None = None) -> list[str]:
    """The per-frame motion quantities of a skeleton (path, frame position, extreme points)."""
    sk = get_skeleton(skeleton)
    return ([f"path_{k}_{a}" for k in sk.tracked() for a in "xy"] + [f"frame_{k}_{a}" for k in sk.tracked() for a in "xy"]
            + list(EXTREMES))


def statistic_names(skeleton: Skeleton | str | None = None) -> list[str]:
    sk = get_skeleton(skeleton)
    per_frame = sk.feature_names() + motion_names(sk)
    return ([f"{s}_{f}" for s in (*STATISTICS, *ORDER_STATISTICS) for f in per_frame]
            + [f"{s}_{k}" for s in PATH_STATISTICS for k in sk.tracked()] + [FOUND])


def clip_statistics(kp: np.ndarray, times: Sequence[float], skeleton: Skeleton | str | None = None,
                    size: tuple[float, float] | np.ndarray | None = None) -> dict[str, float]:
    """One clip: (T, n, 4) pixel keypoints of its frames (NaN rows: no skeleton), their times in seconds and the
    frames' (width, height) in pixels (one pair, or one per frame; None: the ``frame_*`` statistics are NaN)."""
    sk = get_skeleton(skeleton)
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, sk.n, 4)
    ok = sk.found(kp)
    out = {n: np.nan for n in statistic_names(sk)}
    out[FOUND] = float(ok.mean()) if len(ok) else 0.0
    if not ok.any():
        return out
    if size is not None:
        size = np.broadcast_to(np.asarray(size, dtype=np.float64).reshape(-1, 2), (len(kp), 2))[ok]
    kp, t = kp[ok], np.asarray(times, dtype=np.float64)[ok]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a hand of two_hands never seen)
        unit = float(np.nanmedian(sk.pixel_size(kp)))
        per_frame = pd.concat([sk.features(kp).reset_index(drop=True), _motion(sk, kp, unit, size)], axis=1)
        f = per_frame.to_numpy(dtype=np.float64)
        for name, values in zip(STATISTICS + ORDER_STATISTICS, _summaries(f, t)):
            out.update({f"{name}_{c}": float(v) for c, v in zip(per_frame.columns, values)})
        for k in sk.tracked():
            path = per_frame[[f"path_{k}_x", f"path_{k}_y"]].to_numpy(dtype=np.float64)
            out.update({f"{name}_{k}": v for name, v in zip(PATH_STATISTICS, path_statistics(path))})
    return out


def _motion(sk: Skeleton, kp: np.ndarray, unit: float, size: np.ndarray | None) -> pd.DataFrame:
    """The per-frame motion quantities of found frames, in units of the clip's median skeleton size."""
    unit = unit if np.isfinite(unit) and unit > 0 else np.nan
    cols: dict[str, np.ndarray] = {}
    for k in sk.tracked():
        xy = kp[:, sk.index[k], :2]
        cols[f"path_{k}_x"] = (xy[:, 0] - np.nanmedian(xy[:, 0])) / unit
        cols[f"path_{k}_y"] = -(xy[:, 1] - np.nanmedian(xy[:, 1])) / unit
    frame = sk.frame_positions(kp, size)
    cols.update({c: frame[c].to_numpy() for c in frame.columns})
    x, y = kp[..., 0], kp[..., 1]
    cx, cy = np.nanmedian(x), np.nanmedian(y)
    rows = np.arange(len(kp))
    safe = lambda v, fill: np.where(np.isfinite(v), v, fill)  # noqa: E731 (a missing hand of two_hands)
    cols["topmost_x"] = (x[rows, np.argmin(safe(y, np.inf), 1)] - cx) / unit
    cols["bottommost_x"] = (x[rows, np.argmax(safe(y, -np.inf), 1)] - cx) / unit
    cols["leftmost_y"] = -(y[rows, np.argmin(safe(x, np.inf), 1)] - cy) / unit
    cols["rightmost_y"] = -(y[rows, np.argmax(safe(x, -np.inf), 1)] - cy) / unit
    return pd.DataFrame(cols)


def _summaries(f: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """min, max, range, mean, std, speed, start, end, net of each column of (T, F) found frames."""
    lo, hi = np.nanmin(f, 0), np.nanmax(f, 0)
    if len(f) >= 2:
        dt = np.diff(t)[:, None]
        dt[dt <= 0] = np.nan
        speed = np.nanmean(np.abs(np.diff(f, axis=0)) / dt, 0)
    else:
        speed = np.full(f.shape[1], np.nan)
    k = end_frames(len(f))
    start, end = np.nanmean(f[:k], 0), np.nanmean(f[-k:], 0)
    return [lo, hi, hi - lo, np.nanmean(f, 0), np.nanstd(f, 0), speed, start, end, end - start]


def end_frames(n: int) -> int:
    """How many frames at each end make a clip's start and end value: a few, so one jittery frame does not decide."""
    return max(1, min(3, n // 5))


def path_statistics(path: np.ndarray) -> list[float]:
    """heading cos, heading sin, straightness, turning (degrees, > 0 counter-clockwise), reversals in x and in y of
    a (T, 2) path in skeleton sizes, y up (NaN rows are left out)."""
    p = path[np.isfinite(path).all(axis=1)]
    if len(p) < 2:
        return [np.nan] * 6
    k = end_frames(len(p))
    disp = p[-k:].mean(0) - p[:k].mean(0)
    dist = float(np.hypot(*disp))
    heading = (disp / dist).tolist() if dist >= MIN_DISPLACEMENT else [np.nan, np.nan]
    smooth = _smooth(p)
    length = float(np.hypot(*np.diff(smooth, axis=0).T).sum())
    straight = min(1.0, dist / length) if length > 0 else np.nan
    return [*heading, straight, turning_angle(smooth), float(reversals(p[:, 0])), float(reversals(p[:, 1]))]


def _smooth(p: np.ndarray) -> np.ndarray:
    """A moving average over 3 frames (ends kept): one jittery frame bends the path less."""
    if len(p) < 5:
        return p
    out = p.copy()
    out[1:-1] = (p[:-2] + p[1:-1] + p[2:]) / 3
    return out


def turning_angle(p: np.ndarray, min_step: float = MIN_STEP) -> float:
    """Signed total turning (degrees) of a (T, 2) path, y up: > 0 counter-clockwise; steps under ``min_step`` merge."""
    kept = [p[0]]
    for q in p[1:]:
        if np.hypot(*(q - kept[-1])) >= min_step:
            kept.append(q)
    if len(kept) < 3:
        return 0.0
    seg = np.diff(np.asarray(kept), axis=0)
    turn = np.diff(np.arctan2(seg[:, 1], seg[:, 0]))
    return float(np.degrees(((turn + np.pi) % (2 * np.pi) - np.pi).sum()))


def reversals(v: np.ndarray, size: float = REVERSAL_SIZE) -> int:
    """How often a 1-D track turns back by at least ``size`` after moving (hysteresis: jitter is no reversal)."""
    v = v[np.isfinite(v)]
    if len(v) < 3:
        return 0
    direction, count, lo, hi, ext = 0, 0, v[0], v[0], v[0]
    for x in v[1:]:
        if direction == 0:
            lo, hi = min(lo, x), max(hi, x)
            if x - lo >= size:
                direction, ext = 1, x
            elif hi - x >= size:
                direction, ext = -1, x
        elif (x - ext) * direction > 0:
            ext = x
        elif (ext - x) * direction >= size:
            count, direction, ext = count + 1, -direction, x
    return count


def clip_table(kp: np.ndarray, times: Sequence[float], clip_ids: Sequence, skeleton: Skeleton | str | None = None,
               order: Sequence | None = None, sizes: np.ndarray | None = None) -> pd.DataFrame:
    """One row of statistics per clip (in ``order``, default first appearance) from per-frame keypoints (and the
    frames' (width, height), one row per frame, for the ``frame_*`` statistics)."""
    sk = get_skeleton(skeleton)
    ids = pd.Series(list(clip_ids))
    order = list(order) if order is not None else list(dict.fromkeys(ids))
    groups = {c: np.flatnonzero(ids.to_numpy() == c) for c in order}
    times = np.asarray(times, dtype=np.float64)
    sizes = None if sizes is None else np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    rows = [clip_statistics(kp[idx], times[idx], sk, None if sizes is None else sizes[idx]) if len(idx)
            else clip_statistics(sk.empty(0), [], sk) for idx in groups.values()]
    return pd.DataFrame(rows, columns=statistic_names(sk))
