"""What the XGBoost branches (``keypoint``, ``clip_keypoint``) share: a softprob classifier that knows every
class, NaN rows where the branch abstains, and the model file: the booster's JSON inside a JSON file with a
format tag, read back with one clear error."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ._files import read_model_file, write_model_file


def fit_softprob(feats: np.ndarray, labels: np.ndarray, n_classes: int, params: dict):
    """An XGBClassifier (multi:softprob) over ``n_classes``, fitted on ``feats`` with integer ``labels``."""
    from xgboost import XGBClassifier

    feats, weight = np.asarray(feats), None
    if len(np.unique(labels)) < n_classes:  # XGBoost wants every class seen: add one zero-weight row each
        feats, labels, weight = _pad_classes(feats, labels, n_classes)
    model = XGBClassifier(objective="multi:softprob", num_class=n_classes, **params)
    model.fit(np.asarray(feats, dtype=np.float32), labels, sample_weight=weight)
    return model


def predict_found(model, ok: np.ndarray, n_classes: int, features: Callable[[], np.ndarray], owner: str) -> np.ndarray:
    """Probabilities for the rows in ``ok`` (``features()`` gives theirs); a row of NaN elsewhere: the branch abstains."""
    if model is None:
        raise RuntimeError(f"{owner} is not fitted")
    out = np.full((len(ok), n_classes), np.nan)
    if ok.any():
        out[ok] = model.predict_proba(np.asarray(features(), dtype=np.float32))
    return out


def save_model(path: Path, fmt: str, model, fields: dict) -> None:
    """``{"format", "version", **fields, "booster"}`` (the booster as XGBoost's JSON text), written atomically."""
    booster = model.get_booster().save_raw(raw_format="json").decode()
    write_model_file(path, fmt, {**fields, "booster": booster})


def load_model(path: Path, fmt: str, required: Sequence[str], what: str) -> tuple[dict, object]:
    """The saved fields and the XGBClassifier of a file written by ``save_model`` (a RunError naming ``what``
    when it cannot be read, see ``read_model_file``)."""
    return read_model_file(path, fmt, required, what, _booster)


def _booster(d: dict):
    from xgboost import XGBClassifier

    model = XGBClassifier()
    model.load_model(bytearray(d["booster"].encode()))
    return model


def _pad_classes(feats: np.ndarray, labels: np.ndarray, n_classes: int):
    missing = np.setdiff1d(np.arange(n_classes), labels)
    pad = np.repeat(np.nanmean(feats, axis=0, keepdims=True), len(missing), axis=0)
    weight = np.concatenate([np.ones(len(labels)), np.full(len(missing), 1e-6)])
    return np.concatenate([feats, pad]), np.concatenate([labels, missing]), weight
