"""One photo's pose: ``PoseResult`` (status, reason, size, box, keypoints in pixels) and the functions that
find it with a pose model, turning bad input into a status, never an exception."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.images import ImageLoadError, load_image, pose_view

if TYPE_CHECKING:
    from PIL import Image

# Bump when anything that changes the stored result changes (model, resizing, box rule).
POSE_MAX_SIDE = 1024  # the pose model works at 256 px; larger input only costs decode time


@dataclass
class PoseResult:
    status: str
    reason: str = ""
    width: int = 0
    height: int = 0
    box: tuple[float, float, float, float] | None = None
    keypoints: list[list[float]] | None = None  # one [x, y, z, visibility] per keypoint, pixels of the original

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PoseResult":
        """Parse a stored result; ValueError unless ``text`` is a complete, well-formed one."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(d, dict) or set(d) != _RESULT_FIELDS:
            raise ValueError("missing or unknown fields")
        box, kp = d["box"], d["keypoints"]
        if not (isinstance(d["status"], str) and d["status"] and isinstance(d["reason"], str)
                and type(d["width"]) is int and type(d["height"]) is int):
            raise ValueError("bad status, reason or size")
        if box is not None and not _numbers(box, 4):
            raise ValueError("bad box")
        if kp is not None and not (isinstance(kp, list) and kp and all(_numbers(row, 4) for row in kp)):
            raise ValueError("bad keypoints")
        if d["status"] == "ok" and (box is None or kp is None):
            raise ValueError("a person without box or keypoints")
        d["box"] = tuple(box) if box is not None else None
        return cls(**d)


_RESULT_FIELDS = frozenset({"status", "reason", "width", "height", "box", "keypoints"})


def _numbers(values: object, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(type(v) in (int, float) for v in values)


def analyse(path: str | Path, estimator) -> PoseResult:
    """Load one image and find its person; bad input becomes a status, never an exception."""
    try:
        image = load_image(path, max_side=POSE_MAX_SIDE)
    except ImageLoadError as e:
        return PoseResult(status=e.status, reason=e.reason)
    return analyse_array(image.rgb, image.width, image.height, estimator)


def analyse_loaded(image: "Image.Image", path: str | Path, estimator) -> PoseResult:
    """Same as ``analyse(path)`` for its full-size RGB PIL image already in memory: the same pose input,
    so the same keypoints."""
    return analyse_array(pose_view(image, path, POSE_MAX_SIDE), image.width, image.height, estimator)


def analyse_array(rgb: np.ndarray, width: int, height: int, estimator) -> PoseResult:
    """Keypoints in pixels of the original ``width`` x ``height`` photo, from a (maybe smaller) ``rgb``."""
    try:
        norm = estimator.landmarks(rgb)
    except Exception as e:  # the pose graph rejecting an odd frame must not end the run
        return PoseResult("unreadable", f"pose model failed: {e}", width, height)
    if norm is None:
        return PoseResult(*getattr(estimator, "missing", ("no_person", "MediaPipe found no person")), width, height)
    kp = norm.copy()
    kp[:, 0] *= width
    kp[:, 1] *= height
    kp[:, 2] *= width  # MediaPipe's z uses roughly the scale of x
    kp = kp.round(3)  # the box from the stored values: keypoints read back from poses.csv give the same crop
    return PoseResult("ok", "", width, height, estimator.skeleton.keypoint_box(kp, width, height), kp.tolist())
