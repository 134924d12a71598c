"""The ``Skeleton`` description: keypoint names, bones, mirror pairs, features, crop box, pose model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

FeatureFn = Callable[[np.ndarray], pd.DataFrame]
SizeFn = Callable[[np.ndarray], np.ndarray]
BoxFn = Callable[[np.ndarray, int, int], "tuple[float, float, float, float]"]
VALUES = "xyzv"  # per keypoint: x, y (pixels), z, visibility


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoints: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]          # bones: drawn, and the body region of CAM supervision
    mirror_pairs: tuple[tuple[str, str], ...]    # keypoints that swap when the photo is mirrored
    features: FeatureFn                          # (N, n, 4) pixel keypoints -> named feature columns
    estimator: str = ""                          # pose front end that finds it (pose.ESTIMATORS)
    box: BoxFn | None = None                     # crop box from pixel keypoints; default: the visible points
    # Reference length of the CAM body mask: distance between the centroids of these two groups.
    scale: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    mask_width: float = 0.22                     # limb thickness, as a fraction of the reference length
    # A hand skeleton: v holds P(right hand) instead of a visibility, so a mirror turns v into 1 - v
    # and every found point counts as visible.
    handed: bool = False
    custom: bool = False                         # described by the user (skeletons/custom.py), stored in the run
    parts: int = 1                               # equal consecutive parts that may each be missing (two hands: 2)
    description: str = ""
    # Keypoints whose path through the frame gets its own clip statistics (direction, turning, reversals; see
    # pose/temporal.py); empty: the first four. A few, not all: every one adds columns to search.
    track: tuple[str, ...] = ()
    # (N, n, 4) pixel keypoints -> (N,) the skeleton's size in pixels (palm, torso), the unit of motion;
    # default: the points' spread about their centroid.
    size: SizeFn | None = None
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {n: i for i, n in enumerate(self.keypoints)})
        for a, b in (*self.edges, *self.mirror_pairs, *((t, t) for t in self.track)):
            for n in (a, b):
                if n not in self.index:
                    raise ValueError(f"skeleton {self.name!r}: unknown keypoint {n!r}")

    @property
    def n(self) -> int:
        return len(self.keypoints)

    @property
    def columns(self) -> list[str]:
        """Keypoint columns of the poses table."""
        return [f"{n}_{c}" for n in self.keypoints for c in VALUES]

    @property
    def mirror_index(self) -> np.ndarray:
        """Keypoint i of a mirrored photo is keypoint mirror_index[i] of the original."""
        out = np.arange(self.n)
        for a, b in self.mirror_pairs:
            out[self.index[a]], out[self.index[b]] = self.index[b], self.index[a]
        return out

    def edge_index(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([self.index[a] for a, _ in self.edges]), np.array([self.index[b] for _, b in self.edges]))

    def scale_index(self) -> tuple[list[int], list[int]]:
        return [self.index[n] for n in self.scale[0]], [self.index[n] for n in self.scale[1]]

    def mirror_keypoints(self, kp: np.ndarray, width: float | np.ndarray) -> np.ndarray:
        """Keypoints of the horizontally flipped photo: x -> width - x, left and right swapped."""
        out = np.array(kp, dtype=np.float64, copy=True)[..., self.mirror_index, :]
        out[..., 0] = width - out[..., 0]
        if self.handed:
            out[..., 3] = 1.0 - out[..., 3]
        return out

    def to_config(self) -> str | dict:
        """What a run's config.json records: a built-in's name, or a described skeleton's description."""
        if not self.custom:
            return self.name
        return {"name": self.name, "keypoints": list(self.keypoints), "edges": [list(e) for e in self.edges],
                "mirror_pairs": [list(p) for p in self.mirror_pairs]}

    def found(self, kp: np.ndarray) -> np.ndarray:
        """(N,) rows of (N, n, 4) keypoints that are complete, but for whole missing ``parts`` (a two-hand row may
        miss one hand); a row with no point, or a part with only some of its points, is not found."""
        ok = np.isfinite(np.asarray(kp, dtype=np.float64)[..., :2]).all(axis=-1)
        parts = ok.reshape(*ok.shape[:-1], self.parts, -1)
        whole = parts.all(axis=-1)
        return whole.any(axis=-1) & (whole | ~parts.any(axis=-1)).all(axis=-1)

    def missing_parts(self, kp: np.ndarray) -> np.ndarray:
        """(..., n) points of (..., n, 4) keypoints that belong to a part with no point at all."""
        ok = np.isfinite(np.asarray(kp, dtype=np.float64)[..., :2]).all(axis=-1)
        parts = ok.reshape(*ok.shape[:-1], self.parts, -1)
        return np.repeat(~parts.any(axis=-1), parts.shape[-1], axis=-1)

    def feature_names(self) -> list[str]:
        probe = np.arange(self.n * 4, dtype=np.float64).reshape(1, self.n, 4) + 1.0
        return list(self.features(probe).columns)

    def tracked(self) -> tuple[str, ...]:
        """The keypoints whose path gets its own clip statistics."""
        return self.track or self.keypoints[:4]

    def pixel_size(self, kp: np.ndarray) -> np.ndarray:
        """(N,) the skeleton's size in pixels in each row of (N, n, 4) keypoints (NaN where not found)."""
        kp = np.asarray(kp, dtype=np.float64).reshape(-1, self.n, 4)
        if self.size is not None:
            out = np.asarray(self.size(kp), dtype=np.float64)
        else:
            xy = kp[..., :2]
            with np.errstate(all="ignore"):
                centre = np.nanmean(xy, axis=1, keepdims=True) if len(xy) else xy[:, :1]
                out = np.sqrt(np.nansum((xy - centre) ** 2, axis=-1).sum(-1) / np.isfinite(xy[..., 0]).sum(-1))
        return np.where(self.found(kp) & (out > 1e-6), out, np.nan)

    def frame_positions(self, kp: np.ndarray, size: tuple[float, float] | np.ndarray | None = None) -> pd.DataFrame:
        """Where the tracked keypoints are in the frame: ``frame_<name>_x``, ``frame_<name>_y`` in [0, 1] of the
        frame's width and height (y up), from (N, n, 4) pixel keypoints and the frame's (width, height) (one pair,
        or one per row); NaN without a size. Clip statistics read them; the photo branches do not (a photo's
        class does not depend on where in the frame it was taken)."""
        kp = np.asarray(kp, dtype=np.float64).reshape(-1, self.n, 4)
        wh = np.full((len(kp), 2), np.nan) if size is None else \
            np.broadcast_to(np.asarray(size, dtype=np.float64).reshape(-1, 2), (len(kp), 2))
        wh = np.where(wh > 0, wh, np.nan)
        cols: dict[str, np.ndarray] = {}
        for name in self.tracked():
            i = self.index[name]
            cols[f"frame_{name}_x"] = kp[:, i, 0] / wh[:, 0]
            cols[f"frame_{name}_y"] = 1.0 - kp[:, i, 1] / wh[:, 1]
        return pd.DataFrame(cols, index=range(len(kp)))

    def keypoint_box(self, kp: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
        """The box that crops are cut around, inside the image."""
        from .geometry import visible_box

        return (self.box or visible_box)(kp, width, height)

    def empty(self, rows: int = 1) -> np.ndarray:
        """(rows, n, 4) of NaN: no keypoints found."""
        return np.full((rows, self.n, 4), np.nan)
