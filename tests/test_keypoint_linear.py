"""The linear keypoint branch: logistic regression on keypoint features; abstention, persistence, mirror
augmentation, classes a training fold lacks, and its place among a run's default branches."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hybridpose.branches import DEFAULT_BRANCHES, branch_class
from hybridpose.branches.keypoint_linear import KeypointLinearClassifier
from hybridpose.data.hierarchy import Hierarchy
from hybridpose.errors import RunError
from test_keypoint_model import KINDS, _data


@pytest.fixture(scope="module")
def fitted():
    X, y = _data(KINDS, 30, seed=0)
    return KeypointLinearClassifier(seed=0).fit(X, y)


def test_is_a_default_branch_found_by_name():
    assert "keypoint_linear" in DEFAULT_BRANCHES
    assert branch_class("keypoint_linear") is KeypointLinearClassifier


def test_fit_predict_separable(fitted):
    X, y = _data(KINDS, 15, seed=1)
    p = fitted.predict_proba(X)
    assert fitted.classes_ == sorted(KINDS)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.mean(fitted.predict(X) == np.array(y)) >= 0.95


def test_matches_scikit_learn_on_the_same_features(fitted):
    """predict_proba is numpy over the saved numbers; it must be the fitted LogisticRegression's answer."""
    from sklearn.linear_model import LogisticRegression

    X, y = _data(KINDS, 30, seed=0)
    sk = fitted.skeleton_
    ok = sk.found(X)
    F = sk.features(X[ok])[fitted.feature_names_].to_numpy(dtype=np.float64)
    Fm = sk.features(sk.mirror_keypoints(X[ok], np.nanmax(X[ok][..., 0], axis=1, keepdims=True) + 1))[fitted.feature_names_]
    both = np.concatenate([F, Fm.to_numpy(dtype=np.float64)])
    labels = np.tile([fitted.classes_.index(c) for c in np.asarray(y)[ok]], 2)
    lr = LogisticRegression(C=1.0, max_iter=3000, random_state=0).fit(fitted._standardised(both), labels)
    X2, _ = _data(KINDS, 5, seed=3)
    F2 = sk.features(X2)[fitted.feature_names_].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(fitted.predict_proba(X2), lr.predict_proba(fitted._standardised(F2)), atol=1e-6)


def test_abstains_where_no_keypoints(fitted):
    X, _ = _data(KINDS, 2, seed=4)
    X[1] = np.nan
    p = fitted.predict_proba(X)
    assert np.isnan(p[1]).all() and np.isfinite(np.delete(p, 1, axis=0)).all()
    assert fitted.predict(X)[1] is None


def test_class_missing_from_training_gets_zero_and_survives_a_round_trip(tmp_path):
    X, y = _data(["arms_up", "tree"], 20, seed=5)
    m = KeypointLinearClassifier().fit(X, y, classes=["arms_out", "arms_up", "tree"])
    p = m.predict_proba(X)
    assert p.shape == (40, 3) and (p[:, 0] == 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0)
    path = tmp_path / "m.json"
    m.save(path)
    assert json.loads(path.read_text())["intercept"][0] is None  # JSON has no -inf
    np.testing.assert_array_equal(KeypointLinearClassifier.load(path).predict_proba(X), p)


def test_one_class_only_predicts_it():
    X, y = _data(["tree"], 6, seed=6)
    p = KeypointLinearClassifier().fit(X, y, classes=["neutral", "tree"]).predict_proba(X)
    np.testing.assert_array_equal(p, np.tile([0.0, 1.0], (6, 1)))


def test_mirror_augmentation_uses_flip_pairs():
    """Trained only on left_up, with left_up:right_up declared a mirror pair, it knows right_up from the mirror."""
    X, y = _data(["left_up", "neutral"], 25, seed=7)
    m = KeypointLinearClassifier(flip_pairs={"left_up": "right_up", "right_up": "left_up"})
    m.fit(X, y, classes=["left_up", "neutral", "right_up"])
    Xr, _ = _data(["right_up"], 10, seed=8)
    assert np.mean(np.array(m.predict(Xr)) == "right_up") >= 0.9
    plain = KeypointLinearClassifier(mirror_augment=False).fit(X, y, classes=["left_up", "neutral", "right_up"])
    assert "right_up" not in plain.predict(Xr)


def test_nan_features_are_imputed_not_propagated():
    X, y = _data(KINDS, 10, seed=9)
    m = KeypointLinearClassifier().fit(X, y)
    F = m.skeleton_.features(X)[m.feature_names_].to_numpy(dtype=np.float64, copy=True)
    F[:, :5] = np.nan
    Z = m._standardised(F)
    assert np.isfinite(Z).all() and (Z[:, :5] == 0).all()


def test_save_load_round_trip(fitted, tmp_path):
    path = tmp_path / "keypoint_linear_model.json"
    fitted.save(path)
    again = KeypointLinearClassifier.load(path)
    assert (again.classes_, again.feature_names_, again.C) == (fitted.classes_, fitted.feature_names_, fitted.C)
    X, _ = _data(KINDS, 5, seed=10)
    X[0] = np.nan
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    h = Hierarchy.flat(fitted.classes_)
    np.testing.assert_array_equal(again.predict_level_proba(X, h)[h.leaf_level], again.predict_proba(X))


def test_unfitted_model_refuses_to_predict():
    with pytest.raises(RuntimeError, match="not fitted"):
        KeypointLinearClassifier().predict_proba(np.zeros((1, 33, 4)))


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign", "no_coef", "bad_shape", "nan_coef"])
def test_corrupt_model_file_raises_run_error(fitted, tmp_path, damage):
    path = tmp_path / "keypoint_linear_model.json"
    if damage != "missing":
        fitted.save(path)
        text = path.read_text()
        d = json.loads(text)
        if damage == "truncated":
            path.write_text(text[: len(text) // 2])
        elif damage == "foreign":
            path.write_text(json.dumps({**d, "format": "hybridpose-keypoint-model"}))
        elif damage == "no_coef":
            path.write_text(json.dumps({k: v for k, v in d.items() if k != "coef"}))
        elif damage == "bad_shape":
            path.write_text(json.dumps({**d, "coef": d["coef"][1:]}))
        elif damage == "nan_coef":
            d["coef"][0][0] = None
            path.write_text(json.dumps(d))
    with pytest.raises(RunError, match="not a hybridpose linear keypoint model"):
        KeypointLinearClassifier.load(path)
