"""Multi-object trackers, one module each, found by name (``--tracker``): they give every person found in a
video's frames a track id that stays the same from frame to frame.

A tracker class has ``name``, ``available()`` (its library is installed; ``missing`` says how to add it) and,
made with ``Tracker(fps)`` (the rate of the frames it is given), ``update(boxes, keypoints, scores) -> ids``:
one frame's people (``boxes`` (k, 4) x0 y0 x1 y1 pixels, ``keypoints`` (k, n, 4) pixels, ``scores`` (k,)) and
the id of each (None where the tracker does not keep that person). The trackers are libraries' (ByteTrack as
``supervision`` packaged it, ``norfair``); this package only adapts their inputs and outputs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...defaults import DEFAULTS
from ...errors import ConfigError
from ...registry import Registry

TRACKERS: Registry[type] = Registry("tracker", "hybridpose.pose.trackers")
register = TRACKERS.register
DEFAULT_TRACKER = DEFAULTS.tracker  # chosen by benchmarks/bench_tracks.py (docs/CLIPS.md, "Several people")


def tracker_class(name: str | None) -> type:
    """The tracker ``name`` (default ``DEFAULT_TRACKER``); unknown, or its library missing: one error line."""
    cls = TRACKERS.get(name or DEFAULT_TRACKER)
    if not cls.available():
        raise ConfigError(f"--tracker {cls.name}: {cls.missing}")
    return cls


def make_tracker(name: str | None, fps: float):
    """A new tracker ``name`` for frames ``fps`` a second."""
    return tracker_class(name)(fps)


def as_arrays(boxes: Sequence, keypoints: Sequence, scores: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's people as float arrays (k, 4), (k, n, 4), (k,), also when k is 0."""
    b = np.asarray(boxes, float).reshape(-1, 4)
    k = np.asarray(keypoints, float)
    k = k.reshape(len(b), -1, 4) if len(b) else np.zeros((0, 0, 4))
    s = np.asarray([np.nan if v is None else v for v in scores], float).reshape(-1)
    return b, k, np.where(np.isfinite(s), s, 1.0)
