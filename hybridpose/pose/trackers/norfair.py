"""``norfair`` (Tryolabs): a Kalman filter per keypoint and a nearest-neighbour match on the keypoints themselves,
the distance being the mean distance of the visible keypoints over the person's height (so it does not depend on
the frame's size or how far the person stands)."""
from __future__ import annotations

import numpy as np

from . import as_arrays, register

MATCH = 0.6             # a person this far (mean keypoint distance / the person's height) from a track is not it
VISIBLE = 0.3           # keypoints less visible than this do not count in the distance
MEMORY_S = 1.5          # a track not seen for this long is ended
DELAY = 1               # a new person gets an id when seen twice: a one-frame false detection gets none


def keypoint_distance(detection, tracked) -> float:
    pts, est = detection.points, tracked.estimate
    seen = detection.scores >= VISIBLE
    if not seen.any():
        seen = np.ones(len(pts), bool)
    height = max(float(np.ptp(pts[seen, 1])), 1.0)
    return float(np.linalg.norm(pts[seen] - est[seen], axis=1).mean() / height)


@register
class NorfairTracker:
    name = "norfair"
    missing = "norfair is not installed; pip install 'norfair>=2.3,<3'."

    @staticmethod
    def available() -> bool:
        from importlib.util import find_spec

        return find_spec("norfair") is not None

    def __init__(self, fps: float) -> None:
        import logging

        from norfair import Tracker

        memory = max(2, int(round(MEMORY_S * fps)))
        logging.disable(logging.WARNING)  # its advice to use a vectorised distance, on the root logger
        try:
            self._tracker = Tracker(distance_function=keypoint_distance, distance_threshold=MATCH,
                                    hit_counter_max=memory, initialization_delay=DELAY, pointwise_hit_counter_max=memory)
        finally:
            logging.disable(logging.NOTSET)
        self._first = True

    def update(self, boxes, keypoints, scores) -> list[int | None]:
        from norfair import Detection

        b, kp, s = as_arrays(boxes, keypoints, scores)
        dets = [Detection(points=kp[i, :, :2], scores=np.nan_to_num(kp[i, :, 3]), data=i) for i in range(len(b))]
        ids: list[int | None] = [None] * len(dets)
        if self._first and dets:  # the people there from the start have been seen long enough: given twice
            self._first = False
            self._tracker.update(detections=dets)
        for obj in self._tracker.update(detections=dets):
            d = obj.last_detection
            if d is not None and d.data < len(dets) and dets[d.data] is d:  # matched in this frame
                ids[d.data] = int(obj.id)
        return ids
