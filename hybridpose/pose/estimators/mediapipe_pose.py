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
