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


def draw(rgb: np.ndarray, kp: np.ndarray | None, skeleton: Skeleton, text: str) -> np.ndarray:
    """A copy of ``rgb`` with the skeleton's bones and joints (pixel keypoints; None: none) and ``text``."""
    image = Image.fromarray(rgb)
    d = ImageDraw.Draw(image)
    line = max(2, image.height // 180)
    if kp is not None and np.isfinite(kp).all():
        a, b = skeleton.edge_index()
        for i, j in zip(a, b):
            d.line([tuple(kp[i, :2]), tuple(kp[j, :2])], fill=BONE, width=line)
        for x, y in kp[:, :2]:
            d.ellipse([x - line, y - line, x + line, y + line], fill=JOINT)
    font = _font(image.height)
    box = d.textbbox((8, 8), text, font=font)
    d.rectangle([box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4], fill=(0, 0, 0))
    d.text((8, 8), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def annotate_clip(pred, sample, res, table, out: str | Path) -> None:
    """Every frame of the clip (decoded a second time, one at a time) with the skeleton of the latest sampled
    frame and its smoothed label; an .mp4 at the clip's frame rate."""
    rate = probe(sample.path).rate if sample.kind == "video" else pred.sampling.fps
    by_index = {f.index: f for f in res.frames}
    labels = dict(zip(table["frame"], zip(table["smoothed_label"], table["smoothed_confidence"], table["time"])))
    writer, current, text = None, None, ""
    try:
        for fr in pred.frames(sample, every=True):
            if fr.index in by_index:
                current = by_index[fr.index]
                label, conf, t = labels[fr.index]
                text = f"{label} {conf:.2f}  t={t:.1f}s"
            if current is None:
                continue
            if writer is None:
                writer = VideoWriter(out, rate, fr.rgb.shape[1], fr.rgb.shape[0])
            writer.write(draw(fr.rgb, current.keypoints, pred.sk, text))
    finally:
        if writer is not None:
            writer.close()
