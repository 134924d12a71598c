"""Fusion of a run's branches and hierarchy-consistent labels.

Per level, each branch is first calibrated by temperature scaling (a CNN trained with label
smoothing is under-confident, boosted trees are over-confident: compared raw, the over-confident
branch always wins). The calibrated branches are then pooled geometrically:
``log p = sum_b w_b log p_b`` (renormalised), with the weights chosen on a grid by out-of-fold
log-loss. Where a branch abstains (a row of NaN, e.g. no person found) the others decide, their
weights renormalised. The final leaf maximises the product of its ancestors' level probabilities,
so the labels of all levels always agree.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from . import atomic
from .data.hierarchy import Hierarchy
from .errors import RunError
from .run.crossfit import cross_fitted as _cross_fitted

WEIGHT_STEP = 0.05
EPS = 1e-9
BranchProbs = Mapping[str, Mapping[str, np.ndarray]]  # branch -> level -> rows x classes


def to_level(leaf_probs: np.ndarray, hierarchy: Hierarchy, level: str) -> np.ndarray:
    return leaf_probs @ hierarchy.leaf_to_level(level)


def nll(p: np.ndarray, y: np.ndarray) -> float:
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
    res = minimize_scalar(lambda t: nll(tempered(p, t), y), bounds=(0.05, 20.0), method="bounded")
    return float(res.x)


def weight_grid(n: int, step: float = WEIGHT_STEP) -> list[tuple[float, ...]]:
    """Weights on the simplex (they sum to 1), the first branch's weight rising slowest."""
    m = int(round(1 / step))
    return [tuple(round(c / m, 4) for c in (*head, m - sum(head)))
            for head in itertools.product(range(m + 1), repeat=n - 1) if sum(head) <= m]


def pool(probs: list[np.ndarray], weights: tuple[float, ...] | list[float]) -> np.ndarray:
    """Geometric pool of rows where every branch answered."""
    return _from_log(sum(w * np.log(np.clip(p, EPS, 1)) for p, w in zip(probs, weights)))


@dataclass
class LevelFusion:
    weights: dict[str, float] = field(default_factory=dict)        # branch -> weight in the geometric pool
    temperatures: dict[str, float] = field(default_factory=dict)   # branch -> temperature


@dataclass
class Fusion:
    hierarchy: Hierarchy
    levels: dict[str, LevelFusion] = field(default_factory=dict)

    def fit(self, branches: BranchProbs, y_leaf: np.ndarray, only: str | None = None) -> "Fusion":
        """Temperatures and weights per level, by log-loss on out-of-fold predictions.

        ``only``: that branch alone decides (weight 1), the others only where it abstains."""
        names = list(branches)
        ok = np.all([_answered(branches[b][self.hierarchy.leaf_level]) for b in names], axis=0)
        for level in self.hierarchy.levels:
            y = self.hierarchy.leaf_to_level(level).argmax(1)[y_leaf]
            self.levels[level] = self._fit_level(names, {b: branches[b][level] for b in names}, y, ok, only)
        return self

    @staticmethod
    def _fit_level(names: list[str], probs: dict[str, np.ndarray], y: np.ndarray, ok: np.ndarray,
                   only: str | None) -> LevelFusion:
        if ok.sum() <= 1:  # some branch (almost) never answered: the one answering most decides alone
            best = max(names, key=lambda b: _answered(probs[b]).sum())
            rows = _answered(probs[best])
            return LevelFusion({b: float(b == (only or best)) for b in names},
                               {b: fit_temperature(probs[b][rows], y[rows]) if b == best else 1.0 for b in names})
        temps = {b: fit_temperature(probs[b][ok], y[ok]) for b in names}
        if only is not None:
            return LevelFusion({b: float(b == only) for b in names}, temps)
        calibrated = [tempered(probs[b][ok], temps[b]) for b in names]
        grid = weight_grid(len(names))
        losses = [nll(pool(calibrated, w), y[ok]) for w in grid]
        best = grid[int(np.argmin(losses))]
        return LevelFusion(dict(zip(names, map(float, best))), temps)

    def combine(self, branches: BranchProbs) -> dict[str, np.ndarray]:
        """Fused probabilities per level (before hierarchy consistency)."""
        out = {}
        for level in self.hierarchy.levels:
            lf = self.levels[level]
            names = [b for b in lf.weights if b in branches]
            probs = [tempered(np.nan_to_num(branches[b][level], nan=1.0), lf.temperatures.get(b, 1.0)) for b in names]
            answered = np.stack([_answered(branches[b][level]) for b in names], 1)
            weights = np.array([lf.weights[b] for b in names])[None, :] * answered
            total = weights.sum(1, keepdims=True)
            # rows where only zero-weight branches answered: those branches, equally
            weights = np.where(total > 0, weights / np.where(total > 0, total, 1), answered / np.maximum(answered.sum(1, keepdims=True), 1))
            logp = sum(weights[:, [j]] * np.log(np.clip(p, EPS, 1)) for j, p in enumerate(probs))
            out[level] = _from_log(logp)
        return out

    def consistent(self, level_probs: dict[str, np.ndarray]) -> np.ndarray:
        """Leaf distribution q(leaf) proportional to the product over levels of p_level(ancestor)."""
        return _from_log(sum(np.log(np.clip(level_probs[lv], EPS, 1)) @ self.hierarchy.leaf_to_level(lv).T
                             for lv in self.hierarchy.levels))

    def predict_proba(self, branches: BranchProbs) -> dict[str, np.ndarray]:
        """Hierarchy-consistent probabilities of every level."""
        q = self.consistent(self.combine(branches))
        return {lv: to_level(q, self.hierarchy, lv) for lv in self.hierarchy.levels}

    def to_dict(self) -> dict:
        return {"levels": {lv: {"weights": lf.weights, "temperatures": lf.temperatures} for lv, lf in self.levels.items()},
                "note": "per level and branch b: p_b^(1/temperature_b) renormalised, then "
                        "log p = sum_b weight_b * log p_b over the branches that answered (weights renormalised)"}

    @classmethod
    def from_dict(cls, hierarchy: Hierarchy, d: dict) -> "Fusion":
        return cls(hierarchy, {lv: LevelFusion(dict(v["weights"]), dict(v["temperatures"])) for lv, v in d["levels"].items()})


def read_fusion(path: Path, hierarchy: Hierarchy, branches: Sequence[str], fix: str) -> Fusion:
    """A run's fusion.json, checked against its levels and branches; a RunError naming the file and ``fix``."""
    try:
        d = atomic.read_json(path)
    except ValueError:  # not JSON, or not UTF-8 text
        raise RunError(f"{path}: damaged (not JSON); {fix}.") from None
    problem = fusion_problem(d, hierarchy, branches)
    if problem:
        raise RunError(f"{path}: damaged ({problem}); {fix}.")
    return Fusion.from_dict(hierarchy, d)


def fusion_problem(d: object, hierarchy: Hierarchy, branches: Sequence[str]) -> str:
    """What is wrong with the content of a fusion.json ("" if nothing)."""
    levels = d.get("levels") if isinstance(d, dict) else None
    if not isinstance(levels, dict):
        return "no mapping of levels"
    for lv in hierarchy.levels:
        part = levels.get(lv)
        if not isinstance(part, dict):
            return f"nothing for level {lv!r}"
        for key, least in (("weights", 0.0), ("temperatures", EPS)):
            values = part.get(key)
            if not isinstance(values, dict) or not all(_number(v) and v >= least for v in values.values()):
                return f"level {lv!r}: {key} is not a mapping of branches to {'positive ' if least else ''}numbers"
        if not set(part["weights"]) & set(branches):
            return f"level {lv!r}: no weight for any of the branches {', '.join(branches)}"
    return ""


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _answered(p: np.ndarray) -> np.ndarray:
    return np.isfinite(p).all(1)


def subset(branches: BranchProbs, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {b: {lv: p[rows] for lv, p in levels.items()} for b, levels in branches.items()}


def cross_fitted(hierarchy: Hierarchy, branches: BranchProbs, y_leaf: np.ndarray, folds: np.ndarray,
                 only: str | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold fused probabilities: each fold fused with parameters fitted on the other folds."""
    def fit_predict(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
        fusion = Fusion(hierarchy).fit(subset(branches, train), y_leaf[train], only=only)
        return fusion.predict_proba(subset(branches, test))

    return _cross_fitted(folds, fit_predict)


@dataclass
class Selection:
    """What the out-of-fold comparison chose: the fusion of all branches, or one branch alone."""
    fusion: Fusion
    oof: dict[str, np.ndarray]          # cross-fitted probabilities of the choice, per level
    chosen: str                          # "fusion" or a branch name
    oof_nll: dict[str, float]            # leaf-level out-of-fold log-loss of every candidate

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "oof_leaf_log_loss": {k: round(v, 4) for k, v in self.oof_nll.items()}}


def select(hierarchy: Hierarchy, branches: BranchProbs, y_leaf: np.ndarray, folds: np.ndarray) -> Selection:
    """Fusion of all branches, unless one branch alone predicts better out of fold (leaf log-loss).

    On small data the fitted weights can be noise that makes the fusion worse than its best
    branch; each candidate is judged on the same cross-fitted predictions, the fusion winning ties."""
    candidates: list[str | None] = [None, *branches]
    oof = {c: cross_fitted(hierarchy, branches, y_leaf, folds, only=c) for c in candidates}
    losses = {c: nll(oof[c][hierarchy.leaf_level], y_leaf) for c in candidates}
    best = min(candidates, key=lambda c: (losses[c], c is not None))
    return Selection(Fusion(hierarchy).fit(branches, y_leaf, only=best), oof[best], best or "fusion",
                     {(c or "fusion"): v for c, v in losses.items()})
