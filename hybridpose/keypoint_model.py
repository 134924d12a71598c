"""The keypoint branch: XGBoost on named keypoint features, with a scikit-learn-like surface.

X is an (N, 33, 4) array of pixel keypoints (x, y, z, visibility), NaN where no person was found;
for such rows the branch abstains (predict_proba gives NaN).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import atomic
from .errors import RunError
from .features import features, mirror_keypoints


class KeypointClassifier:
    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.08,
                 subsample: float = 0.8, colsample_bytree: float = 0.5, mirror_augment: bool = True,
                 flip_pairs: dict[str, str] | None = None, seed: int = 0, n_jobs: int = 0):
        self.params = dict(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                           subsample=subsample, colsample_bytree=colsample_bytree, random_state=seed,
                           n_jobs=n_jobs or None, tree_method="hist")
        self.mirror_augment = mirror_augment
        self.flip_pairs = dict(flip_pairs or {})
        self.classes_: list[str] = []
        self.feature_names_: list[str] = []
        self._model = None

    def fit(self, X: np.ndarray, y: Sequence[str], classes: Sequence[str] | None = None) -> "KeypointClassifier":
        from xgboost import XGBClassifier

        self.classes_ = sorted(classes if classes is not None else set(y))
        index = {c: i for i, c in enumerate(self.classes_)}
        X = np.asarray(X, dtype=np.float64)
        ok = np.isfinite(X).all(axis=(1, 2))
        feats = features(X[ok])
        labels = np.array([index[c] for c in np.asarray(y)[ok]])
        if self.mirror_augment:
            # a mirrored photo is the same pose (or its declared left/right partner)
            width = np.nanmax(X[ok][..., 0], axis=1, keepdims=True) + 1
            mirrored = features(mirror_keypoints(X[ok], width))
            flipped = np.array([index[self.flip_pairs.get(self.classes_[i], self.classes_[i])] for i in labels])
            feats, labels = np.concatenate([feats, mirrored[feats.columns]]), np.concatenate([labels, flipped])
        self.feature_names_ = list(features(np.zeros((0, 33, 4))).columns)
        self._model = XGBClassifier(objective="multi:softprob", num_class=len(self.classes_), **self.params)
        present = np.unique(labels)
        if len(present) < len(self.classes_):  # XGBoost wants every class seen: add one zero-weight row each
            feats, labels, weight = _pad_classes(np.asarray(feats), labels, len(self.classes_))
        else:
            weight = None
        self._model.fit(np.asarray(feats, dtype=np.float32), labels, sample_weight=weight)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("KeypointClassifier is not fitted")
        X = np.asarray(X, dtype=np.float64).reshape(-1, 33, 4)
        out = np.full((len(X), len(self.classes_)), np.nan)
        ok = np.isfinite(X).all(axis=(1, 2))
        if ok.any():
            out[ok] = self._model.predict_proba(np.asarray(features(X[ok]), dtype=np.float32))
        return out

    def predict(self, X: np.ndarray) -> list[str | None]:
        p = self.predict_proba(X)
        return [self.classes_[i] if np.isfinite(row).all() else None for i, row in zip(np.nan_to_num(p).argmax(1), p)]

    def feature_importances(self) -> dict[str, float]:
        return dict(zip(self.feature_names_, map(float, self._model.feature_importances_)))

    def save(self, path: str | Path) -> None:
        booster = self._model.get_booster().save_raw(raw_format="json").decode()
        atomic.write_json(path, {"format": "hybridpose-keypoint-model", "version": 1, "classes": self.classes_,
                                 "features": self.feature_names_, "flip_pairs": self.flip_pairs,
                                 "params": self.params, "booster": booster})

    @classmethod
    def load(cls, path: str | Path) -> "KeypointClassifier":
        from xgboost import XGBClassifier

        try:
            d = atomic.read_json(path)
            assert d.get("format") == "hybridpose-keypoint-model"
            obj = cls(flip_pairs=d["flip_pairs"])
            obj.classes_, obj.feature_names_, obj.params = d["classes"], d["features"], d["params"]
            model = XGBClassifier()
            model.load_model(bytearray(d["booster"].encode()))
        except Exception:  # missing file, bad JSON, missing field, damaged booster: one answer
            raise RunError(f"{path}: not a hybridpose keypoint model (missing or corrupt); run `hybridpose fit` again.") from None
        obj._model = model
        return obj


def _pad_classes(feats: np.ndarray, labels: np.ndarray, n_classes: int):
    missing = np.setdiff1d(np.arange(n_classes), labels)
    pad = np.repeat(np.nanmean(feats, axis=0, keepdims=True), len(missing), axis=0)
    weight = np.concatenate([np.ones(len(labels)), np.full(len(missing), 1e-6)])
    return np.concatenate([feats, pad]), np.concatenate([labels, missing]), weight
