"""Fusion of the two branches and hierarchy-consistent labels.

Per level, fused = w * image + (1 - w) * keypoint (the keypoint branch's leaf probabilities
summed up the hierarchy); w is fitted on out-of-fold predictions. Where the keypoint branch
abstains (no person), the image branch alone decides. The final leaf maximises the product of
the level probabilities of its ancestors, so the labels of all levels always agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hierarchy import Hierarchy

WEIGHT_GRID = np.round(np.linspace(0, 1, 21), 2)


def to_level(leaf_probs: np.ndarray, hierarchy: Hierarchy, level: str) -> np.ndarray:
    return leaf_probs @ hierarchy.leaf_to_level(level)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-6, 1)).mean())


@dataclass
class Fusion:
    hierarchy: Hierarchy
    weights: dict[str, float] = field(default_factory=dict)  # image-branch weight per level

    def fit(self, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray, y_leaf: np.ndarray) -> "Fusion":
        """Choose each level's weight by out-of-fold log-loss on the photos where both branches answered."""
        ok = np.isfinite(keypoint_leaf).all(1)
        for level in self.hierarchy.levels:
            y = self.hierarchy.leaf_to_level(level).argmax(1)[y_leaf]
            kp = to_level(np.nan_to_num(keypoint_leaf), self.hierarchy, level)
            if not ok.any():
                self.weights[level] = 1.0
                continue
            losses = [_nll(w * image[level][ok] + (1 - w) * kp[ok], y[ok]) for w in WEIGHT_GRID]
            self.weights[level] = float(WEIGHT_GRID[int(np.argmin(losses))])
        return self

    def combine(self, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray) -> dict[str, np.ndarray]:
        ok = np.isfinite(keypoint_leaf).all(1)
        out = {}
        for level in self.hierarchy.levels:
            w = self.weights.get(level, 0.5)
            kp = to_level(np.nan_to_num(keypoint_leaf), self.hierarchy, level)
            out[level] = np.where(ok[:, None], w * image[level] + (1 - w) * kp, image[level])
        return out

    def consistent(self, level_probs: dict[str, np.ndarray]) -> np.ndarray:
        """Leaf distribution q(leaf) proportional to the product over levels of p_level(ancestor)."""
        log_q = sum(np.log(np.clip(level_probs[lv], 1e-9, 1)) @ self.hierarchy.leaf_to_level(lv).T
                    for lv in self.hierarchy.levels)
        log_q -= log_q.max(1, keepdims=True)
        q = np.exp(log_q)
        return q / q.sum(1, keepdims=True)

    def predict_proba(self, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray) -> dict[str, np.ndarray]:
        """Hierarchy-consistent probabilities of every level."""
        q = self.consistent(self.combine(image, keypoint_leaf))
        return {lv: to_level(q, self.hierarchy, lv) for lv in self.hierarchy.levels}

    def to_dict(self) -> dict:
        return {"weights_image": self.weights, "note": "fused = w * image + (1 - w) * keypoint, per level"}

    @classmethod
    def from_dict(cls, hierarchy: Hierarchy, d: dict) -> "Fusion":
        return cls(hierarchy, {k: float(v) for k, v in d["weights_image"].items()})
