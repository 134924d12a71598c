"""Drawing on frames: the skeleton and the running label, for ``predict --annotate`` and the camera loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.video import VideoWriter, probe
from ..skeletons import Skeleton

BONE = (0, 230, 120)
JOINT = (255, 80, 40)


def _font(height: int):
    size = max(12, height // 22)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


TRACK_COLOURS = [(255, 200, 0), (0, 170, 255), (255, 80, 200), (120, 255, 80), (255, 120, 40), (160, 120, 255)]


def draw(rgb: np.ndarray, kp: np.ndarray | None, skeleton: Skeleton, text: str) -> np.ndarray:
    """A copy of ``rgb`` with the skeleton's bones and joints (pixel keypoints; None: none) and ``text``."""
    return draw_people(rgb, [Shown(None, None, kp, "")], skeleton, text)


class Shown:
    """One person drawn on a frame: track id (None: the one person, no box), box, pixel keypoints, label."""

    def __init__(self, track: int | None, box, keypoints: np.ndarray | None, label: str) -> None:
        self.track, self.box, self.keypoints, self.label = track, box, keypoints, label


def draw_people(rgb: np.ndarray, people: list[Shown], skeleton: Skeleton, text: str) -> np.ndarray:
    """A copy of ``rgb`` with every person's skeleton and, for a tracked one, its box (a colour per track) with
    ``#track label`` above it; ``text`` top left."""
    image = Image.fromarray(rgb)
    d = ImageDraw.Draw(image)
    line = max(2, image.height // 180)
    font = _font(image.height)
    for p in people:
        kp = p.keypoints
        if kp is not None and np.isfinite(kp).all():
            a, b = skeleton.edge_index()
            for i, j in zip(a, b):
                d.line([tuple(kp[i, :2]), tuple(kp[j, :2])], fill=BONE, width=line)
            for x, y in kp[:, :2]:
                d.ellipse([x - line, y - line, x + line, y + line], fill=JOINT)
        if p.track is not None and p.box is not None:
            colour = TRACK_COLOURS[p.track % len(TRACK_COLOURS)]
            x0, y0, x1, y1 = (float(v) for v in p.box)
            d.rectangle([x0, y0, x1, y1], outline=colour, width=line)
            _label(d, (x0 + line, y0 + line), f"#{p.track} {p.label}".strip(), font, colour)
    if text:
        _label(d, (8, 8), text, font, (0, 0, 0), (255, 255, 255))
    return np.asarray(image)


def _label(d: ImageDraw.ImageDraw, at: tuple, text: str, font, fill, ink=(0, 0, 0)) -> None:
    box = d.textbbox(at, text, font=font)
    width = d.im.size[0]
    if box[2] + 4 > width:  # kept inside the frame: moved left as far as it reaches past the right edge
        at = (max(4, at[0] - (box[2] + 4 - width)), at[1])
        box = d.textbbox(at, text, font=font)
    d.rectangle([box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4], fill=fill)
    d.text(at, text, fill=ink, font=font)


def annotate_clip(pred, sample, results, tables, out: str | Path) -> None:
    """Every frame of the clip (decoded a second time, one at a time) with, per person tracked (``results`` and
    their per-frame ``tables``), the box, skeleton and smoothed label of its latest sampled frame; an .mp4 at the
    clip's frame rate. One untracked clip (a single-person run): its skeleton, label top left."""
    rate = probe(sample.path).rate if sample.kind == "video" else pred.sampling.fps
    tracked = getattr(pred, "tracks_people", False)
    tracks = []
    for res, table in zip(results, tables):
        motion = table["motion_label"] if "motion_label" in table else [""] * len(table)
        labels = dict(zip(table["frame"], zip(table["smoothed_label"], table["smoothed_confidence"], motion)))
        tracks.append((res.track, {f.index: f for f in res.frames}, labels))
    times = dict(zip(tables[0]["frame"], tables[0]["time"]))
    current: dict[int, Shown] = {}
    writer, text = None, ""
    try:
        for fr in pred.frames(sample, every=True):
            if fr.index in times:
                text = f"t={times[fr.index]:.1f}s"
                for track, frames, labels in tracks:
                    f, (label, conf, moving) = frames[fr.index], labels[fr.index]
                    shown = f"{label} {conf:.2f}" if isinstance(label, str) and label else ""
                    if tracked and isinstance(moving, str) and moving:
                        shown += f"  motion: {moving}"  # the sequence branch's running label
                    current[track] = Shown(track if tracked else None, f.box, f.keypoints, shown)
                if not tracked:
                    text = f"{current[tracks[0][0]].label}  {text}"
            if not current:
                continue
            if writer is None:
                writer = VideoWriter(out, rate, fr.rgb.shape[1], fr.rgb.shape[0])
            writer.write(draw_people(fr.rgb, list(current.values()), pred.sk, text))
    finally:
        if writer is not None:
            writer.close()
