"""MediaPipe Pose (legacy solution, static-image mode) as the ``body`` skeleton's pose model.

Complexity 1 is the model the ``mediapipe==0.10.21`` wheel bundles; nothing is downloaded.
"""
from __future__ import annotations

import os

import numpy as np

from ...skeletons import Skeleton, get_skeleton
from . import quiet_stderr, register, started

POSE_VERSION = "mediapipe-0.10.21-c1-v2"  # bump when the stored result changes


@register
class PoseEstimator:
    """MediaPipe Pose in static-image mode. Complexity 1 is the model the wheel bundles."""

    name = "mediapipe_pose"
    version = POSE_VERSION
    skeleton_name = "body"

    @property
    def skeleton(self) -> Skeleton:
        return get_skeleton(self.skeleton_name)

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mediapipe

        started()
        with quiet_stderr():  # MediaPipe's C++ start-up chatter would cut through the progress bar
            self._pose = mediapipe.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, enable_segmentation=False
            )
        self._warm = False

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """n x 4 array (x, y normalised to [0, 1], z, visibility), or None if no person."""
        if not self._warm:
            self._warm = True
            with quiet_stderr():
                result = self._pose.process(np.ascontiguousarray(rgb))
        else:
            result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_landmarks is None:
            return None
        return np.array([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark], dtype=np.float64)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
