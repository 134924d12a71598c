"""The live loop: a camera (or a video file standing in for one) labelled frame by frame by a clip run.

With several people (the predictor's ``tracks_people``) every frame's people get track ids from the tracker,
and each track keeps its own running label (its last ``window`` frames' image probabilities) and, with the run's
sequence branch, its own keypoint history. A person is shown and numbered (0, 1, ...) from its track's
``LIVE_MIN_FRAMES``-th frame on; until someone is, the frame is labelled as a whole, as the one-person loop does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..data.crops import crop_photo
from ..data.video import FRAME_MAX_SIDE
from ..errors import RunError
from ..pose.result import analyse_array
from .classifier import channels_first
from .clips import ClipPredictor

LIVE_MIN_FRAMES = 3  # a person tracked live is shown (and numbered) from its third frame on


@dataclass
class Running:
    """One person's (or the one clip's) recent image probabilities and keypoint history."""
    recent: list = field(default_factory=list)
    history: list = field(default_factory=list)  # (time, keypoints) of the last span seconds

    def label(self, pred: ClipPredictor, p: np.ndarray, kp: np.ndarray | None, window: int, span: float) -> dict:
        """The label averaged over the last ``window`` frames, and the sequence branch's running label."""
        self.recent = (self.recent + [p])[-window:]
        avg = np.mean(self.recent, 0)
        out = {"label": pred.h.leaves[int(avg.argmax())], "confidence": float(avg.max())}
        sequence = pred.clf.branches.get("sequence")
        if sequence is not None:
            now = time.perf_counter()
            self.history = [(t, k) for t, k in self.history if now - t <= span] + [
                (now, kp if kp is not None else pred.sk.empty(1)[0])]
            m = sequence.predict_proba([np.stack([k for _, k in self.history])])[0]
            if np.isfinite(m).all():
                out.update(motion_label=sequence.classes_[int(m.argmax())], motion_confidence=float(m.max()))
        return out


def _text(o: dict) -> str:
    text = f"{o['label']} {o['confidence']:.2f}"
    return text + (f"  motion: {o['motion_label']} {o['motion_confidence']:.2f}" if "motion_label" in o else "")


def live(pred: ClipPredictor, source: int | str, *, show: bool = True, max_frames: int | None = None,
         window: int = 5) -> Iterator[dict]:
    """The camera loop (OpenCV): every frame's pose, image probabilities, the label averaged over the last
    ``window`` frames, and the frames per second; drawn in a window when ``show`` (q or Esc quits). With several
    people: ``people``, one entry per person tracked in the frame (``track``, ``box``, label), the top-level label
    being the largest person's."""
    import cv2

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise RunError(f"--camera {source}: cannot open (no such camera or file, or no permission).")
    sequence = pred.clf.branches.get("sequence")  # a clip run's: the running label of the last frames' motion
    # the last seconds a training clip spans at the run's sampling, whatever the camera's frame rate
    span = sequence.frames_ / pred.sampling.fps if sequence is not None else 0.0
    step = _People(pred, cap.get(cv2.CAP_PROP_FPS) or 30.0, window, span) if pred.tracks_people else None
    one = Running()
    ticks: list[float] = [time.perf_counter()]
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            scale = min(1.0, FRAME_MAX_SIDE / max(rgb.shape[:2]))
            if scale < 1:
                rgb = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            out, shown = step(rgb) if step is not None else _one_person(pred, rgb, one, window, span)
            n += 1
            ticks = (ticks + [time.perf_counter()])[-11:]  # frames per second over the last 10 frames
            fps = (len(ticks) - 1) / (ticks[-1] - ticks[0])
            out = {"frame": n - 1, **out, "fps": fps}
            if show:
                from ..viz.annotate import draw_people

                text = f"{_text(out)}  {fps:.1f} fps" if step is None else f"{len(shown)} people  {fps:.1f} fps"
                cv2.imshow("hybridpose", cv2.cvtColor(draw_people(rgb, shown, pred.sk, text), cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            yield out
    finally:
        cap.release()
        if step is not None:
            pred.close()
        if show:
            cv2.destroyAllWindows()


def _one_person(pred: ClipPredictor, rgb: np.ndarray, one: Running, window: int, span: float) -> tuple[dict, list]:
    from PIL import Image

    from ..viz.annotate import Shown

    prep = pred.clf.image_branch.preprocessing_
    h, w = rgb.shape[:2]
    result = analyse_array(rgb, w, h, pred.clf.estimator)
    crop, _ = crop_photo(Image.fromarray(rgb), result.box, None, prep.eval_margin, prep.input_size, pred.sk.n)
    p = pred.clf.image_branch.predict_level_proba(channels_first(crop[None]), pred.h)[pred.h.leaf_level][0]
    kp = np.asarray(result.keypoints, float).reshape(pred.sk.n, 4) if result.keypoints is not None else None
    out = {"status": result.status, "track": 0, **one.label(pred, p, kp, window, span)}
    return out, [Shown(None, None, kp, "")]


class _People:
    """One frame of the several-people loop: pose, tracker, each person's crop and running label."""

    def __init__(self, pred: ClipPredictor, rate: float, window: int, span: float) -> None:
        from ..pose.trackers import make_tracker

        self.pred, self.window, self.span = pred, window, span
        self.tracker = make_tracker(pred.tracker, rate)
        self.numbers: dict[int, int] = {}  # the tracker's ids -> 0, 1, ... in order of appearance
        self.sightings: dict[int, int] = {}
        self.running: dict[int, Running] = {}
        self.nobody = Running()

    def __call__(self, rgb: np.ndarray) -> tuple[dict, list]:
        from PIL import Image

        from ..viz.annotate import Shown

        pred = self.pred
        prep = pred.clf.image_branch.preprocessing_
        h, w = rgb.shape[:2]
        result = analyse_array(rgb, w, h, pred.people_estimator)
        people = [p for p in result.persons(pred.max_people) if p.keypoints is not None]
        kps = [np.asarray(p.keypoints, float).reshape(pred.sk.n, 4) for p in people]
        ids = self.tracker.update([p.box for p in people], kps, [p.score for p in people]) if people else \
            self.tracker.update([], [], [])
        kept = [(self._number(t), p, k) for t, p, k in zip(ids, people, kps) if t is not None]
        kept = [(n, p, k) for n, p, k in kept if n is not None]
        image = Image.fromarray(rgb)
        boxes = [p.box for _, p, _ in kept] or [None]  # nobody: the whole frame, as the one-person loop
        crops = np.stack([crop_photo(image, b, None, prep.eval_margin, prep.input_size, pred.sk.n)[0] for b in boxes])
        probs = pred.clf.image_branch.predict_level_proba(channels_first(crops), pred.h)[pred.h.leaf_level]
        if not kept:
            return {"status": result.status, "track": None, **self.nobody.label(pred, probs[0], None, self.window,
                                                                               self.span), "people": []}, []
        each = []
        for (track, p, kp), pr in zip(kept, probs):
            o = self.running.setdefault(track, Running()).label(pred, pr, kp, self.window, self.span)
            each.append({"track": track, "box": [round(float(v), 1) for v in p.box], **o})
        main = max(range(len(kept)), key=lambda i: _area(kept[i][1].box))
        out = {"status": result.status, **{k: v for k, v in each[main].items() if k != "box"}, "people": each}
        return out, [Shown(e["track"], p.box, kp, _text(e)) for e, (_, p, kp) in zip(each, kept)]


    def _number(self, track: int) -> int | None:
        """The person's number, once its track has been seen ``LIVE_MIN_FRAMES`` times (a false detection of a
        frame or two gets none: the live loop cannot drop short tracks afterwards as a whole clip does)."""
        self.sightings[track] = self.sightings.get(track, 0) + 1
        if track not in self.numbers and self.sightings[track] >= LIVE_MIN_FRAMES:
            self.numbers[track] = len(self.numbers)
        return self.numbers.get(track)


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
