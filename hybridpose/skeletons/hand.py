"""The ``hand`` skeleton (MediaPipe Hands: one hand, 21 keypoints) and ``two_hands`` (both hands, slots by side).

Handedness lives in the keypoints' fourth value: for a hand skeleton ``v`` is the probability that the
hand is a right hand (MediaPipe's label and score: ``score`` for Right, ``1 - score`` for Left), the same on
every point of one hand. A mirror turns it into ``1 - v`` (``Skeleton.handed``), so a mirrored left hand is a
right hand, and ``two_hands`` also swaps its ``left_*`` and ``right_*`` slots.

Features are named and mirror-aware: coordinates relative to the wrist in units of palm size (wrist to
middle-finger knuckle) with y pointing up, per-finger joint angles (MCP, PIP, DIP; the thumb's CMC, MCP, IP),
finger extension (straight-line over along-the-bones length), fingertip-wrist and fingertip-fingertip
distances, the palm normal (out of the palm, so the same for a left and a right palm facing the camera),
pointing directions, the thumb-index spread and the handedness.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd

from . import Skeleton, register
from .geometry import angle as _angle
from .geometry import mirror_pairs_by_name

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
JOINTS = {"thumb": ("cmc", "mcp", "ip", "tip")}
for _f in FINGERS[1:]:
    JOINTS[_f] = ("mcp", "pip", "dip", "tip")
KEYPOINT_NAMES = ("wrist", *(f"{f}_{j}" for f in FINGERS for j in JOINTS[f]))
N_KEYPOINTS = len(KEYPOINT_NAMES)
K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
EDGES = (
    *(("wrist" if j == 0 else f"{f}_{JOINTS[f][j - 1]}", f"{f}_{JOINTS[f][j]}") for f in FINGERS for j in range(4)),
    ("index_mcp", "middle_mcp"), ("middle_mcp", "ring_mcp"), ("ring_mcp", "pinky_mcp"),
)
TIPS = tuple(f"{f}_tip" for f in FINGERS)


def _chain(finger: str) -> list[int]:
    return [K["wrist"], *(K[f"{finger}_{j}"] for j in JOINTS[finger])]


def normalise(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 21, 3) coordinates relative to the wrist, y up, in units of palm size; and the palm size (N,)."""
    p = np.asarray(kp, dtype=np.float64)[..., :3].copy()
    p[..., 1] = -p[..., 1]
    p = p - p[:, K["wrist"]][:, None, :]
    palm = np.linalg.norm(p[:, K["middle_mcp"], :2], axis=-1)
    palm = np.where(palm > 1e-6, palm, 1.0)
    return p / palm[:, None, None], palm


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)


def hand_features(kp: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    """Named features of (N, 21, 4) pixel keypoints of one hand (NaN in, NaN out)."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, N_KEYPOINTS, 4)
    p, _ = normalise(kp)
    right = kp[:, :, 3].mean(axis=1)  # P(right hand)
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(KEYPOINT_NAMES[1:], start=1):
        cols[f"{name}_x"], cols[f"{name}_y"], cols[f"{name}_z"] = p[:, i, 0], p[:, i, 1], p[:, i, 2]
    for finger in FINGERS:
        chain = _chain(finger)
        for j, joint in enumerate(JOINTS[finger][:3]):
            cols[f"{finger}_{joint}_angle"] = _angle(p[:, chain[j]], p[:, chain[j + 1]], p[:, chain[j + 2]])
        along = sum(np.linalg.norm(p[:, chain[j + 1]] - p[:, chain[j]], axis=-1) for j in range(4))
        base = chain[1]  # extension from the finger's first joint: 1 straight, smaller bent
        straight = np.linalg.norm(p[:, chain[4]] - p[:, base], axis=-1)
        cols[f"{finger}_extension"] = straight / (along - np.linalg.norm(p[:, base], axis=-1) + 1e-9)
        cols[f"{finger}_tip_to_wrist"] = np.linalg.norm(p[:, chain[4]], axis=-1)
        d = _unit(p[:, chain[4], :2] - p[:, base, :2])
        cols[f"{finger}_direction_x"], cols[f"{finger}_direction_y"] = d[:, 0], d[:, 1]
    for a, b in itertools.combinations(TIPS, 2):
        cols[f"{a}_to_{b}"] = np.linalg.norm(p[:, K[a]] - p[:, K[b]], axis=-1)
    # Out of the palm: the cross product's sense depends on the hand's side, so a right hand's is negated.
    side = np.where(right >= 0.5, -1.0, 1.0)[:, None]
    normal = _unit(np.cross(p[:, K["index_mcp"]], p[:, K["pinky_mcp"]])) * side
    cols["palm_normal_x"], cols["palm_normal_y"], cols["palm_normal_z"] = normal[:, 0], normal[:, 1], normal[:, 2]
    up = _unit(p[:, K["middle_mcp"], :2])
    cols["hand_direction_x"], cols["hand_direction_y"] = up[:, 0], up[:, 1]
    cols["thumb_index_spread"] = _angle(p[:, K["thumb_tip"]] - p[:, K["thumb_mcp"]], np.zeros_like(p[:, 0]),
                                        p[:, K["index_tip"]] - p[:, K["index_mcp"]])
    cols["fingers_extended"] = sum((cols[f"{f}_extension"] > 0.9).astype(float) for f in FINGERS)
    cols["handedness"] = right
    out = {f"{prefix}{k}": v for k, v in cols.items()}
    missing = ~np.isfinite(kp).all(axis=(1, 2))
    for v in out.values():
        v[missing] = np.nan
    return out


def features(kp: np.ndarray) -> pd.DataFrame:
    """Named features of (N, 21, 4) pixel keypoints; NaN rows where no hand."""
    return pd.DataFrame(hand_features(kp))


def hand_box(kp: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """Box of the hand's points (all of them: a hand has no visibility), at least a palm wide, inside the image."""
    pts = kp[np.isfinite(kp[:, :2]).all(axis=1), :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    # a fist seen edge-on is a thin box; the crop is square anyway, this keeps the box itself sensible
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    return (float(np.clip(cx - half, 0, width)), float(np.clip(cy - half, 0, height)),
            float(np.clip(cx + half, 0, width)), float(np.clip(cy + half, 0, height)))


def palm_size(kp: np.ndarray) -> np.ndarray:
    """(N,) wrist to middle-finger knuckle in pixels: a hand's size, the unit its motion is measured in."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, N_KEYPOINTS, 4)
    return np.linalg.norm(kp[:, K["middle_mcp"], :2] - kp[:, K["wrist"], :2], axis=-1)


# Paths with their own clip statistics: the hand as a whole (wrist, palm centre) and the two fingertips that draw.
TRACK = ("wrist", "middle_mcp", "index_tip", "thumb_tip")

HAND = register(Skeleton(
    name="hand", keypoints=KEYPOINT_NAMES, edges=EDGES, mirror_pairs=(), features=features,
    estimator="mediapipe_hands", box=hand_box, scale=(("wrist",), ("middle_mcp",)), mask_width=0.3, handed=True,
    track=TRACK, size=palm_size,
    description="MediaPipe Hands: 21 keypoints of the larger hand, handedness in v",
))

# --------------------------------------------------------------------------- two hands

SIDES = ("left", "right")
TWO_NAMES = tuple(f"{s}_{n}" for s in SIDES for n in KEYPOINT_NAMES)


def two_features(kp: np.ndarray) -> pd.DataFrame:
    """Both hands' features (``left_*``, ``right_*``; NaN for a hand not found) and how they relate."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, 2 * N_KEYPOINTS, 4)
    left, right = kp[:, :N_KEYPOINTS], kp[:, N_KEYPOINTS:]
    cols = {**hand_features(left, "left_"), **hand_features(right, "right_")}
    cols.pop("left_handedness"), cols.pop("right_handedness")  # the slot says it
    _, palm_l = normalise(left)
    _, palm_r = normalise(right)
    palm = np.nanmean(np.stack([palm_l, palm_r]), axis=0) if len(kp) else np.zeros(0)
    delta = right[:, K["wrist"], :2] - left[:, K["wrist"], :2]
    cols["wrist_distance"] = np.linalg.norm(delta, axis=-1) / palm
    cols["wrists_dx"], cols["wrists_dy"] = delta[:, 0] / palm, -delta[:, 1] / palm
    cols["hands_found"] = (np.isfinite(left).all(axis=(1, 2)).astype(float)
                           + np.isfinite(right).all(axis=(1, 2)).astype(float))
    return pd.DataFrame(cols)


def two_palm_size(kp: np.ndarray) -> np.ndarray:
    """(N,) the found hands' mean palm size in pixels."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, 2 * N_KEYPOINTS, 4)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with neither hand
        return np.nanmean(np.stack([palm_size(kp[:, :N_KEYPOINTS]), palm_size(kp[:, N_KEYPOINTS:])]), axis=0)


def two_box(kp: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    return hand_box(kp, width, height)


TWO_HANDS = register(Skeleton(
    name="two_hands", keypoints=TWO_NAMES, edges=tuple((f"{s}_{a}", f"{s}_{b}") for s in SIDES for a, b in EDGES),
    mirror_pairs=mirror_pairs_by_name(TWO_NAMES), features=two_features, estimator="mediapipe_hands2",
    box=two_box, scale=(("left_wrist", "right_wrist"), ("left_middle_mcp", "right_middle_mcp")), mask_width=0.3,
    handed=True, parts=len(SIDES), track=("left_wrist", "left_index_tip", "right_wrist", "right_index_tip"),
    size=two_palm_size, description="MediaPipe Hands: both hands, 21 keypoints each (left_*, right_*; NaN where not found)",
))
