"""Fusion of the two branches and hierarchy-consistent labels.

Per level, each branch is first calibrated by temperature scaling (a CNN trained with label
smoothing is under-confident, boosted trees are over-confident: compared raw, the over-confident
branch always wins). The calibrated branches are then pooled geometrically:
``log p = w log p_image + (1 - w) log p_keypoint`` (renormalised), with w chosen by out-of-fold
log-loss. The keypoint branch's leaf probabilities are summed up the hierarchy for coarser levels;
where it abstains (no person) the image branch alone decides. The final leaf maximises the product
of its ancestors' level probabilities, so the labels of all levels always agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from .hierarchy import Hierarchy

WEIGHT_GRID = np.round(np.linspace(0, 1, 21), 2)
EPS = 1e-9


def to_level(leaf_probs: np.ndarray, hierarchy: Hierarchy, level: str) -> np.ndarray:
    return leaf_probs @ hierarchy.leaf_to_level(level)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1)).mean())


def _from_log(logp: np.ndarray) -> np.ndarray:
    """Rows of unnormalised log-probabilities -> probabilities (numerically stable)."""
    q = np.exp(logp - logp.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True)


def tempered(p: np.ndarray, t: float) -> np.ndarray:
    return _from_log(np.log(np.clip(p, EPS, 1)) / t)


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda t: _nll(tempered(p, t), y), bounds=(0.05, 20.0), method="bounded")
    return float(res.x)


def pool(p_image: np.ndarray, p_keypoint: np.ndarray, w: float) -> np.ndarray:
    return _from_log(w * np.log(np.clip(p_image, EPS, 1)) + (1 - w) * np.log(np.clip(p_keypoint, EPS, 1)))


@dataclass
class LevelFusion:
    weight: float = 0.5          # image-branch weight in the geometric pool
    t_image: float = 1.0
    t_keypoint: float = 1.0


@dataclass
class Fusion:
    hierarchy: Hierarchy
    levels: dict[str, LevelFusion] = field(default_factory=dict)

    def fit(self, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray, y_leaf: np.ndarray) -> "Fusion":
        """Temperatures and weight per level, by log-loss on out-of-fold predictions."""
        ok = np.isfinite(keypoint_leaf).all(1)
        for level in self.hierarchy.levels:
            y = self.hierarchy.leaf_to_level(level).argmax(1)[y_leaf]
            kp = to_level(np.nan_to_num(keypoint_leaf), self.hierarchy, level)
            if ok.sum() <= 1:  # the keypoint branch (almost) never answered: image branch alone
                self.levels[level] = LevelFusion(1.0, fit_temperature(image[level], y), 1.0)
                continue
            lf = LevelFusion(t_image=fit_temperature(image[level][ok], y[ok]), t_keypoint=fit_temperature(kp[ok], y[ok]))
            pi, pk = tempered(image[level][ok], lf.t_image), tempered(kp[ok], lf.t_keypoint)
            losses = [_nll(pool(pi, pk, w), y[ok]) for w in WEIGHT_GRID]
            lf.weight = float(WEIGHT_GRID[int(np.argmin(losses))])
            self.levels[level] = lf
        return self

    def combine(self, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray) -> dict[str, np.ndarray]:
        ok = np.isfinite(keypoint_leaf).all(1)
        out = {}
        for level in self.hierarchy.levels:
            lf = self.levels.get(level, LevelFusion())
            pi = tempered(image[level], lf.t_image)
            pk = tempered(to_level(np.nan_to_num(keypoint_leaf, nan=1.0), self.hierarchy, level), lf.t_keypoint)
            out[level] = np.where(ok[:, None], pool(pi, pk, lf.weight), pi)
        return out

    def consistent(self, level_probs: dict[str, np.ndarray]) -> np.ndarray:
        """Leaf distribution q(leaf) proportional to the product over levels of p_level(ancestor)."""
        return _from_log(sum(np.log(np.clip(level_probs[lv], EPS, 1)) @ self.hierarchy.leaf_to_level(lv).T
                             for lv in self.hierarchy.levels))

    def predict_proba(self, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray) -> dict[str, np.ndarray]:
        """Hierarchy-consistent probabilities of every level."""
        q = self.consistent(self.combine(image, keypoint_leaf))
        return {lv: to_level(q, self.hierarchy, lv) for lv in self.hierarchy.levels}

    def to_dict(self) -> dict:
        return {"levels": {lv: vars(lf) for lv, lf in self.levels.items()},
                "note": "per level: p_image^(1/t_image) and p_keypoint^(1/t_keypoint) renormalised, "
                        "then log p = weight * log p_image + (1 - weight) * log p_keypoint"}

    @classmethod
    def from_dict(cls, hierarchy: Hierarchy, d: dict) -> "Fusion":
        return cls(hierarchy, {lv: LevelFusion(**v) for lv, v in d["levels"].items()})


def cross_fitted(hierarchy: Hierarchy, image: dict[str, np.ndarray], keypoint_leaf: np.ndarray, y_leaf: np.ndarray,
                 folds: np.ndarray) -> dict[str, np.ndarray]:
    """Out-of-fold fused probabilities: each fold fused with parameters fitted on the other folds."""
    out = {lv: np.zeros_like(image[lv]) for lv in hierarchy.levels}
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        fusion = Fusion(hierarchy).fit({lv: p[tr] for lv, p in image.items()}, keypoint_leaf[tr], y_leaf[tr])
        part = fusion.predict_proba({lv: p[te] for lv, p in image.items()}, keypoint_leaf[te])
        for lv in hierarchy.levels:
            out[lv][te] = part[lv]
    return out
