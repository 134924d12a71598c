"""The keypoint branch: XGBoost on keypoint features; abstention, persistence, mirror augmentation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import standing_keypoints
from hybridpose.branches.keypoint import KeypointClassifier
from hybridpose.errors import RunError
from hybridpose.skeletons.body import KEYPOINT_NAMES, mirror_keypoints

K = {n: i for i, n in enumerate(KEYPOINT_NAMES)}
ARM = ["elbow", "wrist", "pinky", "index", "thumb"]


def _pose(kind: str, rng: np.random.Generator) -> np.ndarray:
    kp = standing_keypoints(cx=200 + rng.normal(0, 20))
    for side in ("left", "right"):
        raised = kind == "arms_up" or kind == f"{side}_up"
        out = kind == "arms_out"
        sign = 1 if side == "left" else -1
        for j, part in enumerate(ARM):
            i = K[f"{side}_{part}"]
            if raised:
                kp[i, :2] = (200 + sign * (50 + 5 * j), 140 - 60 * (j + 1))
            elif out:
                kp[i, :2] = (200 + sign * (45 + 70 * (j + 1)), 140)
    if kind == "tree":
        kp[K["left_ankle"], :2] = kp[K["right_knee"], :2] + (10, 0)
        kp[K["left_knee"], :2] = (320, 380)
        kp[K["left_heel"], :2] = kp[K["left_ankle"], :2] + (5, 10)
        kp[K["left_foot_index"], :2] = kp[K["left_ankle"], :2] + (-10, 15)
    kp[:, :2] += rng.normal(0, 6, (33, 2))
    kp[:, :2] *= rng.uniform(0.7, 1.4)  # photos of other sizes
    kp[:, 3] = rng.uniform(0.6, 1.0, 33)
    return kp


def _data(kinds, n, seed):
    rng = np.random.default_rng(seed)
    X = np.stack([_pose(k, rng) for k in kinds for _ in range(n)])
    y = [k for k in kinds for _ in range(n)]
    return X, y


KINDS = ["arms_up", "arms_out", "tree", "neutral"]


@pytest.fixture(scope="module")
def fitted():
    X, y = _data(KINDS, 30, seed=0)
    return KeypointClassifier(n_estimators=40, max_depth=3, seed=0).fit(X, y)


def test_fit_predict_separable(fitted):
    X, y = _data(KINDS, 15, seed=1)
    assert fitted.classes_ == sorted(KINDS)
    p = fitted.predict_proba(X)
    assert p.shape == (len(X), 4)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    acc = np.mean(np.array(fitted.predict(X)) == np.array(y))
    assert acc >= 0.9


def test_nan_rows_abstain(fitted):
    X, _ = _data(KINDS, 2, seed=2)
    X[1] = np.nan
    X[4, 3, 0] = np.nan  # a partly missing skeleton also abstains
    p = fitted.predict_proba(X)
    assert np.isnan(p[1]).all() and np.isnan(p[4]).all()
    assert np.isfinite(np.delete(p, [1, 4], axis=0)).all()
    pred = fitted.predict(X)
    assert pred[1] is None and pred[4] is None and pred[0] in KINDS


def test_fit_skips_rows_without_a_person():
    X, y = _data(KINDS, 20, seed=3)
    X[::5] = np.nan
    model = KeypointClassifier(n_estimators=20, seed=0).fit(X, y)
    Xt, yt = _data(KINDS, 10, seed=4)
    assert np.mean(np.array(model.predict(Xt)) == np.array(yt)) >= 0.85


def test_classes_without_examples_get_a_column():
    X, y = _data(["arms_up", "neutral"], 20, seed=5)
    model = KeypointClassifier(n_estimators=20, seed=0).fit(X, y, classes=["arms_up", "neutral", "tree"])
    p = model.predict_proba(X)
    assert model.classes_ == ["arms_up", "neutral", "tree"]
    assert p.shape == (len(X), 3)
    assert p[:, 2].max() < 0.2
    assert np.mean(np.array(model.predict(X)) == np.array(y)) >= 0.9


def test_feature_importances_are_named(fitted):
    imp = fitted.feature_importances()
    assert len(imp) == len(fitted.feature_names_) > 100
    assert sum(imp.values()) == pytest.approx(1.0, abs=1e-3)


def test_save_load_round_trip(fitted, tmp_path):
    path = tmp_path / "keypoint_model.json"
    fitted.save(path)
    again = KeypointClassifier.load(path)
    assert again.classes_ == fitted.classes_
    assert again.feature_names_ == fitted.feature_names_
    X, _ = _data(KINDS, 5, seed=6)
    X[0] = np.nan
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))


def test_unfitted_model_refuses_to_predict():
    with pytest.raises(RuntimeError, match="not fitted"):
        KeypointClassifier().predict_proba(np.zeros((1, 33, 4)))


@pytest.mark.parametrize("damage", ["missing", "truncated", "binary", "foreign", "no_booster", "bad_booster"])
def test_corrupt_model_file_raises_run_error(fitted, tmp_path, damage):
    path = tmp_path / "keypoint_model.json"
    if damage != "missing":
        fitted.save(path)
        text = path.read_text()
        d = json.loads(text)
        if damage == "truncated":
            path.write_text(text[: len(text) // 2])
        elif damage == "binary":
            path.write_bytes(bytes(range(256)) * 4)
        elif damage == "foreign":
            path.write_text(json.dumps({"format": "something-else", "classes": ["a"]}))
        elif damage == "no_booster":
            del d["booster"]
            path.write_text(json.dumps(d))
        elif damage == "bad_booster":
            d["booster"] = d["booster"][: len(d["booster"]) // 3]
            path.write_text(json.dumps(d))
    with pytest.raises(RunError) as info:
        KeypointClassifier.load(path)
    assert str(path) in str(info.value)


def test_mirror_augmentation_learns_the_flip_partner():
    """Trained on left-arm-up photos only, the declared partner class is learnt from their mirror images."""
    X, y = _data(["left_up", "neutral"], 30, seed=7)
    classes = ["left_up", "neutral", "right_up"]
    model = KeypointClassifier(n_estimators=40, seed=0, flip_pairs={"left_up": "right_up", "right_up": "left_up"})
    model.fit(X, y, classes=classes)
    Xt, _ = _data(["left_up"], 15, seed=8)
    assert all(p == "left_up" for p in model.predict(Xt))
    mirrored = mirror_keypoints(Xt, 450.0)
    assert all(p == "right_up" for p in model.predict(mirrored))


def test_mirror_augmentation_without_pairs_keeps_the_class():
    X, y = _data(["left_up", "neutral"], 30, seed=9)
    model = KeypointClassifier(n_estimators=40, seed=0).fit(X, y)
    Xt, _ = _data(["left_up"], 15, seed=10)
    assert all(p == "left_up" for p in model.predict(mirror_keypoints(Xt, 450.0)))
