"""The ``body`` skeleton: MediaPipe Pose's 33 keypoints, its bones, mirror pairs and named features.

Features have readable names and are shared by the keypoint branch and the rules.

Coordinates are normalised: origin at the hip centre, unit = torso length (shoulder centre to
hip centre), y pointing up. Heights are measured up from the lowest foot point. Sided
statistics (``left_knee_angle``) also come as ``min_``/``max_`` over both sides, which do not
change when the photo is mirrored; rules prefer those.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from . import Skeleton, register
from .geometry import (
    MIN_VISIBILITY,
    mirror_feature_name,
    mirror_pairs_by_name,
    visible_box,
)
from .geometry import (
    angle as _angle,
)
from .geometry import (
    tilt as _tilt,
)

KEYPOINT_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)
N_KEYPOINTS = len(KEYPOINT_NAMES)
K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
# Limbs and torso: the bones drawn by `explain` and the body region that stage 3 pulls the CAM onto.
EDGES = (
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_hip"), ("right_shoulder", "left_hip"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("left_ankle", "left_foot_index"),
    ("right_ankle", "right_foot_index"), ("nose", "left_shoulder"), ("nose", "right_shoulder"),
)

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
_BETWEEN_SIDES = ("wrist", "ankle", "knee", "elbow")  # left_<joint> to right_<joint>
_PAIRS = (("left_wrist", "left_ankle"), ("right_wrist", "right_ankle"), ("left_wrist", "right_ankle"),
          ("right_wrist", "left_ankle"), ("left_ankle", "right_knee"), ("right_ankle", "left_knee"),
          ("nose", "left_ankle"), ("nose", "right_ankle"))
DISTANCES = {**{f"{j}_distance": (f"left_{j}", f"right_{j}") for j in _BETWEEN_SIDES},
             **{f"{a}_to_{b}": (a, b) for a, b in _PAIRS}}
FOOT_POINTS = [K[n] for n in ("left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index")]


def _mid(p: np.ndarray, a: str, b: str) -> np.ndarray:
    return (p[:, K[a]] + p[:, K[b]]) / 2


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


def person_box(kp: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """The visible keypoints' box, reaching up by a third of the eye-to-shoulder distance (the head)."""
    visible = kp[:, 3] >= MIN_VISIBILITY
    shoulders = [K["left_shoulder"], K["right_shoulder"]]
    eyes = [K[n] for n in KEYPOINT_NAMES if "eye" in n]
    head = abs(kp[shoulders, 1].mean() - kp[eyes, 1].mean()) / 3 if visible[[K["nose"], *shoulders]].all() else 0.0
    return visible_box(kp, width, height, extend_up=head)


def torso_size(kp: np.ndarray) -> np.ndarray:
    """(N,) shoulder centre to hip centre in pixels: a body's size, the unit its motion is measured in."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, N_KEYPOINTS, 4)
    return normalise(kp)[1] if len(kp) else np.zeros(0)


# Paths with their own clip statistics: head, hands, hips and feet (what moves in an exercise or a wave).
TRACK = ("nose", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_ankle", "right_ankle")

BODY = register(Skeleton(
    name="body", keypoints=KEYPOINT_NAMES, edges=EDGES, mirror_pairs=mirror_pairs_by_name(KEYPOINT_NAMES),
    features=features, estimator="mediapipe_pose", box=person_box, track=TRACK, size=torso_size,
    scale=(("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")), mask_width=0.22,
    description="MediaPipe Pose: 33 body keypoints",
))
MIRROR_INDEX = BODY.mirror_index


def feature_names() -> list[str]:
    return BODY.feature_names()


def mirror_keypoints(kp: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    return BODY.mirror_keypoints(kp, width)


__all__ = ["BODY", "KEYPOINT_NAMES", "K", "EDGES", "MIRROR_INDEX", "features", "feature_names", "normalise",
           "mirror_keypoints", "mirror_feature_name"]
