"""Geometry shared by the skeletons' feature definitions."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def angle(a: np.ndarray, v: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle a-v-b in degrees (rows of points)."""
    u, w = a - v, b - v
    cos = (u * w).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(w, axis=-1) + 1e-9)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def tilt(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Angle of the segment top->bottom from 'straight down' (0 = hanging, 90 = level, 180 = up); y points up."""
    down = np.zeros_like(top)
    down[:, 1] = -1.0
    return angle(top + down, top, bottom)


def mirror_feature_name(name: str) -> str:
    """The name of the same statistic on the mirrored photo: left and right swapped."""
    return name.replace("left", "§").replace("right", "left").replace("§", "right")


def mirror_pairs_by_name(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Pairs (left_x, right_x) among ``names``."""
    known = set(names)
    return tuple((n, mirror_feature_name(n)) for n in names
                 if n != mirror_feature_name(n) and mirror_feature_name(n) in known and "left" in n)


MIN_VISIBILITY = 0.3


def visible_box(kp: np.ndarray, width: int, height: int, extend_up: float = 0.0) -> tuple[float, float, float, float]:
    """Tight box around the visible keypoints (all of them if few are visible), inside the image.

    ``extend_up`` pixels are added above (a head reaches above the eyes)."""
    visible = kp[:, 3] >= MIN_VISIBILITY
    pts = kp[visible, :2] if visible.sum() >= 4 else kp[:, :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (
        float(np.clip(x0, 0, width)), float(np.clip(y0 - extend_up, 0, height)),
        float(np.clip(x1, 0, width)), float(np.clip(y1, 0, height)),
    )
