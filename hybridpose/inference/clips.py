"""Prediction on clips: videos and folders of frames (the camera loop is ``live.py``).

A clip run (``fit`` on clips) predicts a clip from its sampled frames: the image branch (the fold
networks) on each frame's crop, averaged over the clip; the clip keypoint branch on the clip's temporal
statistics; the fusion; then the rules, which read the temporal statistics (``range_nose_y``, ...).

Per frame (``--per-frame``) the label is the image branch's frame probabilities smoothed over time with a
centred moving average over about one second of sampled frames (``smooth``). Why a moving average and not
an HMM: it has one parameter that a user can read (the window), needs no transition probabilities that
the training clips (one movement each) cannot give, and keeps a label change within half a window of where
the probabilities cross. The live loop (``live.py``) cannot see the future, so it averages the last window.
Segments are the runs of one smoothed label.

Several people (``max_people`` > 1 with a skeleton that has a multi-person pose model): every sampled frame's
people are given track ids by a tracker library (``pose/trackers``, ``--tracker``), and each track is a clip
of its own: its frames' crops, keypoints and statistics give it a row, a per-frame label and segments. A track
seen in fewer than ``MIN_TRACK_SHARE`` of the sampled frames (a false detection, a passer-by) is no clip; the
tracks kept are numbered 0, 1, ... by their first frame, then left to right. A video of one person is one track,
0, as the single-person path numbers its one clip.

Frames are decoded, analysed and dropped one by one: memory stays flat over any length of video.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from .. import atomic
from ..data.clips import FramePicker, Sample, frame_files, list_samples, load_frame, select_frames
from ..data.content import file_sha256
from ..data.crops import crop_photo
from ..data.hierarchy import Hierarchy
from ..data.images import ImageLoadError
from ..data.video import FRAME_MAX_SIDE, Frame, Sampling, VideoError, ahead, iter_frames, probe
from ..defaults import DEFAULTS
from ..errors import DatasetError, RunError
from ..pose.cache import PoseCache
from ..pose.frontend import estimator_class, retry_class
from ..pose.result import PoseResult, analyse_array
from ..pose.temporal import clip_statistics
from ..run.predtable import prediction_columns
from .classifier import TOP_K, HybridPoseClassifier, channels_first

BATCH = 16
MIN_TRACK_SHARE = 0.2  # a track is a clip when seen in at least this share of the sampled frames (and 2 of them)


@dataclass
class FrameResult:
    index: int
    time: float
    status: str
    keypoints: np.ndarray          # (n, 4), NaN without a skeleton
    image: np.ndarray              # leaf probabilities of the image branch (NaN: the track not in this frame)
    box: tuple | None = None       # the person's box (pixels of the frame), where found
    features: pd.DataFrame | None = None  # live, a photo run: the frame's keypoint features (for its rules)
    picked: bool = True            # one of the frames the clip's image probabilities are averaged over


@dataclass
class ClipResult:
    sample: Sample
    status: str
    reason: str
    frames: list[FrameResult] = field(default_factory=list)
    row: dict = field(default_factory=dict)
    probs: dict = field(default_factory=dict)  # branch (and "fused") -> level -> (1, classes) probabilities
    track: int = 0


@dataclass
class PeopleFrame:
    """One sampled frame seen by the multi-person model: its people's track ids, keypoints, boxes and image
    probabilities; ``whole``: the whole frame's probabilities where nobody was found (as the one-person path)."""
    index: int
    time: float
    status: str
    ids: list = field(default_factory=list)
    keypoints: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    image: list = field(default_factory=list)
    whole: np.ndarray | None = None
    picked: set = field(default_factory=set)  # track ids whose image probabilities are averaged over this frame
    whole_picked: bool = False                # the whole frame's, where no track is kept


class ClipPredictor:
    """A clip run's branches, fusion and rules, applied to clips."""

    def __init__(self, run: str | Path, *, rules: str | Path | None = None, use_rules: bool = True,
                 sampling: Sampling | None = None, cache_dir: str | Path | None = None, partial: bool = False,
                 engine: str | None = None, max_people: int = 1, tracker: str | None = None):
        self.clf = HybridPoseClassifier.load(run, rules=rules, use_rules=use_rules, partial=partial, engine=engine)
        cfg = self.clf.config.get("clips") or {}
        self.sampling = sampling or Sampling(fps=cfg.get("fps") or DEFAULTS.fps, n=cfg.get("frames") or 0,
                                             min_frames=cfg.get("min_frames") or 0)
        self.h, self.sk = self.clf.hierarchy, self.clf.skeleton
        self.cache_dir = cache_dir
        self.rules = self.clf.rules
        first = estimator_class(self.sk)
        self.nobody = getattr(first, "missing", ("no_person",))[0]  # the status of a frame without a skeleton
        second = retry_class(first) if cfg.get("retry") else None
        self.retry = second() if second is not None else None  # as fit did: a second look where no skeleton was found
        self.last_info = None  # the last video's VideoInfo (its ``truncated`` reason)
        self.image_frames = int(cfg.get("image_frames") or 0)  # as fit chose the image branch's frames of a clip
        self.every_image = False  # the image branch on every frame (a per-frame table, a drawn clip), not just those
        people = estimator_class(self.sk, max_people) if max_people > 1 else None
        self.people_class = people if people is not None and hasattr(people, "people") else None
        self.max_people, self.tracker = max_people, tracker
        self._people = None
        if self.people_class is not None:
            from ..pose.trackers import tracker_class

            tracker_class(tracker)  # an unknown or missing tracker is said before any work

    @property
    def tracks_people(self) -> bool:
        """Several people per clip, tracked (``max_people`` > 1 and a multi-person pose model for the skeleton)."""
        return self.people_class is not None

    @property
    def people_estimator(self):
        if self._people is None:
            self._people = self.people_class()
        return self._people

    @property
    def is_clip_run(self) -> bool:
        return self.clf.run.is_clip_run(self.clf.config)

    # ------------------------------------------------------------------ frames
    def frames(self, sample: Sample, every: bool = False) -> Iterator[Frame]:
        if sample.kind == "video":
            self.last_info = probe(sample.path)
            yield from ahead(iter_frames(sample.path, self.sampling, self.last_info, every=every))
            return
        files = [sample.path] if sample.kind == "photo" else frame_files(sample.path)
        if not files:
            raise VideoError("unreadable", "the folder holds no photos")
        pick = set(select_frames(len(files), self.sampling, self.sampling.fps)) if sample.kind == "frames" else {0}
        for i, f in enumerate(files):
            if i in pick or every:
                try:
                    rgb = load_frame(f)
                except ImageLoadError as e:
                    if sample.kind == "photo":
                        raise VideoError(e.status, e.reason) from None
                    continue
                yield Frame(i, i / self.sampling.fps, rgb, i in pick)

    def analyse_frames(self, sample: Sample, frames: Iterator[Frame]) -> list[FrameResult]:
        """Pose (cached by the file's content hash and the frame index) of every sampled frame, and the image
        branch's probabilities of the frames it is averaged over, as fit chose them (``pick_frames``: a few
        spread over the frames with a skeleton; the K networks never run on the others), in one batch at the
        end; of every frame, batch by batch, with ``every_image`` or a run fitted on every frame (``--image-frames
        0``). (Starting the networks early on a second thread, on the
        frames likely to be picked, was slower on 2 cores: they fought the pose model and the decoder.)"""
        from PIL import Image

        sha = file_sha256(sample.path) if sample.path.is_file() else None
        first = estimator_class(self.sk)
        cache = PoseCache(self.cache_dir, first.version)
        again = PoseCache(self.cache_dir, self.retry.version) if self.retry is not None else None
        prep = self.clf.image_branch.preprocessing_
        empty = np.full(len(self.h.leaves), np.nan)
        out: list[FrameResult] = []
        pending: list[tuple[FrameResult, np.ndarray]] = []
        found, anywhere = FramePicker(self.image_frames), FramePicker(self.image_frames)
        stream = self.every_image or not self.image_frames  # every frame's probabilities, batch by batch

        def crop(rgb: np.ndarray, box) -> np.ndarray:
            return crop_photo(Image.fromarray(rgb), box, None, prep.eval_margin, prep.input_size, self.sk.n)[0]

        try:
            for fr in (f for f in frames if f.sampled):
                key = f"{sha}:{fr.index}:{FRAME_MAX_SIDE}" if sha else None
                result = self.frame_pose(fr.rgb, key, cache, again)
                kp = np.asarray(result.keypoints, float).reshape(self.sk.n, 4) if result.keypoints is not None \
                    else self.sk.empty(1)[0]
                res = FrameResult(fr.index, fr.time, result.status, kp, empty, picked=False)
                out.append(res)
                if stream:
                    pending.append((res, crop(fr.rgb, result.box)))
                    if len(pending) >= BATCH:
                        self._image(pending)
                # a frame that may be picked is kept whole (bounded: FramePicker), cropped once it is picked
                (found if result.status == "ok" else anywhere).offer(
                    lambda res=res, rgb=fr.rgb, box=result.box: (res, None if stream else (rgb, box)))
            self._image(pending)
        finally:
            cache.close()
            if again is not None:
                again.close()
        chosen = [item for _, item in (found.chosen() or anywhere.chosen())]
        for res, _ in chosen:
            res.picked = True
        self._image([(res, crop(*kept)) for res, kept in chosen if kept is not None])
        return out

    def _leaf(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The image branch's leaf probabilities of these crops, ``BATCH`` at a time."""
        return np.concatenate([
            self.clf.image_branch.predict_level_proba(channels_first(np.stack(crops[i:i + BATCH])), self.h)[self.h.leaf_level]
            for i in range(0, len(crops), BATCH)]) if len(crops) else np.empty((0, len(self.h.leaves)))

    def _image(self, pending: list[tuple[FrameResult, np.ndarray]]) -> None:
        """These frames' image probabilities, from their crops."""
        for (res, _), p in zip(pending, self._leaf([c for _, c in pending])):
            res.image = p
        pending.clear()

    # ------------------------------------------------------------------ live
    def live_span(self, window: int) -> float:
        """Seconds of history a live label is decided on (a clip run): a training clip's median length (the
        sequence branch's; for a run fitted before it kept one, its median frame count at the run's fps), else
        ``window`` sampled frames."""
        sequence = self.clf.branches.get("sequence")
        if sequence is not None and getattr(sequence, "seconds_", None):
            return float(sequence.seconds_)
        return (sequence.frames_ if sequence is not None else window) / self.sampling.fps

    def frame_pose(self, rgb: np.ndarray, key: str | None = None, cache: PoseCache | None = None,
                   again: PoseCache | None = None) -> PoseResult:
        """A frame's pose (from ``cache`` under ``key`` where given), with the run's second look (from ``again``)
        where the first found no skeleton."""
        h, w = rgb.shape[:2]
        first = lambda: analyse_array(rgb, w, h, self.clf.estimator)  # noqa: E731
        result = cache.fetch(key, first) if cache is not None else first()
        if self.retry is not None and result.status == self.nobody:
            look = lambda: analyse_array(rgb, w, h, self.retry)  # noqa: E731
            second = again.fetch(key, look) if again is not None else look()
            result = second if second.status == "ok" else result
        return result

    def live_frame(self, rgb: np.ndarray, result: PoseResult, now: float) -> FrameResult:
        """A live frame for the history: its keypoints and the image branch's probabilities; a photo run's
        frame carries the whole hybrid's fused probabilities and its features (for the rules)."""
        from PIL import Image

        from ..pose.frontend import make_table

        prep = self.clf.image_branch.preprocessing_
        crop, _ = crop_photo(Image.fromarray(rgb), result.box, None, prep.eval_margin, prep.input_size, self.sk.n)
        kp = np.asarray(result.keypoints, float).reshape(self.sk.n, 4) if result.keypoints is not None \
            else self.sk.empty(1)[0]
        if self.is_clip_run:  # averaged, as in predict, over the frames with a skeleton (all where none has one)
            p = self.clf.image_branch.predict_level_proba(channels_first(crop[None]), self.h)[self.h.leaf_level][0]
            return FrameResult(0, now, result.status, kp, p, result.box, picked=result.status == "ok")
        b = self.clf.batch_from(make_table(["camera"], [None], [result], self.sk), channels_first(crop[None]))
        return FrameResult(0, now, result.status, kp, b.fused[self.h.leaf_level][0], result.box, b.features)

    def decide_live(self, frames: list[FrameResult]) -> dict:
        """The running label of a live history: a clip run's branches, fusion and rules over its frames (and the
        sequence branch's own label, ``motion_label``); a photo run's fused probabilities averaged over the
        frames, its rules on the newest frame's features."""
        h = self.h
        if self.is_clip_run:
            row, probs = self._decide(frames)
            out = {"label": row[h.leaf_level], "confidence": float(row["confidence"]), "rule": row.get("rule") or "",
                   **{lv: row[lv] for lv in h.levels if lv != h.leaf_level}}
            motion = probs.get("sequence", {}).get(h.leaf_level)
            if motion is not None and np.isfinite(motion).all():
                out.update(motion_label=h.leaves[int(motion[0].argmax())], motion_confidence=float(motion[0].max()))
            return out
        p = np.mean([f.image for f in frames], axis=0)
        leaf, rule = h.leaves[int(p.argmax())], ""
        if self.rules is not None and self.rules.rules and frames[-1].features is not None:
            decided, names = self.rules.apply(p[None], h.leaves, frames[-1].features)
            if decided[0] is not None:
                leaf, rule = decided[0], names[0]
        return {"label": leaf, "confidence": float(p.max()), "rule": rule,
                **{lv: h.ancestor(leaf, lv) for lv in h.levels if lv != h.leaf_level}}

    # ------------------------------------------------------------------ clips
    def predict_clip(self, sample: Sample) -> ClipResult:
        if sample.status:
            return ClipResult(sample, sample.status, sample.reason)
        reason = ""
        try:
            frames = self.analyse_frames(sample, self.frames(sample))
            if sample.kind == "video":
                reason = self.last_info.truncated  # decoding stopped early: the frames before it were used
        except VideoError as e:
            return ClipResult(sample, e.status, e.reason)
        if not frames:
            return ClipResult(sample, "unreadable", "no readable frame")
        if any(f.status == "ok" for f in frames):
            res = ClipResult(sample, "ok", reason, frames)
        else:
            nobody, what = getattr(estimator_class(self.sk), "missing", ("no_person", "MediaPipe found no person"))
            res = ClipResult(sample, nobody, f"{what} in any of the {len(frames)} sampled frames; decided by the "
                                             "image branch alone", frames)
        res.row, res.probs = self._decide(frames)
        return res

    def predict_tracks(self, sample: Sample) -> list[ClipResult]:
        """One ClipResult per person tracked over the clip (``tracks_people``), else the one clip's, track 0."""
        if not self.tracks_people or sample.status or sample.kind == "photo":
            return [self.predict_clip(sample)]
        reason = ""
        try:
            seen, whole_frames = self.analyse_people(sample, self.frames(sample))
            if sample.kind == "video":
                reason = self.last_info.truncated
        except VideoError as e:
            return [ClipResult(sample, e.status, e.reason)]
        if not seen:
            return [ClipResult(sample, "unreadable", "no readable frame")]
        empty, n = self.sk.empty(1)[0], len(self.h.leaves)
        tracks = split_tracks(seen, empty, n)
        if not tracks:  # nobody in any frame: one clip of whole frames, as the one-person path
            whole_frames()
            nobody, what = getattr(self.people_class, "missing", ("no_person", "MediaPipe found no person"))
            frames = tracks_frames(seen, None, empty, n)
            res = ClipResult(sample, nobody, f"{what} in any of the {len(frames)} sampled frames; decided by the "
                                             "image branch alone", frames)
            res.row, res.probs = self._decide(frames)
            return [res]
        out = []
        for track, frames in enumerate(tracks):
            res = ClipResult(sample, "ok", reason, frames, track=track)
            res.row, res.probs = self._decide(frames)
            out.append(res)
        return out

    def analyse_people(self, sample: Sample, frames: Iterator[Frame]) -> tuple[list[PeopleFrame], Callable[[], None]]:
        """Every sampled frame's people (multi-person model, cached as the one-person path caches) and their
        track ids (a new tracker per clip); the image branch's probabilities, as in the one-person path, of the
        frames picked per track (``FramePicker`` per track id, over the frames it is seen in) and of the whole
        frames picked where nobody is found, computed by the function returned beside the frames (called where no
        track is kept); of every crop with ``every_image``."""
        from PIL import Image

        from ..pose.trackers import make_tracker

        sha = file_sha256(sample.path) if sample.path.is_file() else None
        est = self.people_class
        cache = PoseCache(self.cache_dir, est.version)
        tracker = make_tracker(self.tracker, self.sampling.fps)
        prep = self.clf.image_branch.preprocessing_
        seen: list[PeopleFrame] = []
        pending: list[tuple[PeopleFrame, list[np.ndarray]]] = []
        per_track: dict[int, FramePicker] = {}
        nobody, anyframe = FramePicker(self.image_frames), FramePicker(self.image_frames)
        stream = self.every_image or not self.image_frames  # every crop's probabilities, batch by batch

        def crop(image, box) -> np.ndarray:
            return crop_photo(image, box, None, prep.eval_margin, prep.input_size, self.sk.n)[0]

        try:
            for fr in (f for f in frames if f.sampled):
                key = f"{sha}:{fr.index}:{FRAME_MAX_SIDE}" if sha else None
                h, w = fr.rgb.shape[:2]
                result = cache.fetch(key, lambda: analyse_array(fr.rgb, w, h, self.people_estimator))
                image = Image.fromarray(fr.rgb)
                pf = PeopleFrame(fr.index, fr.time, result.status)
                seen.append(pf)
                people = [p for p in result.persons(self.max_people) if p.keypoints is not None]
                if people:
                    pf.keypoints = [np.asarray(p.keypoints, float).reshape(self.sk.n, 4) for p in people]
                    pf.boxes = [tuple(p.box) for p in people]
                    pf.ids = tracker.update(pf.boxes, pf.keypoints, [p.score for p in people])
                    pf.image = [None] * len(people)
                    for j, (t, box) in enumerate(zip(pf.ids, pf.boxes)):
                        if t is not None:
                            per_track.setdefault(t, FramePicker(self.image_frames)).offer(
                                lambda pf=pf, j=j, image=image, box=box: (pf, j, None if stream else crop(image, box)))
                else:
                    tracker.update([], [], [])  # a frame without people ages the tracks
                    nobody.offer(lambda pf=pf, image=image: (pf, None, None if stream else crop(image, None)))
                anyframe.offer(lambda pf=pf, image=image: (pf, None, None if stream else crop(image, None)))
                if stream:
                    pending.append((pf, [crop(image, b) for b in (pf.boxes or [None])]))
                    if sum(len(c) for _, c in pending) >= BATCH:
                        self._flush_people(pending)
            self._flush_people(pending)
        finally:
            cache.close()
        todo = []
        for t, picker in per_track.items():
            for _, (pf, j, c) in picker.chosen():
                pf.picked.add(t)
                todo.append((pf, j, c))
        whole = [item for _, item in (nobody.chosen() or anyframe.chosen())]
        for pf, _, _ in whole:
            pf.whole_picked = True
        self._people_image(todo)
        return seen, lambda: self._people_image(whole)  # the whole frames: only where no track is kept

    def _people_image(self, todo: list) -> None:
        """(frame, person index or None for the whole frame, crop or None where already done) -> probabilities."""
        todo = [item for item in todo if item[2] is not None]
        for (pf, j, _), p in zip(todo, self._leaf([c for _, _, c in todo])):
            if j is None:
                pf.whole = p
            else:
                pf.image[j] = p

    def _flush_people(self, pending: list) -> None:
        """Every crop's probabilities (``every_image``)."""
        leaf = iter(self._leaf([c for _, cs in pending for c in cs]))
        for pf, cs in pending:
            probs = [next(leaf) for _ in cs]
            if pf.boxes:
                pf.image = probs
            else:
                pf.whole = probs[0]
        pending.clear()

    def close(self) -> None:
        if self._people is not None:
            self._people.close()
            self._people = None

    def _decide(self, frames: list[FrameResult]) -> tuple[dict, dict]:
        h, leaves = self.h, self.h.leaves
        kp = np.stack([f.keypoints for f in frames])
        values = clip_statistics(kp, [f.time for f in frames], self.sk)  # ~1,000 numbers: one block, not a dict
        stats = pd.DataFrame(np.array([list(values.values())], dtype=float), columns=list(values))
        image = np.stack([f.image for f in ([f for f in frames if f.picked] or frames)])
        # a frame without the track has no crop of it: left out of the mean
        image_leaf = (np.nanmean(image, axis=0) if np.isnan(image).any() else image.mean(axis=0))[None]
        probs = {"image": {lv: image_leaf @ h.leaf_to_level(lv) for lv in h.levels}}
        inputs = {"clip_statistics": stats, "clip_sequence": [kp]}
        for name, b in self.clf.branches.items():
            if name != "image":
                probs[name] = b.predict_level_proba(inputs[b.input], h)
        fused_levels = self.clf.fusion.predict_proba(probs)
        fused = fused_levels[h.leaf_level]
        leaf, rule = leaves[int(fused[0].argmax())], ""
        if self.rules is not None and self.rules.rules:
            decided, names = self.rules.apply(fused, leaves, stats)
            if decided[0] is not None:
                leaf, rule = decided[0], names[0]
        columns = prediction_columns([leaf], fused, h, [rule], {name: p[h.leaf_level] for name, p in probs.items()}, TOP_K)
        row: dict = {}
        for col, values in columns.items():
            row[col] = values[0]
            if col == "rule" and rule:  # the statistic that decided, beside the rule's name
                stat = next(r.statistic for r in self.rules.rules if r.name == rule)
                row["rule_statistic"] = f"{stat}={float(stats[stat].iloc[0]):.4g}"
        row["frames"] = len(frames)
        row["found"] = round(float(stats["found"].iloc[0]), 3)
        return row, {**probs, "fused": fused_levels}


def split_tracks(seen: list[PeopleFrame], empty: np.ndarray, n_classes: int) -> list[list[FrameResult]]:
    """The clips of the tracks seen in at least ``MIN_TRACK_SHARE`` of the frames (and 2), numbered by their
    first frame, then left to right; each holds every sampled frame (those without the track: no keypoints)."""
    first: dict[int, tuple[int, float]] = {}
    count: dict[int, int] = {}
    for i, pf in enumerate(seen):
        for t, box in zip(pf.ids, pf.boxes):
            if t is not None:
                first.setdefault(t, (i, box[0]))
                count[t] = count.get(t, 0) + 1
    need = max(2, MIN_TRACK_SHARE * len(seen))
    kept = sorted((t for t in first if count[t] >= need or len(seen) < 2), key=lambda t: first[t])
    return [tracks_frames(seen, t, empty, n_classes) for t in kept]


def tracks_frames(seen: list[PeopleFrame], track: int | None, empty: np.ndarray, n_classes: int) -> list[FrameResult]:
    """Track ``track``'s frames (None: the whole frames, no track being kept); a frame without the track has
    no crop of it, and no image probabilities (NaN)."""
    n = n_classes
    out = []
    for pf in seen:
        j = pf.ids.index(track) if track is not None and track in pf.ids else None
        if j is not None:
            image = pf.image[j] if pf.image[j] is not None else np.full(n, np.nan)
            out.append(FrameResult(pf.index, pf.time, "ok", pf.keypoints[j], image, pf.boxes[j],
                                   picked=track in pf.picked))
        else:
            image = pf.whole if track is None and pf.whole is not None else np.full(n, np.nan)
            out.append(FrameResult(pf.index, pf.time, pf.status if pf.status != "ok" else "no_person", empty, image,
                                   picked=track is None and pf.whole_picked))
    return out


def smooth(probs: np.ndarray, window: int, causal: bool = False) -> np.ndarray:
    """Moving average of per-frame probabilities over ``window`` frames (centred, or the last ones)."""
    probs = np.asarray(probs, float)
    out = np.empty_like(probs)
    half = window // 2
    gaps = np.isnan(probs).any()  # a track's frames without it: left out of the average (all-NaN stays NaN)
    for i in range(len(probs)):
        lo, hi = (max(0, i - window + 1), i + 1) if causal else (max(0, i - half), min(len(probs), i + half + 1))
        if not gaps:
            out[i] = probs[lo:hi].mean(0)
        else:
            part = probs[lo:hi]
            ok = np.isfinite(part).all(1)
            out[i] = part[ok].mean(0) if ok.any() else np.nan
    return out


def window_frames(sampling: Sampling, rate: float | None = None) -> int:
    """About one second of sampled frames, odd, at least 1."""
    per_s = rate or sampling.fps
    w = max(1, int(round(per_s)))
    return w if w % 2 else w + 1


def per_frame_table(res: ClipResult, leaves: Sequence[str], window: int, sequence=None) -> pd.DataFrame:
    """A clip's frames: the image branch's label, smoothed over ``window``; with the run's ``sequence`` branch,
    its running label over the last frames (``motion_label``, empty until a skeleton was seen)."""
    if not res.frames:
        return pd.DataFrame()
    p = np.stack([f.image for f in res.frames])
    s = smooth(p, window)
    raw, sm = np.nan_to_num(p, nan=-1).argmax(1), np.nan_to_num(s, nan=-1).argmax(1)
    has, has_s = np.isfinite(p).all(1), np.isfinite(s).all(1)  # False: the track not in (or near) this frame
    table = pd.DataFrame({"clip": str(res.sample.path), "track": res.track, "frame": [f.index for f in res.frames],
                         "time": [f.time for f in res.frames], "status": [f.status for f in res.frames],
                         "label": [leaves[i] if ok else "" for i, ok in zip(raw, has)],
                         "confidence": p[np.arange(len(p)), raw].round(4),
                         "smoothed_label": [leaves[i] if ok else "" for i, ok in zip(sm, has_s)],
                         "smoothed_confidence": s[np.arange(len(s)), sm].round(4)})
    if sequence is not None:
        m = sequence.running_proba(np.stack([f.keypoints for f in res.frames]), times=[f.time for f in res.frames])
        seen = np.isfinite(m).all(1)
        best = np.nan_to_num(m).argmax(1)
        table["motion_label"] = [sequence.classes_[i] if ok else "" for i, ok in zip(best, seen)]
        table["motion_confidence"] = np.where(seen, np.nan_to_num(m).max(1), np.nan).round(4)
    return table


def segments(table: pd.DataFrame) -> pd.DataFrame:
    """Runs of one smoothed label, per clip and track: clip, track, label, start, end (seconds), frames (a
    track's frames without a label, where it was not seen, are no segment)."""
    rows = []
    if "track" not in table:
        table = table.assign(track=0)
    for (clip, track), t in table.groupby(["clip", "track"], sort=False):
        labels, times = t["smoothed_label"].fillna("").tolist(), t["time"].tolist()
        start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or labels[i] != labels[start]:
                if labels[start] != "":
                    rows.append({"clip": clip, "track": track, "label": labels[start], "start": times[start],
                                 "end": times[i] if i < len(labels) else times[-1], "frames": i - start})
                start = i
    return pd.DataFrame(rows, columns=["clip", "track", "label", "start", "end", "frames"])


# --------------------------------------------------------------------------- the job


def predict_clips(inputs: str | Path, run: str | Path, out: str | Path, *, rules=None, no_rules: bool = False,
                  per_frame: str | Path | None = None, annotate: str | Path | None = None,
                  sampling: Sampling | None = None, cache_dir=None, show_progress: bool = True,
                  partial: bool = False, engine: str | None = None, max_people: int = 1,
                  tracker: str | None = None) -> dict:
    """predictions.csv with one row per clip (photos: a clip of one frame), or with ``max_people`` > 1 one per
    person tracked in it (``track``); ``per_frame``: the frame table (and ``<stem>_segments.csv`` beside it);
    ``annotate``: the first clip drawn as an .mp4, every person's box, track and running label."""
    from ..progress import progress_bar

    pred = ClipPredictor(run, rules=rules, use_rules=not no_rules, sampling=sampling, cache_dir=cache_dir,
                         partial=partial, engine=engine, max_people=max_people, tracker=tracker)
    if not pred.is_clip_run:
        raise RunError(f"{run}: not a clip run (fitted on photos); fit on clips (videos or frame folders) to "
                       "predict clips.")
    pred.every_image = bool(per_frame or annotate)
    samples = list_samples(inputs, frames_folder=True)
    leaves, rows, tables, counts = pred.h.leaves, [], [], {}
    window = window_frames(pred.sampling)
    annotated = None
    with progress_bar("clips", total=len(samples), enabled=show_progress) as advance:
        for s in samples:
            results = pred.predict_tracks(s)
            rows.extend(_clip_row(res) for res in results)
            counts[results[0].status] = counts.get(results[0].status, 0) + 1
            if per_frame or annotate:
                ts = [per_frame_table(res, leaves, window, pred.clf.branches.get("sequence")) for res in results]
                if per_frame:
                    tables.extend(t for t in ts if len(t))
                if annotate and annotated is None and len(ts[0]) and s.kind != "photo":
                    from ..viz.annotate import annotate_clip

                    annotate_clip(pred, s, results, ts, annotate)
                    annotated = str(annotate)
            advance()
    pred.close()
    frame = pd.DataFrame(rows)
    if pred.clf.missing_folds:
        frame["ensemble"] = f"partial: folds {pred.clf.missing_folds} missing"
    atomic.write_csv(out, frame)
    result = {"clips": len(samples), "rows": len(rows), "status": counts, "out": str(out), "annotated": annotated,
              "rules": str(pred.rules.path) if pred.rules is not None and pred.rules.path else None}
    if per_frame:
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        atomic.write_csv(per_frame, table)
        seg = Path(per_frame).with_name(Path(per_frame).stem + "_segments.csv")
        atomic.write_csv(seg, segments(table) if len(table) else pd.DataFrame())
        result.update(per_frame=str(per_frame), segments=str(seg), smoothing=f"centred moving average, {window} frames")
    return result


def _clip_row(res: ClipResult) -> dict:
    """A clip's row of predictions.csv."""
    s = res.sample
    return {"path": str(s.path), "kind": s.kind, "track": res.track, "status": res.status, "reason": res.reason,
            **res.row}


def evaluation_frame(data: str | Path, run: str | Path, *, show_progress: bool = True) -> tuple[pd.DataFrame, Hierarchy]:
    """``evaluate DATA --model RUN`` for a clip run: one row per clip of the labelled clip folder ``data``, with
    predictions.csv's columns (rules included), ``true_<level>``, and every branch's probabilities and labels in
    the oof_predictions.csv layout (``<branch>:<level>:<class>``, ``pred_*``, ``rules_<level>``)."""
    from ..data.clips import load_clip_dataset
    from ..progress import progress_bar
    from ..run.predtable import rules_column, table

    pred = ClipPredictor(run)
    ds = load_clip_dataset(data)
    h = pred.h
    unknown = sorted(set(ds.labels) - set(h.leaves))
    if unknown:
        raise DatasetError(f"{data}: classes {unknown} are not classes of the model {run}.")
    rows, probs = [], []
    with progress_bar("clips", total=len(ds), enabled=show_progress) as advance:
        for s in ds.samples:
            res = pred.predict_clip(s)
            rows.append(_clip_row(res))
            probs.append(res.probs)
            advance()
    names = [*pred.clf.branches, "fused"]
    nan = {lv: np.full((1, len(h.classes(lv))), np.nan) for lv in h.levels}  # a clip that could not be read
    branches = {n: {lv: np.concatenate([(p or {n: nan})[n][lv] for p in probs]) for lv in h.levels} for n in names}
    truth = {lv: [h.ancestor(y, lv) for y in ds.labels] for lv in h.levels}
    frame = pd.concat([pd.DataFrame(rows), table(h, {}, truth, branches)], axis=1)
    for lv in h.levels:
        frame[rules_column(lv)] = [r.get(lv) for r in rows]  # the label after the rules (predictions.csv's)
    return frame, h
