"""Branches: models that each turn one kind of input into class probabilities, fused later.

A branch follows scikit-learn's conventions: hyper-parameters in ``__init__``, learned state in
attributes ending in ``_``, ``fit(X, y)``, ``predict_proba(X)`` (leaf probabilities, a row of
NaN where the branch abstains), plus

* ``name``: how the run, the prediction table and the report call it,
* ``input``: which part of a batch it reads, ``"keypoints"`` ((N, n, 4) pixels) or ``"crops"``
  (N x 3 x S x S uint8),
* ``predict_level_proba(X, hierarchy)``: probabilities per hierarchy level,
* ``save(run)`` / ``load(run, config, **options)``: its files in the run folder (options such as
  ``device`` or ``partial`` that a branch does not use are ignored).

A new branch is one module that defines such a class and calls ``register``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..data.hierarchy import Hierarchy
from ..errors import RunError
from ..registry import Registry

if TYPE_CHECKING:
    from ..run.folder import RunFolder


class Branch(Protocol):
    name: str
    input: str

    def fit(self, X: Any, y: Any) -> "Branch": ...
    def predict_proba(self, X: Any) -> np.ndarray: ...
    def predict_level_proba(self, X: Any, hierarchy: Hierarchy) -> dict[str, np.ndarray]: ...
    def save(self, run: "RunFolder") -> None: ...


BRANCHES: Registry[type] = Registry("branch", "hybridpose.branches", error=RunError,
                                   unknown="unknown branch {name!r}; known branches are {known}.")
DEFAULT_BRANCHES = ("image", "keypoint", "keypoint_linear")
register = BRANCHES.register


def branch_class(name: str) -> type:
    return BRANCHES.get(name)


def leaf_to_levels(leaf: np.ndarray, hierarchy: Hierarchy) -> dict[str, np.ndarray]:
    """Leaf probabilities summed up the hierarchy, one array per level (NaN rows stay NaN)."""
    return {lv: leaf @ hierarchy.leaf_to_level(lv) for lv in hierarchy.levels}


def predicted_labels(p: np.ndarray, classes: list[str]) -> list[str | None]:
    """The most probable class per row of leaf probabilities; None where the branch abstained (a NaN row)."""
    return [classes[i] if np.isfinite(row).all() else None for i, row in zip(np.nan_to_num(p).argmax(1), p)]

