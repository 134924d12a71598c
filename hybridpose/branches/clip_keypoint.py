"""The clip keypoint branch: XGBoost on a clip's temporal statistics (``temporal.py``), scikit-learn style.

X is the clip statistics table (one row per clip, columns ``temporal.statistic_names``); a clip with no
skeleton in any frame (``found == 0``) gets a NaN row: the branch abstains there.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..data.hierarchy import Hierarchy
from ..pose.temporal import FOUND, statistic_names
from . import leaf_to_levels, register
from ._files import model_path
from ._xgb import fit_softprob, load_model, predict_found, save_model

if TYPE_CHECKING:
    from ..run.folder import RunFolder

FILENAME = "clip_keypoint_model.json"
FORMAT = "hybridpose-clip-keypoint-model"


@register
class ClipKeypointClassifier:
    name = "clip_keypoint"
    input = "clip_statistics"

    def __init__(self, n_estimators: int = 200, max_depth: int = 3, learning_rate: float = 0.1,
                 subsample: float = 0.8, colsample_bytree: float = 0.3, seed: int = 0, n_jobs: int = 0,
                 skeleton: str = "body", flip_pairs: dict[str, str] | None = None):
        self.params = dict(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                           subsample=subsample, colsample_bytree=colsample_bytree, random_state=seed,
                           n_jobs=n_jobs or None, tree_method="hist")
        self.skeleton = skeleton
        self.classes_: list[str] = []
        self.feature_names_: list[str] = []
        self.model_ = None

    def _matrix(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        X = X.reindex(columns=self.feature_names_ or statistic_names(self.skeleton))
        ok = X[FOUND].to_numpy(dtype=float) > 0
        return X.to_numpy(dtype=np.float32), ok

    def fit(self, X: pd.DataFrame, y: Sequence[str], classes: Sequence[str] | None = None) -> "ClipKeypointClassifier":
        self.feature_names_ = statistic_names(self.skeleton)
        self.classes_ = sorted(classes if classes is not None else set(y))
        index = {c: i for i, c in enumerate(self.classes_)}
        M, ok = self._matrix(X)
        labels = np.array([index[c] for c in np.asarray(y)[ok]])
        self.model_ = fit_softprob(M[ok], labels, len(self.classes_), self.params)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        M, ok = self._matrix(X)
        return predict_found(self.model_, ok, len(self.classes_), lambda: M[ok], type(self).__name__)

    def predict_level_proba(self, X: pd.DataFrame, hierarchy: Hierarchy) -> dict[str, np.ndarray]:
        return leaf_to_levels(self.predict_proba(X), hierarchy)

    def save(self, path: "str | Path | RunFolder") -> None:
        save_model(model_path(path, FILENAME), FORMAT, self.model_, {
            "classes": self.classes_, "features": self.feature_names_, "skeleton": self.skeleton,
            "params": self.params})

    @classmethod
    def load(cls, path: "str | Path | RunFolder", config: dict | None = None, **_options) -> "ClipKeypointClassifier":
        d, model = load_model(model_path(path, FILENAME), FORMAT, ("classes", "features", "params"),
                              "clip keypoint model")
        obj = cls(skeleton=d.get("skeleton", "body"))
        obj.classes_, obj.feature_names_, obj.params, obj.model_ = d["classes"], d["features"], d["params"], model
        return obj
