"""The clip keypoint branch: XGBoost on a clip's temporal statistics (``temporal.py``), scikit-learn style.

X is the clip statistics table (one row per clip, columns ``temporal.statistic_names``); a clip with no
skeleton in any frame (``found == 0``) gets a NaN row: the branch abstains there.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import RunError
from ..hierarchy import Hierarchy
from ..temporal import FOUND, statistic_names
from . import leaf_to_levels, register
from .keypoint import _pad_classes

if TYPE_CHECKING:
    from ..runfolder import RunFolder

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
        from xgboost import XGBClassifier

        self.feature_names_ = statistic_names(self.skeleton)
        self.classes_ = sorted(classes if classes is not None else set(y))
        index = {c: i for i, c in enumerate(self.classes_)}
        M, ok = self._matrix(X)
        feats, labels = M[ok], np.array([index[c] for c in np.asarray(y)[ok]])
        weight = None
        if len(np.unique(labels)) < len(self.classes_):
            feats, labels, weight = _pad_classes(feats, labels, len(self.classes_))
        self.model_ = XGBClassifier(objective="multi:softprob", num_class=len(self.classes_), **self.params)
        self.model_.fit(feats, labels, sample_weight=weight)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("ClipKeypointClassifier is not fitted")
        M, ok = self._matrix(X)
        out = np.full((len(M), len(self.classes_)), np.nan)
        if ok.any():
            out[ok] = self.model_.predict_proba(M[ok])
        return out

    def predict_level_proba(self, X: pd.DataFrame, hierarchy: Hierarchy) -> dict[str, np.ndarray]:
        return leaf_to_levels(self.predict_proba(X), hierarchy)

    def save(self, path: "str | Path | RunFolder") -> None:
        path = _path(path)
        booster = self.model_.get_booster().save_raw(raw_format="json").decode()
        atomic.write_json(path, {"format": FORMAT, "version": 1, "classes": self.classes_,
                                 "features": self.feature_names_, "skeleton": self.skeleton,
                                 "params": self.params, "booster": booster})

    @classmethod
    def load(cls, path: "str | Path | RunFolder", config: dict | None = None, **_options) -> "ClipKeypointClassifier":
        from xgboost import XGBClassifier

        path = _path(path)
        try:
            d = atomic.read_json(path)
            assert d.get("format") == FORMAT
            obj = cls(skeleton=d.get("skeleton", "body"))
            obj.classes_, obj.feature_names_, obj.params = d["classes"], d["features"], d["params"]
            model = XGBClassifier()
            model.load_model(bytearray(d["booster"].encode()))
        except Exception:
            raise RunError(f"{path}: not a hybridpose clip keypoint model (missing or corrupt); run `hybridpose fit` again.") from None
        obj.model_ = model
        return obj


def _path(where) -> Path:
    return where.file(FILENAME) if hasattr(where, "file") else Path(where)
