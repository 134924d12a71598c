"""MediaPipe Hands as pose front ends: ``mediapipe_hands`` (the larger hand) and ``mediapipe_hands2`` (both).

The models are the ones bundled in the ``mediapipe==0.10.21`` wheel (``model_complexity=1``, static-image
mode); nothing is downloaded. A photo without a hand gets status ``no_hand``: the keypoint branch abstains
and the image branch decides on the whole photo. Each hand's fourth value is P(right hand) (see
``skeletons/hand.py``); MediaPipe's handedness assumes a mirrored (selfie) photo, and is kept as it says.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext

import numpy as np

from . import MediaPipeEstimator, quiet_stderr, register

HANDS_VERSION = "mediapipe-0.10.21-hands-c1-v1"  # bump when the stored result changes


@register
class HandEstimator(MediaPipeEstimator):
    """The larger hand of the photo (by the area of its keypoint box), 21 points."""

    name = "mediapipe_hands"
    version = HANDS_VERSION
    skeleton_name = "hand"
    missing = ("no_hand", "MediaPipe found no hand")
    max_hands = 2
    min_detection_confidence = 0.5

    def make_graph(self, solutions):
        return solutions.hands.Hands(static_image_mode=True, max_num_hands=self.max_hands, model_complexity=1,
                                     min_detection_confidence=self.min_detection_confidence)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Every hand found: (21, 4) arrays, x and y normalised to [0, 1], z, P(right)."""
        return hands_of(self.process(rgb))

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        hands = self.detect(rgb)
        if not hands:
            return None
        h, w = rgb.shape[:2]
        return max(hands, key=lambda p: np.ptp(p[:, 0]) * w * np.ptp(p[:, 1]) * h)


@register
class TwoHandEstimator(HandEstimator):
    """Both hands, by side (``left_*`` then ``right_*``); a side not found is NaN."""

    name = "mediapipe_hands2"
    version = f"{HANDS_VERSION}-two"
    skeleton_name = "two_hands"

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        hands = self.detect(rgb)
        if not hands:
            return None
        n = len(hands[0])
        out = np.full((2 * n, 4), np.nan)
        # the surer of two hands called the same side keeps it; the other takes the free slot
        hands = sorted(hands, key=lambda p: -abs(p[0, 3] - 0.5))
        for p in hands:
            slot = int(p[0, 3] >= 0.5)
            if np.isfinite(out[slot * n, 0]):
                slot = 1 - slot
            out[slot * n:(slot + 1) * n] = p
        return out



@register
class HandRetryEstimator(HandEstimator):
    """The second look at a clip's frame where ``mediapipe_hands`` found no hand: MediaPipe's lite palm and hand
    models (``model_complexity=0``) on the frame and on it at half size, then the full models on the frame with
    its contrast evened out (CLAHE on lightness), then the lite and the full models on the frame with its shadows
    lifted (``brighter``), then the lite models on the frame over a black band (``padded_below``: a hand cut by
    the bottom edge); the first look that finds a hand is kept. On egogestar frames the full models had missed
    (194 sampled), the first three looks found a hand in 112, +15 and +6 (133; the full models at detection
    threshold 0.15, the first version of this retry, found 88). With the last three, the share of frames with a
    hand over its 110 clips (every frame) went from 0.874 to 0.913, clips under 30 % from 9 to 4, clips with
    none from 2 to 1. Only for clips, where a hand is in most frames and the clip's other frames outvote a
    stray find; never for a photo alone: the lite models find a "hand" in a yoga photo with none
    (``tests/data/hands/photo/photo_00.jpg``)."""

    name = "mediapipe_hands_retry"
    version = f"{HANDS_VERSION}-retry-lite-half-clahe-bright-below"
    retry_of = "mediapipe_hands"

    def make_graph(self, solutions):
        self._lite = solutions.hands.Hands(static_image_mode=True, max_num_hands=self.max_hands, model_complexity=0,
                                           min_detection_confidence=self.min_detection_confidence)
        return super().make_graph(solutions)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        import cv2

        lifted = functools.cache(lambda: brighter(rgb))  # two looks share it; made only if they are reached
        looks = ((self._lite, lambda: rgb, False),
                 (self._lite, lambda: cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), False),
                 (self._graph, lambda: even_contrast(rgb), False),
                 (self._lite, lifted, False),
                 (self._graph, lifted, False),
                 (self._lite, lambda: padded_below(rgb), True))
        for graph, make, padded in looks:
            image = make()
            with quiet_stderr() if not self._warm else nullcontext():  # first calls' C++ chatter
                hands = hands_of(graph.process(np.ascontiguousarray(image)))
            if hands:
                for p in hands:  # y in [0, 1] of the padded image -> of the frame
                    p[:, 1] *= image.shape[0] / rgb.shape[0] if padded else 1.0
                break
        self._warm = True
        return hands

    def close(self) -> None:
        self._lite.close()
        super().close()


def hands_of(result) -> list[np.ndarray]:
    """The hands of a Hands graph's result: (21, 4) arrays, x and y normalised to [0, 1], z, P(right)."""
    if not result.multi_hand_landmarks:
        return []
    hands = []
    for marks, side in zip(result.multi_hand_landmarks, result.multi_handedness):
        label = side.classification[0]
        right = label.score if label.label == "Right" else 1.0 - label.score
        hands.append(np.array([[p.x, p.y, p.z, right] for p in marks.landmark], dtype=np.float64))
    return hands


def even_contrast(rgb: np.ndarray) -> np.ndarray:
    """The image with its lightness equalised locally (CLAHE): a hand in shadow or against a bright cloth."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def brighter(rgb: np.ndarray, gamma: float = 0.5) -> np.ndarray:
    """The image with its shadows lifted (gamma below 1): a dark hand against a bright or patterned cloth."""
    import cv2

    lut = (255.0 * (np.arange(256) / 255.0) ** gamma).round().astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(rgb), lut)


def padded_below(rgb: np.ndarray, share: float = 0.5) -> np.ndarray:
    """The image over a black band ``share`` of its height: a hand entering from the bottom edge, its wrist cut
    off, gets room below it, as the palm detector expects (landmark y must then be scaled by the new height)."""
    h = rgb.shape[0]
    return np.concatenate([rgb, np.zeros((int(h * share), *rgb.shape[1:]), dtype=rgb.dtype)], axis=0)


SECOND_DETECTION = 0.15   # the palm detector's threshold in the second look at a photo
SECOND_PRESENCE = 0.8     # the landmark model's hand presence a hand of the second look needs
SECOND_HANDEDNESS = 0.8   # and how sure its left / right call must be, in both tries
SECOND_AGREE_IOU = 0.5    # a hand is kept only when the whole-photo try and a zoomed try find it in one place
SECOND_SIZE = (0.02, 0.6)  # the hand's box side against the photo's shorter side


def hand_box(p: np.ndarray) -> np.ndarray:
    return np.r_[p[:, :2].min(0), p[:, :2].max(0)]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def zoomed(rgb: np.ndarray, share: float = 0.6) -> list[tuple[int, int, np.ndarray]]:
    """The 2 x 2 overlapping views (x0, y0, pixels) of ``share`` of the photo's width and height each."""
    h, w = rgb.shape[:2]
    cw, ch = int(round(share * w)), int(round(share * h))
    return [(x, y, rgb[y:y + ch, x:x + cw]) for y in (0, h - ch) for x in (0, w - cw)]


@register
class HandSecondLook(HandEstimator):
    """The second chance of a photo where ``mediapipe_hands`` found no hand (``extract --second-look``; off by
    default): the palm detector at a low threshold on the whole photo, and at the usual one on four zoomed views.
    A hand is kept only when both find it in the same place (keypoint boxes IoU >= ``SECOND_AGREE_IOU``), the
    landmark model is sure of it in both (presence >= ``SECOND_PRESENCE``), both call its side surely
    (handedness >= ``SECOND_HANDEDNESS``) and its size is a hand's (``SECOND_SIZE``). docs/RESULTS.md has what
    it recovers and what it costs."""

    name = "mediapipe_hands_second"
    version = (f"{HANDS_VERSION}-second-det{SECOND_DETECTION}-p{SECOND_PRESENCE}-h{SECOND_HANDEDNESS}"
               f"-iou{SECOND_AGREE_IOU}-v1")
    second_look_of = "mediapipe_hands"
    min_detection_confidence = SECOND_DETECTION

    def make_graph(self, solutions):
        def graph(detection: float):
            return solutions.hands.Hands(static_image_mode=True, max_num_hands=self.max_hands, model_complexity=1,
                                         min_detection_confidence=detection, min_tracking_confidence=SECOND_PRESENCE)

        self._zoom_graph = graph(HandEstimator.min_detection_confidence)
        return graph(SECOND_DETECTION)

    def _hands(self, graph, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(keypoints, handedness score) of every hand ``graph`` finds in ``rgb``."""
        # P(right) is the handedness score or 1 minus it: the score is the surer of the two
        return [(p, max(p[0, 3], 1.0 - p[0, 3])) for p in hands_of(graph.process(np.ascontiguousarray(rgb)))]

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        if not self._warm:  # the first call's C++ chatter silenced
            self._warm = True
            with quiet_stderr():
                return self.detect(rgb)
        h, w = rgb.shape[:2]
        whole = [(p, s) for p, s in self._hands(self._graph, rgb) if s >= SECOND_HANDEDNESS and self._plausible(p, w, h)]
        if not whole:
            return []
        views = []
        for x0, y0, view in zoomed(rgb):
            vh, vw = view.shape[:2]
            for p, s in self._hands(self._zoom_graph, view):
                if s >= SECOND_HANDEDNESS:
                    p[:, 0], p[:, 1] = (p[:, 0] * vw + x0) / w, (p[:, 1] * vh + y0) / h
                    views.append(p)
        return [p for p, _ in whole
                if any(box_iou(hand_box(p), hand_box(q)) >= SECOND_AGREE_IOU and (p[0, 3] >= 0.5) == (q[0, 3] >= 0.5)
                       for q in views)]

    @staticmethod
    def _plausible(p: np.ndarray, w: int, h: int) -> bool:
        b = hand_box(p)
        side = max((b[2] - b[0]) * w, (b[3] - b[1]) * h) / min(w, h)
        return SECOND_SIZE[0] <= side <= SECOND_SIZE[1]

    def close(self) -> None:
        self._zoom_graph.close()
        super().close()
