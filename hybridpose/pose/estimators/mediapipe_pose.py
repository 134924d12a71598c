"""MediaPipe Pose (legacy solution, static-image mode) as the ``body`` skeleton's pose model.

Complexity 1 is the model the ``mediapipe==0.10.21`` wheel bundles; nothing is downloaded.
"""
from __future__ import annotations

import numpy as np

from . import MediaPipeEstimator, register

POSE_VERSION = "mediapipe-0.10.21-c1-v2"  # bump when the stored result changes


@register
class PoseEstimator(MediaPipeEstimator):
    """MediaPipe Pose in static-image mode. Complexity 1 is the model the wheel bundles."""

    name = "mediapipe_pose"
    version = POSE_VERSION
    skeleton_name = "body"

    def make_graph(self, solutions):
        return solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """n x 4 array (x, y normalised to [0, 1], z, visibility), or None if no person."""
        result = self.process(rgb)
        if result.pose_landmarks is None:
            return None
        return np.array([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark], dtype=np.float64)


SECOND_DETECTION = 0.15  # the person detector's threshold in the second look at a photo
SECOND_PRESENCE = 0.8    # the landmark model's presence a person of the second look needs
SECOND_VISIBILITY = 0.8  # and its keypoints' mean visibility (a whole body in view, not an arm at the edge)
SECOND_HEIGHT = 0.4      # and the height of its keypoints' box, against the photo's: the photo's subject


def plausible_body(kp: np.ndarray) -> bool:
    """Whether a second look's person (normalised keypoints, 4th column the visibility) is the photo's subject:
    a body the landmark model sees whole and at least ``SECOND_HEIGHT`` of the photo's height."""
    y = np.clip(kp[:, 1], 0.0, 1.0)
    return float(kp[:, 3].mean()) >= SECOND_VISIBILITY and float(np.ptp(y)) >= SECOND_HEIGHT


def padded_square(rgb: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The photo centred on a grey square (its longer side), and where the photo's corner went."""
    h, w = rgb.shape[:2]
    s = max(h, w)
    out = np.full((s, s, 3), 127, dtype=np.uint8)
    y0, x0 = (s - h) // 2, (s - w) // 2
    out[y0:y0 + h, x0:x0 + w] = rgb
    return out, x0, y0


@register
class PoseSecondLook(PoseEstimator):
    """The second chance of a photo where ``mediapipe_pose`` found nobody (``extract --second-look``; off by
    default): the person detector at a low threshold (``SECOND_DETECTION``), on the photo and then on the photo
    padded to a square; what it finds is kept only when the landmark model is sure of it (presence >=
    ``SECOND_PRESENCE``, MediaPipe's own gate) and it is a whole body of a plausible size (``plausible_body``).
    docs/RESULTS.md has what it recovers and what it costs."""

    name = "mediapipe_pose_second"
    version = (f"{POSE_VERSION}-second-det{SECOND_DETECTION}-p{SECOND_PRESENCE}-v{SECOND_VISIBILITY}"
               f"-h{SECOND_HEIGHT}-v1")
    second_look_of = "mediapipe_pose"

    def make_graph(self, solutions):
        return solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                   min_detection_confidence=SECOND_DETECTION, min_tracking_confidence=SECOND_PRESENCE)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        found = super().landmarks(rgb)
        if found is not None:
            return found if plausible_body(found) else None
        square, x0, y0 = padded_square(rgb)
        found = super().landmarks(square)
        if found is None:
            return None
        h, w = rgb.shape[:2]
        s = square.shape[0]
        found[:, 0], found[:, 1] = (found[:, 0] * s - x0) / w, (found[:, 1] * s - y0) / h
        return found if plausible_body(found) else None
