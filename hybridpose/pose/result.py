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
    # a multi-person model: every person found, left to right, as {"box", "keypoints", "score"}; box and
    # keypoints above are the largest one's. None for a single-person model (its stored form is unchanged).
    people: list[dict] | None = None

    def to_json(self) -> str:
        d = asdict(self)
        if d["people"] is None:
            del d["people"]
        return json.dumps(d)

    def persons(self, limit: int | None = None) -> list["Person"]:
        """The people of the photo, left to right: at most ``limit`` (the largest kept), at least one row
        (the photo's one person, or none found: a ``Person`` without keypoints)."""
        if not self.people:
            return [Person(0, self.box, self.keypoints, None)]
        people = self.people
        if limit is not None and len(people) > limit:
            keep = sorted(range(len(people)), key=lambda i: -box_area(people[i]["box"]))[:limit]
            people = [people[i] for i in sorted(keep)]
        return [Person(i, tuple(p["box"]), p["keypoints"], p["score"]) for i, p in enumerate(people)]

    @classmethod
    def from_json(cls, text: str) -> "PoseResult":
        """Parse a stored result; ValueError unless ``text`` is a complete, well-formed one."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(d, dict) or set(d) not in (_RESULT_FIELDS, _RESULT_FIELDS | {"people"}):
            raise ValueError("missing or unknown fields")
        if "people" in d and not _people(d["people"]):
            raise ValueError("bad people")
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


@dataclass(frozen=True)
class Person:
    """One person of a photo: its index (left to right), crop box and keypoints (pixels), and the pose
    model's confidence in it (None: a single-person model, which gives none)."""
    index: int
    box: tuple[float, float, float, float] | None
    keypoints: list[list[float]] | None
    score: float | None


def box_area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _people(people: object) -> bool:
    return isinstance(people, list) and bool(people) and all(
        isinstance(p, dict) and set(p) == {"box", "keypoints", "score"} and _numbers(p["box"], 4)
        and isinstance(p["keypoints"], list) and p["keypoints"] and all(_numbers(r, 4) for r in p["keypoints"])
        and type(p["score"]) in (int, float) for p in people)


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
    """Keypoints in pixels of the original ``width`` x ``height`` photo, from a (maybe smaller) ``rgb``; a
    multi-person model (one with ``people(rgb)``) also gives every person in ``people``."""
    try:
        found = estimator.people(rgb) if hasattr(estimator, "people") else _one(estimator.landmarks(rgb))
    except Exception as e:  # the pose graph rejecting an odd frame must not end the run
        return PoseResult("unreadable", f"pose model failed: {e}", width, height)
    if not found:
        return PoseResult(*getattr(estimator, "missing", ("no_person", "MediaPipe found no person")), width, height)
    people = []
    for norm, score in found:
        kp = to_pixels(norm, width, height)
        people.append({"box": list(estimator.skeleton.keypoint_box(kp, width, height)), "keypoints": kp.tolist(),
                       "score": score})
    main = max(people, key=lambda p: box_area(p["box"]))
    return PoseResult("ok", "", width, height, tuple(main["box"]), main["keypoints"],
                      people if hasattr(estimator, "people") else None)


def _one(norm: np.ndarray | None) -> list[tuple[np.ndarray, None]]:
    return [] if norm is None else [(norm, None)]


def to_pixels(norm: np.ndarray, width: int, height: int) -> np.ndarray:
    kp = norm.copy()
    kp[:, 0] *= width
    kp[:, 1] *= height
    kp[:, 2] *= width  # MediaPipe's z uses roughly the scale of x
    return kp.round(3)  # the box from the stored values: keypoints read back from poses.csv give the same crop
