"""The ``Skeleton`` description: keypoint names, bones, mirror pairs, features, crop box, pose model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

FeatureFn = Callable[[np.ndarray], pd.DataFrame]
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
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {n: i for i, n in enumerate(self.keypoints)})
        for a, b in (*self.edges, *self.mirror_pairs):
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

    def keypoint_box(self, kp: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
        """The box that crops are cut around, inside the image."""
        from .geometry import visible_box

        return (self.box or visible_box)(kp, width, height)

    def empty(self, rows: int = 1) -> np.ndarray:
        """(rows, n, 4) of NaN: no keypoints found."""
        return np.full((rows, self.n, 4), np.nan)
