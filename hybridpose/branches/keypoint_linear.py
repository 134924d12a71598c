"""The linear keypoint branch: multinomial logistic regression on the skeleton's named keypoint features.

Boosted trees cut each feature at thresholds; a pose that differs from another by a little in many features
at once (a finger slightly more bent, a palm slightly turned) is what a linear model sees best. On a few
hundred photos the two make different errors, and the fusion weighs them out of fold. Features are
standardised (NaN, e.g. a missing hand of a two-hand skeleton, imputed by the training median); the model file
holds plain numbers, so prediction needs only numpy. X and abstaining rows as for the ``keypoint`` branch.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..data.hierarchy import Hierarchy
from ..skeletons import Skeleton, get_skeleton
from . import leaf_to_levels, predicted_labels, register
from ._files import model_path, read_model_file, write_model_file
from .keypoint import training_set

if TYPE_CHECKING:
    from ..run.folder import RunFolder

FILENAME = "keypoint_linear_model.json"
FORMAT = "hybridpose-keypoint-linear-model"


@register
class KeypointLinearClassifier:
    name = "keypoint_linear"
    input = "keypoints"

    def __init__(self, C: float = 1.0, max_iter: int = 3000, mirror_augment: bool = True,
                 flip_pairs: dict[str, str] | None = None, seed: int = 0, skeleton: str = "body"):
        self.C, self.max_iter, self.seed = float(C), int(max_iter), int(seed)
        self.mirror_augment = mirror_augment
        self.flip_pairs = dict(flip_pairs or {})
        self.skeleton = skeleton
        self.classes_: list[str] = []
        self.feature_names_: list[str] = []
        self.center_ = self.scale_ = self.coef_ = self.intercept_ = None

    @property
    def skeleton_(self) -> Skeleton:
        return get_skeleton(self.skeleton)

    def fit(self, X: np.ndarray, y: Sequence[str], classes: Sequence[str] | None = None) -> "KeypointLinearClassifier":
        from sklearn.linear_model import LogisticRegression

        self.classes_ = sorted(classes if classes is not None else set(y))
        feats, labels = training_set(self.skeleton_, X, y, self.classes_, self.mirror_augment, self.flip_pairs)
        self.feature_names_ = self.skeleton_.feature_names()
        F = feats[self.feature_names_].to_numpy(dtype=np.float64)
        self.center_, self.scale_ = _standardiser(F)
        self.coef_ = np.zeros((len(self.classes_), F.shape[1]))
        self.intercept_ = np.full(len(self.classes_), -np.inf)  # a class no training row has: probability 0
        seen = np.unique(labels)
        if len(seen) == 1:
            self.intercept_[seen[0]] = 0.0
            return self
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        lr.fit(self._standardised(F), labels)
        self.coef_[lr.classes_], self.intercept_[lr.classes_] = _multiclass(lr)
        return self

    def _standardised(self, F: np.ndarray) -> np.ndarray:
        Z = (F - self.center_) / self.scale_
        return np.where(np.isfinite(Z), Z, 0.0)  # NaN -> the training median

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("KeypointLinearClassifier is not fitted")
        sk = self.skeleton_
        X = np.asarray(X, dtype=np.float64).reshape(-1, sk.n, 4)
        ok = sk.found(X)
        out = np.full((len(X), len(self.classes_)), np.nan)
        if ok.any():
            F = sk.features(X[ok])[self.feature_names_].to_numpy(dtype=np.float64)
            logits = self._standardised(F) @ self.coef_.T + self.intercept_
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            out[ok] = e / e.sum(axis=1, keepdims=True)
        return out

    def predict_level_proba(self, X: np.ndarray, hierarchy: Hierarchy) -> dict[str, np.ndarray]:
        return leaf_to_levels(self.predict_proba(X), hierarchy)

    def predict(self, X: np.ndarray) -> list[str | None]:
        return predicted_labels(self.predict_proba(X), self.classes_)

    def save(self, path: "str | Path | RunFolder") -> None:
        write_model_file(model_path(path, FILENAME), FORMAT, {
            "classes": self.classes_, "features": self.feature_names_, "flip_pairs": self.flip_pairs,
            "skeleton": self.skeleton, "params": {"C": self.C, "max_iter": self.max_iter, "seed": self.seed},
            "center": _listed(self.center_), "scale": _listed(self.scale_), "coef": _listed(self.coef_),
            "intercept": _listed(self.intercept_)})

    @classmethod
    def load(cls, path: "str | Path | RunFolder", config: dict | None = None,
             **_options) -> "KeypointLinearClassifier":
        d, arrays = read_model_file(model_path(path, FILENAME), FORMAT,
                                    ("classes", "features", "center", "scale", "coef", "intercept"),
                                    "linear keypoint model", _arrays)
        obj = cls(flip_pairs=d.get("flip_pairs"), skeleton=d.get("skeleton", "body"), **d.get("params", {}))
        obj.classes_, obj.feature_names_ = list(d["classes"]), list(d["features"])
        obj.center_, obj.scale_, obj.coef_, obj.intercept_ = arrays
        return obj


def _standardiser(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: the median (what NaN becomes) and the standard deviation (1 where it is 0 or undefined)."""
    if not len(F):
        return np.zeros(F.shape[1]), np.ones(F.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature with no value at all: centre 0
        center = np.nan_to_num(np.nanmedian(F, axis=0))
    scale = np.where(np.isfinite(F), F, center).std(axis=0)
    return center, np.where(scale > 1e-12, scale, 1.0)


def _multiclass(lr) -> tuple[np.ndarray, np.ndarray]:
    """(classes x features) weights and intercepts; scikit-learn gives two classes one row (class 1 against 0)."""
    if lr.coef_.shape[0] == 1:
        half = np.vstack([-lr.coef_[0], lr.coef_[0]]) / 2
        return half, np.array([-lr.intercept_[0], lr.intercept_[0]]) / 2
    return lr.coef_, lr.intercept_


def _listed(a: np.ndarray) -> list:
    """JSON has no infinity: an unseen class's intercept (-inf) is written as null."""
    return [float(v) if np.isfinite(v) else None for v in np.ravel(a)] if a.ndim == 1 else a.tolist()


def _arrays(d: dict) -> tuple[np.ndarray, ...]:
    center, scale, coef = (np.asarray(d[k], dtype=np.float64) for k in ("center", "scale", "coef"))
    intercept = np.array([-np.inf if v is None else v for v in d["intercept"]], dtype=np.float64)
    n_classes, n_feats = len(d["classes"]), len(d["features"])
    if center.shape != (n_feats,) or scale.shape != (n_feats,) or coef.shape != (n_classes, n_feats) \
            or intercept.shape != (n_classes,) or not (np.isfinite(coef).all() and (scale > 0).all()):
        raise ValueError("shapes")
    return center, scale, coef, intercept
