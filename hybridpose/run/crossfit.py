"""Cross-fitting: out-of-fold results where each fold is predicted by a model fitted on the others.

One loop for everything fitted on out-of-fold data (the keypoint branch's out-of-fold
probabilities, the fusion's honest figures, the rules' cross-validated effect), so the three can
never disagree on what "out of fold" means.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def cross_fitted(folds: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], Any]) -> Any:
    """For each fold f: ``fit_predict(train_rows, test_rows)`` with train = rows not in f, test = rows in f.

    Each call returns one value per test row: an array (rows first), a list, or a dict / tuple of
    those; the parts are put back in row order and returned in the same shape.
    """
    folds = np.asarray(folds)
    parts = []
    for f in np.unique(folds):
        test = np.flatnonzero(folds == f)
        train = np.flatnonzero(folds != f)
        parts.append((test, fit_predict(train, test)))
    return _assemble(parts, len(folds))


def _assemble(parts: list[tuple[np.ndarray, Any]], n: int) -> Any:
    first = parts[0][1]
    if isinstance(first, dict):
        return {k: _assemble([(i, v[k]) for i, v in parts], n) for k in first}
    if isinstance(first, tuple):
        return tuple(_assemble([(i, v[j]) for i, v in parts], n) for j in range(len(first)))
    if isinstance(first, list):
        out: list = [None] * n
        for idx, values in parts:
            for i, v in zip(idx, values):
                out[i] = v
        return out
    first = np.asarray(first)
    out_arr = np.full((n, *first.shape[1:]), np.nan if first.dtype.kind == "f" else 0, dtype=first.dtype)
    for idx, values in parts:
        out_arr[idx] = values
    return out_arr
