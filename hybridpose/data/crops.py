"""Person crops: the keypoint box, squared and widened by a margin.

The margin is a fraction of the box's longer side added on every side. Inference uses a fixed
margin; training draws one at random from a range (a published trick against overfitting to
one framing). Photos without a person fall back to the whole image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_MARGIN = 0.15
TRAIN_MARGIN_RANGE = (0.05, 0.35)


@dataclass(frozen=True)
class Square:
    cx: float
    cy: float
    side: float

    @property
    def x0(self) -> float:
        return self.cx - self.side / 2

    @property
    def y0(self) -> float:
        return self.cy - self.side / 2

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Map (..., 2+) pixel coordinates of the photo into a ``size`` x ``size`` crop."""
        out = np.array(points, dtype=np.float64, copy=True)
        out[..., 0] = (out[..., 0] - self.x0) / self.side * size
        out[..., 1] = (out[..., 1] - self.y0) / self.side * size
        return out


def crop_square(box: tuple[float, float, float, float] | np.ndarray | None, width: int, height: int,
                margin: float = DEFAULT_MARGIN) -> Square:
    """Square around ``box`` (x0, y0, x1, y1) with ``margin``; the whole photo when box is None/NaN."""
    if box is None or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        box = (0.0, 0.0, float(width), float(height))
        margin = 0.0
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    return Square((x0 + x1) / 2, (y0 + y1) / 2, max(side, 1.0))


def random_margin(rng: np.random.Generator, low: float = TRAIN_MARGIN_RANGE[0],
                  high: float = TRAIN_MARGIN_RANGE[1]) -> float:
    return float(rng.uniform(low, high))


def cut(image: Image.Image, square: Square, size: int) -> Image.Image:
    """Crop ``square`` out of ``image`` (padding outside with the photo's mean colour), resize to ``size``."""
    # reducing gaps: a box reduction first, then the filter (PIL: >= 3 is indistinguishable from the full
    # filter); a 2,000 px photo cost more here than its pose
    fill = tuple(int(v) for v in np.asarray(image.resize((8, 8), reducing_gap=2.0)).reshape(-1, 3).mean(0))
    left, top = int(round(square.x0)), int(round(square.y0))
    side = int(round(square.side))
    canvas = Image.new("RGB", (side, side), fill)
    src = image.crop((max(left, 0), max(top, 0), min(left + side, image.width), min(top + side, image.height)))
    canvas.paste(src, (max(-left, 0), max(-top, 0)))
    if side < size:
        return canvas.resize((size, size), Image.BILINEAR)
    return canvas.resize((size, size), Image.LANCZOS, reducing_gap=3.0)


def crop_person(image: Image.Image, box, margin: float = DEFAULT_MARGIN, size: int = 224) -> Image.Image:
    return cut(image, crop_square(box, image.width, image.height, margin), size)


def crop_photo(image: Image.Image, box, kp: np.ndarray | None, margin: float, size: int,
               n_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop (size x size x 3 uint8) around ``box`` and the keypoints in its pixels (x, y, visibility).

    Without keypoints (none found) the keypoints are all zero and the crop is the whole photo."""
    square = crop_square(box, image.width, image.height, margin)
    crop = np.asarray(cut(image, square, size))
    if kp is None or not np.isfinite(kp[:, :2]).any():  # a two-hand row keeps the hand it found (NaN: the other)
        return crop, np.zeros((n_keypoints, 3))
    return crop, np.concatenate([square.to_crop(kp[:, :2], size), kp[:, 3:4]], axis=1)
