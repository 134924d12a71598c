"""Keypoint features with readable names, shared by the keypoint model and the rules.

Coordinates are normalised: origin at the hip centre, unit = torso length (shoulder centre to
hip centre), y pointing up. Heights are measured up from the lowest foot point. Sided
statistics (``left_knee_angle``) also come as ``min_``/``max_`` over both sides, which do not
change when the photo is mirrored; rules prefer those.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .pose import KEYPOINT_NAMES, N_KEYPOINTS

K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
MIRROR_INDEX = np.array([
    K[n.replace("left", "§").replace("right", "left").replace("§", "right")] for n in KEYPOINT_NAMES
])

ANGLES = {  # name: (a, vertex, b)
    "elbow_angle": ("shoulder", "elbow", "wrist"),
    "shoulder_angle": ("elbow", "shoulder", "hip"),
    "hip_angle": ("shoulder", "hip", "knee"),
    "knee_angle": ("hip", "knee", "ankle"),
    "ankle_angle": ("knee", "ankle", "foot_index"),
}
SEGMENTS = {  # tilt of the segment from straight down, degrees (see _tilt)
    "thigh_tilt": ("hip", "knee"),
    "shin_tilt": ("knee", "ankle"),
    "upper_arm_tilt": ("shoulder", "elbow"),
    "forearm_tilt": ("elbow", "wrist"),
}
HEIGHT_JOINTS = ["wrist", "elbow", "shoulder", "hip", "knee", "ankle"]
DISTANCES = {
    "wrist_distance": ("left_wrist", "right_wrist"),
    "ankle_distance": ("left_ankle", "right_ankle"),
    "knee_distance": ("left_knee", "right_knee"),
    "elbow_distance": ("left_elbow", "right_elbow"),
    "left_wrist_to_left_ankle": ("left_wrist", "left_ankle"),
    "right_wrist_to_right_ankle": ("right_wrist", "right_ankle"),
    "left_wrist_to_right_ankle": ("left_wrist", "right_ankle"),
    "right_wrist_to_left_ankle": ("right_wrist", "left_ankle"),
    "left_ankle_to_right_knee": ("left_ankle", "right_knee"),
    "right_ankle_to_left_knee": ("right_ankle", "left_knee"),
    "nose_to_left_ankle": ("nose", "left_ankle"),
    "nose_to_right_ankle": ("nose", "right_ankle"),
}
FOOT_POINTS = [K[n] for n in ("left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index")]


def mirror_keypoints(kp: np.ndarray, width: float) -> np.ndarray:
    """Keypoints of the horizontally flipped photo: x -> width - x, left and right swapped."""
    out = np.array(kp, dtype=np.float64, copy=True)[..., MIRROR_INDEX, :]
    out[..., 0] = width - out[..., 0]
    return out


def mirror_feature_name(name: str) -> str:
    return name.replace("left", "§").replace("right", "left").replace("§", "right")


def _mid(p: np.ndarray, a: str, b: str) -> np.ndarray:
    return (p[:, K[a]] + p[:, K[b]]) / 2


def _angle(a: np.ndarray, v: np.ndarray, b: np.ndarray) -> np.ndarray:
    u, w = a - v, b - v
    cos = (u * w).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(w, axis=-1) + 1e-9)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _tilt(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Angle of the segment top->bottom from 'straight down' (0 = hanging, 90 = level, 180 = up)."""
    down = np.zeros_like(top)
    down[:, 1] = -1.0  # y points up after normalisation
    return _angle(top + down, top, bottom)


def normalise(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 33, 3) normalised x, y (up), z and the torso scale (N,) used."""
    xy = kp[..., :3].astype(np.float64).copy()
    xy[..., 1] = -xy[..., 1]
    hip = _mid(xy, "left_hip", "right_hip")
    shoulder = _mid(xy, "left_shoulder", "right_shoulder")
    scale = np.linalg.norm((shoulder - hip)[:, :2], axis=-1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a person are all NaN
        span = np.nanmax(xy[..., 1], axis=1) - np.nanmin(xy[..., 1], axis=1) if len(xy) else np.zeros(0)
        scale = np.where(scale > 1e-6, scale, np.maximum(span / 3, 1e-6))
    out = (xy - hip[:, None, :]) / scale[:, None, None]
    return out, scale


def features(kp: np.ndarray) -> pd.DataFrame:
    """Named features of (N, 33, 4) pixel keypoints; rows of NaN keypoints give NaN features."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, N_KEYPOINTS, 4)
    p, _ = normalise(kp)
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(KEYPOINT_NAMES):
        cols[f"{name}_x"], cols[f"{name}_y"], cols[f"{name}_z"] = p[:, i, 0], p[:, i, 1], p[:, i, 2]
        cols[f"{name}_visibility"] = kp[:, i, 3]
    xy = p[..., :2]
    sided: dict[str, dict[str, np.ndarray]] = {}
    for side in ("left", "right"):
        j = lambda n: xy[:, K[f"{side}_{n}"]]  # noqa: E731
        for name, (a, v, b) in ANGLES.items():
            sided.setdefault(name, {})[side] = _angle(j(a), j(v), j(b))
        for name, (a, b) in SEGMENTS.items():
            sided.setdefault(name, {})[side] = _tilt(j(a), j(b))
    floor = np.min(xy[:, FOOT_POINTS, 1], axis=1)
    hip_height = xy[:, [K["left_hip"], K["right_hip"]], 1].mean(1) - floor
    for side in ("left", "right"):
        for joint in HEIGHT_JOINTS:
            h = xy[:, K[f"{side}_{joint}"], 1] - floor
            sided.setdefault(f"{joint}_height", {})[side] = h
            sided.setdefault(f"{joint}_height_ratio", {})[side] = h / np.where(np.abs(hip_height) > 1e-6, hip_height, np.nan)
    for name, by_side in sided.items():
        cols[f"left_{name}"], cols[f"right_{name}"] = by_side["left"], by_side["right"]
        cols[f"min_{name}"] = np.fmin(by_side["left"], by_side["right"])
        cols[f"max_{name}"] = np.fmax(by_side["left"], by_side["right"])
    cols.update(_whole_body(xy, floor, hip_height))
    for name, (a, b) in DISTANCES.items():
        cols[name] = np.linalg.norm(xy[:, K[a]] - xy[:, K[b]], axis=-1)
    frame = pd.DataFrame(cols)
    frame.loc[~np.isfinite(kp).all(axis=(1, 2)), :] = np.nan
    return frame


def _whole_body(xy: np.ndarray, floor: np.ndarray, hip_height: np.ndarray) -> dict[str, np.ndarray]:
    hip = _mid(xy, "left_hip", "right_hip")
    shoulder = _mid(xy, "left_shoulder", "right_shoulder")
    knee = _mid(xy, "left_knee", "right_knee")
    ankle = _mid(xy, "left_ankle", "right_ankle")
    width = xy[..., 0].max(1) - xy[..., 0].min(1)
    height = xy[..., 1].max(1) - xy[..., 1].min(1)
    return {
        "torso_tilt": 180.0 - _tilt(hip, shoulder),  # 0 upright, 90 level, 180 upside down
        "legs_spread_angle": _angle(xy[:, K["left_knee"]], hip, xy[:, K["right_knee"]]),
        "feet_spread_angle": _angle(xy[:, K["left_ankle"]], hip, xy[:, K["right_ankle"]]),
        "arms_spread_angle": _angle(xy[:, K["left_wrist"]], shoulder, xy[:, K["right_wrist"]]),
        "hip_knee_ankle_angle": _angle(hip, knee, ankle),
        "body_width": width,
        "body_height": height,
        "body_aspect": width / np.maximum(height, 1e-6),
        "hip_height": hip_height,
        "head_height": xy[:, K["nose"], 1] - floor,
        "head_below_hips": hip[:, 1] - xy[:, K["nose"], 1],  # > 0 when the head hangs below the hips
        "spread_x": xy[..., 0].std(1),
        "spread_y": xy[..., 1].std(1),
    }


def feature_names() -> list[str]:
    return list(features(np.zeros((1, N_KEYPOINTS, 4)) + np.arange(N_KEYPOINTS * 4).reshape(1, N_KEYPOINTS, 4)).columns)
