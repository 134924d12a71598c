"""The keypoint branch: XGBoost on the skeleton's named keypoint features, scikit-learn style.

X is an (N, n, 4) array of the skeleton's pixel keypoints (x, y, z, visibility), NaN where none
were found; for such rows the branch abstains (predict_proba gives NaN).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .. import atomic
from ..errors import RunError
from ..hierarchy import Hierarchy
from ..skeletons import Skeleton, get_skeleton
from . import leaf_to_levels, register

if TYPE_CHECKING:
    from ..runfolder import RunFolder

FILENAME = "keypoint_model.json"
FORMAT = "hybridpose-keypoint-model"


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
        from xgboost import XGBClassifier

        sk = self.skeleton_
        self.classes_ = sorted(classes if classes is not None else set(y))
        index = {c: i for i, c in enumerate(self.classes_)}
        X = np.asarray(X, dtype=np.float64)
        ok = sk.found(X)
        feats = sk.features(X[ok])
        labels = np.array([index[c] for c in np.asarray(y)[ok]])
        if self.mirror_augment:
            # a mirrored photo is the same pose (or its declared left/right partner)
            width = np.nanmax(X[ok][..., 0], axis=1, keepdims=True) + 1
            mirrored = sk.features(sk.mirror_keypoints(X[ok], width))
            flipped = np.array([index[self.flip_pairs.get(self.classes_[i], self.classes_[i])] for i in labels])
            feats, labels = np.concatenate([feats, mirrored[feats.columns]]), np.concatenate([labels, flipped])
        self.feature_names_ = sk.feature_names()
        self.model_ = XGBClassifier(objective="multi:softprob", num_class=len(self.classes_), **self.params)
        weight = None
        if len(np.unique(labels)) < len(self.classes_):  # XGBoost wants every class seen: add one zero-weight row each
            feats, labels, weight = _pad_classes(np.asarray(feats), labels, len(self.classes_))
        self.model_.fit(np.asarray(feats, dtype=np.float32), labels, sample_weight=weight)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("KeypointClassifier is not fitted")
        sk = self.skeleton_
        X = np.asarray(X, dtype=np.float64).reshape(-1, sk.n, 4)
        out = np.full((len(X), len(self.classes_)), np.nan)
        ok = sk.found(X)
        if ok.any():
            out[ok] = self.model_.predict_proba(np.asarray(sk.features(X[ok]), dtype=np.float32))
        return out

    def predict_level_proba(self, X: np.ndarray, hierarchy: Hierarchy) -> dict[str, np.ndarray]:
        return leaf_to_levels(self.predict_proba(X), hierarchy)

    def predict(self, X: np.ndarray) -> list[str | None]:
        p = self.predict_proba(X)
        return [self.classes_[i] if np.isfinite(row).all() else None for i, row in zip(np.nan_to_num(p).argmax(1), p)]

    def feature_importances(self) -> dict[str, float]:
        return dict(zip(self.feature_names_, map(float, self.model_.feature_importances_)))

    def save(self, path: "str | Path | RunFolder") -> None:
        path = _path(path)
        booster = self.model_.get_booster().save_raw(raw_format="json").decode()
        atomic.write_json(path, {"format": FORMAT, "version": 1, "classes": self.classes_,
                                 "features": self.feature_names_, "flip_pairs": self.flip_pairs,
                                 "skeleton": self.skeleton, "params": self.params, "booster": booster})

    @classmethod
    def load(cls, path: "str | Path | RunFolder", config: dict | None = None, **_options) -> "KeypointClassifier":
        """A saved model; ``config`` and prediction options (device, ...) are not needed by this branch."""
        from xgboost import XGBClassifier

        path = _path(path)
        try:
            d = atomic.read_json(path)
            assert d.get("format") == FORMAT
            obj = cls(flip_pairs=d["flip_pairs"], skeleton=d.get("skeleton", "body"))
            obj.classes_, obj.feature_names_, obj.params = d["classes"], d["features"], d["params"]
            model = XGBClassifier()
            model.load_model(bytearray(d["booster"].encode()))
        except Exception:  # missing file, bad JSON, missing field, damaged booster: one answer
            raise RunError(f"{path}: not a hybridpose keypoint model (missing or corrupt); run `hybridpose fit` again.") from None
        obj.model_ = model
        return obj


def _path(where) -> Path:
    """A file path, or the branch's file in a run folder."""
    return where.file(FILENAME) if hasattr(where, "file") else Path(where)


def _pad_classes(feats: np.ndarray, labels: np.ndarray, n_classes: int):
    missing = np.setdiff1d(np.arange(n_classes), labels)
    pad = np.repeat(np.nanmean(feats, axis=0, keepdims=True), len(missing), axis=0)
    weight = np.concatenate([np.ones(len(labels)), np.full(len(missing), 1e-6)])
    return np.concatenate([feats, pad]), np.concatenate([labels, missing]), weight
