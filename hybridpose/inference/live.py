"""The live loop: a camera (or a video file standing in for one) labelled frame by frame by the whole hybrid.

Every frame gets its pose; the run's branches, fusion and rules decide the running label. A clip run decides
over the frames of the last span (as long as a training clip, at the run's sampling rate: the frames that join
that history are the only ones the image networks run on), a photo run on each frame, its fused
probabilities averaged over the last ``window`` frames. A camera is read on a thread that keeps only the
newest frame: a loop slower than the camera labels the frame that is current when it is ready and drops the
ones it had no time for, rather than falling behind; a video file standing in for a camera is played at its
own frame rate the same way (``realtime=False``: every frame in order, for tests).

With several people (the predictor's ``tracks_people``) every frame's people get track ids from the tracker,
and each track keeps its own running label (its last ``window`` frames' image probabilities) and, with the run's
sequence branch, its own keypoint history. A person is shown and numbered (0, 1, ...) from its track's
``LIVE_MIN_FRAMES``-th frame on; until someone is, the frame is labelled as a whole, as the one-person loop does.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..data.crops import crop_photo
from ..data.video import FRAME_MAX_SIDE
from ..errors import RunError
from ..pose.result import analyse_array
from .classifier import channels_first
from .clips import ClipPredictor, FrameResult

LIVE_MIN_FRAMES = 3  # a person tracked live is shown (and numbered) from its third frame on


@dataclass
class Running:
    """One person's (or the one clip's) recent frames: the history the whole hybrid decides on."""
    frames: list = field(default_factory=list)
    last: dict = field(default_factory=dict)

    def wants(self, t: float, pred: ClipPredictor) -> bool:
        """Does a frame at ``t`` join the history (a photo run: every frame; a clip run: at its sampling rate)?"""
        return not pred.is_clip_run or not self.frames or t - self.frames[-1].time >= 1.0 / pred.sampling.fps

    def label(self, pred: ClipPredictor, frame: FrameResult | None, window: int, span: float) -> dict:
        """The whole hybrid's decision on the history with ``frame`` added (None: the last one's, unchanged)."""
        if frame is None and self.last:
            return self.last
        if frame is not None:
            keep = [f for f in self.frames if frame.time - f.time < span] if pred.is_clip_run else self.frames[1 - window:]
            self.frames = keep + [frame]
        self.last = pred.decide_live(self.frames)
        return self.last


def _text(o: dict) -> str:
    text = f"{o['label']} {o['confidence']:.2f}" + (f" ({o['rule']})" if o.get("rule") else "")
    return text + (f"  motion: {o['motion_label']} {o['motion_confidence']:.2f}" if "motion_label" in o else "")


class LatestFrame:
    """Frames read on a thread, only the newest kept: ``next()`` gives the frame current now (None at the end)
    and counts the ones replaced before anyone took them (``dropped``). ``rate``: a file standing in for a
    camera, read at its own frames per second."""

    def __init__(self, cap, rate: float | None):
        self.cap, self.rate = cap, rate
        self.cond = threading.Condition()
        self.frame, self.seq, self.taken, self.dropped, self.done, self.stop = None, 0, 0, 0, False, False
        self.thread = threading.Thread(target=self._read, name="hybridpose-live", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        start, i = time.perf_counter(), 0
        while not self.stop:
            ok, bgr = self.cap.read()
            if not ok:
                break
            i += 1
            if self.rate:
                time.sleep(max(0.0, start + i / self.rate - time.perf_counter()))
            with self.cond:
                self.frame, self.seq = (bgr, time.perf_counter()), self.seq + 1
                self.cond.notify()
        with self.cond:
            self.done = True
            self.cond.notify()

    def next(self):
        with self.cond:
            while not self.done and self.seq == self.taken:
                self.cond.wait()
            if self.seq == self.taken:
                return None
            self.dropped += self.seq - self.taken - 1
            self.taken = self.seq
            return self.frame

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=5)


def _every_frame(cap):
    """Every frame in order, its time the one the file gives (``realtime=False``)."""
    import cv2

    def next_frame():
        ok, bgr = cap.read()
        return (bgr, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0) if ok else None
    return next_frame


def live(pred: ClipPredictor, source: int | str, *, show: bool = True, max_frames: int | None = None,
         window: int = 5, realtime: bool = True) -> Iterator[dict]:
    """The camera loop (OpenCV): every frame's pose and the whole hybrid's running label (levels, confidence,
    the rule that decided, the sequence branch's motion label), the frames per second reached and the frames
    dropped so far; drawn in a window when ``show`` (q or Esc quits). With several people: ``people``, one entry
    per person tracked in the frame (``track``, ``box``, label), the top-level label being the largest
    person's."""
    import cv2

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise RunError(f"--camera {source}: cannot open (no such camera or file, or no permission).")
    rate = cap.get(cv2.CAP_PROP_FPS) or 30.0
    span = pred.live_span(window)
    step = _People(pred, rate, window, span) if pred.tracks_people else None
    one = Running()
    reader = LatestFrame(cap, rate if isinstance(source, str) else None) if realtime else None
    next_frame = reader.next if reader is not None else _every_frame(cap)
    ticks: list[float] = [time.perf_counter()]
    n = 0
    try:
        while max_frames is None or n < max_frames:
            got = next_frame()
            if got is None:
                break
            bgr, now = got
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            scale = min(1.0, FRAME_MAX_SIDE / max(rgb.shape[:2]))
            if scale < 1:
                rgb = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            out, shown = step(rgb, now) if step is not None else _one_person(pred, rgb, now, one, window, span)
            n += 1
            ticks = (ticks + [time.perf_counter()])[-11:]  # frames per second over the last 10 frames
            fps = (len(ticks) - 1) / (ticks[-1] - ticks[0])
            out = {"frame": n - 1, **out, "fps": fps, "dropped": reader.dropped if reader is not None else 0}
            if show:
                from ..viz.annotate import draw_people

                rate = f"{fps:.1f} fps, {out['dropped']} dropped"
                text = f"{_text(out)}  {rate}" if step is None else f"{len(shown)} people  {rate}"
                cv2.imshow("hybridpose", cv2.cvtColor(draw_people(rgb, shown, pred.sk, text), cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            yield out
    finally:
        if reader is not None:
            reader.close()
        cap.release()
        if step is not None:
            pred.close()
        if show:
            cv2.destroyAllWindows()


def _one_person(pred: ClipPredictor, rgb: np.ndarray, now: float, one: Running, window: int,
                span: float) -> tuple[dict, list]:
    from ..viz.annotate import Shown

    result = pred.frame_pose(rgb)
    frame = pred.live_frame(rgb, result, now) if one.wants(now, pred) else None
    kp = np.asarray(result.keypoints, float).reshape(pred.sk.n, 4) if result.keypoints is not None else None
    out = {"status": result.status, "track": 0, **one.label(pred, frame, window, span)}
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

    def __call__(self, rgb: np.ndarray, now: float) -> tuple[dict, list]:
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
            frame = FrameResult(0, now, result.status, pred.sk.empty(1)[0], probs[0])
            return {"status": result.status, "track": None,
                    **self.nobody.label(pred, frame, self.window, self.span), "people": []}, []
        each = []
        for (track, p, kp), pr in zip(kept, probs):
            running = self.running.setdefault(track, Running())
            frame = FrameResult(0, now, "ok", kp, pr, p.box) if running.wants(now, pred) else None
            o = running.label(pred, frame, self.window, self.span)
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
