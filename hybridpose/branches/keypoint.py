"""The keypoint branch: XGBoost on the skeleton's named keypoint features, scikit-learn style.

X is an (N, n, 4) array of the skeleton's pixel keypoints (x, y, z, visibility), NaN where none
were found; for such rows the branch abstains (predict_proba gives NaN).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..data.hierarchy import Hierarchy
from ..skeletons import Skeleton, get_skeleton
from . import leaf_to_levels, predicted_labels, register
from ._files import model_path
from ._xgb import fit_softprob, load_model, predict_found, save_model

if TYPE_CHECKING:
    from ..run.folder import RunFolder

FILENAME = "keypoint_model.json"
FORMAT = "hybridpose-keypoint-model"


def training_set(sk: Skeleton, X: np.ndarray, y: Sequence[str], classes: Sequence[str], mirror: bool,
                 flip_pairs: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The named features of the rows where keypoints were found and their class indices; with ``mirror``, each
    row's mirror image too, labelled with the class itself or its declared left/right partner."""
    index = {c: i for i, c in enumerate(classes)}
    X = np.asarray(X, dtype=np.float64)
    ok = sk.found(X)
    feats = sk.features(X[ok])
    labels = np.array([index[c] for c in np.asarray(y)[ok]], dtype=np.int64)
    if mirror:
        width = np.nanmax(X[ok][..., 0], axis=1, keepdims=True) + 1
        mirrored = sk.features(sk.mirror_keypoints(X[ok], width))[feats.columns]
        flipped = np.array([index[flip_pairs.get(classes[i], classes[i])] for i in labels], dtype=np.int64)
        feats, labels = pd.concat([feats, mirrored], ignore_index=True), np.concatenate([labels, flipped])
    return feats, labels


@register
class KeypointClassifier:
    name = "keypoint"
    input = "keypoints"

    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.08,
                 subsample: float = 0.8, colsample_bytree: float = 0.5, mirror_augment: bool = True,
                 flip_pairs: dict[str, str] | None = None, seed: int = 0, n_jobs: int = 0,
                 skeleton: str = "body"):
        self.params = dict(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                           subsample=subsample, colsample_bytree=colsample_bytree, random_state=seed,
                           n_jobs=n_jobs or None, tree_method="hist")
        self.mirror_augment = mirror_augment
        self.flip_pairs = dict(flip_pairs or {})
        self.skeleton = skeleton
        self.classes_: list[str] = []
        self.feature_names_: list[str] = []
        self.model_ = None

    @property
    def skeleton_(self) -> Skeleton:
        return get_skeleton(self.skeleton)

    def fit(self, X: np.ndarray, y: Sequence[str], classes: Sequence[str] | None = None) -> "KeypointClassifier":
        self.classes_ = sorted(classes if classes is not None else set(y))
        feats, labels = training_set(self.skeleton_, X, y, self.classes_, self.mirror_augment, self.flip_pairs)
        self.feature_names_ = self.skeleton_.feature_names()
        self.model_ = fit_softprob(feats, labels, len(self.classes_), self.params)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        sk = self.skeleton_
        X = np.asarray(X, dtype=np.float64).reshape(-1, sk.n, 4)
        ok = sk.found(X)
        return predict_found(self.model_, ok, len(self.classes_), lambda: sk.features(X[ok]), type(self).__name__)

    def predict_level_proba(self, X: np.ndarray, hierarchy: Hierarchy) -> dict[str, np.ndarray]:
        return leaf_to_levels(self.predict_proba(X), hierarchy)

    def predict(self, X: np.ndarray) -> list[str | None]:
        return predicted_labels(self.predict_proba(X), self.classes_)

    def feature_importances(self) -> dict[str, float]:
        return dict(zip(self.feature_names_, map(float, self.model_.feature_importances_)))

    def save(self, path: "str | Path | RunFolder") -> None:
        save_model(model_path(path, FILENAME), FORMAT, self.model_, {
            "classes": self.classes_, "features": self.feature_names_, "flip_pairs": self.flip_pairs,
            "skeleton": self.skeleton, "params": self.params})

    @classmethod
    def load(cls, path: "str | Path | RunFolder", config: dict | None = None, **_options) -> "KeypointClassifier":
        """A saved model; ``config`` and prediction options (device, ...) are not needed by this branch."""
        d, model = load_model(model_path(path, FILENAME), FORMAT, ("classes", "features", "params", "flip_pairs"),
                              "keypoint model")
        obj = cls(flip_pairs=d["flip_pairs"], skeleton=d.get("skeleton", "body"))
        obj.classes_, obj.feature_names_, obj.params, obj.model_ = d["classes"], d["features"], d["params"], model
        return obj
