"""ByteTrack as ``supervision`` packaged it (``supervision.ByteTrack``, up to supervision 0.26: 0.27 moved it
to Roboflow's ``trackers`` package, which needs NumPy 2, which mediapipe 0.10.21 cannot load): a Kalman filter
per box and two rounds of IoU matching, confident boxes first, then the unsure ones."""
from __future__ import annotations

import numpy as np

from . import as_arrays, register

MEMORY_S = 1.5          # a track not seen for this long is ended
MATCH = 0.8             # supervision's minimum_matching_threshold (1 - IoU cost)


@register
class ByteTrackTracker:
    name = "bytetrack"
    missing = ("this supervision has no ByteTrack (0.27 and later moved it out); pip install 'hybridpose[bytetrack]' "
               "(supervision<0.27), or use --tracker norfair.")

    @staticmethod
    def available() -> bool:
        try:
            import supervision
        except ImportError:
            return False
        return hasattr(supervision, "ByteTrack")

    def __init__(self, fps: float) -> None:
        import supervision as sv

        rate = max(1, int(round(fps)))
        # lost_track_buffer counts frames at 30 fps scaled by frame_rate / 30: this keeps MEMORY_S seconds
        self._tracker = sv.ByteTrack(track_activation_threshold=0.25, lost_track_buffer=int(round(MEMORY_S * 30)),
                                     minimum_matching_threshold=MATCH, frame_rate=rate, minimum_consecutive_frames=1)

    def update(self, boxes, keypoints, scores) -> list[int | None]:
        import supervision as sv

        b, _, s = as_arrays(boxes, keypoints, scores)
        dets = sv.Detections(xyxy=b.astype(np.float32), confidence=s.astype(np.float32),
                             class_id=np.zeros(len(b), int), data={"index": np.arange(len(b))})
        out = self._tracker.update_with_detections(dets)
        ids: list[int | None] = [None] * len(b)
        if len(out):
            for i, t in zip(out.data["index"], out.tracker_id):
                ids[int(i)] = int(t)
        return ids
