"""Fusion of a run's branches (any number), and hierarchy-consistent labels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hybridpose.branches import leaf_to_levels
from hybridpose.data.hierarchy import Hierarchy
from hybridpose.fusion import (
    Fusion,
    LevelFusion,
    cross_fitted,
    fit_temperature,
    pool,
    tempered,
    to_level,
    weight_grid,
)

H = Hierarchy(["class", "group"], {"A": ["g1"], "B": ["g1"], "C": ["g2"], "D": ["g2"]})
H3 = Hierarchy(["class", "subgroup", "group"], {
    "A": ["s1", "G1"], "B": ["s1", "G1"], "C": ["s2", "G1"], "D": ["s3", "G2"], "E": ["s3", "G2"], "F": ["s4", "G2"],
})


def _branch(y: np.ndarray, n_classes: int, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Leaf probabilities that put most mass on the truth for ``accuracy`` of the rows, elsewhere at random."""
    probs = rng.dirichlet(np.ones(n_classes), len(y))
    right = rng.random(len(y)) < accuracy
    target = np.where(right, y, rng.integers(0, n_classes, len(y)))
    probs = 0.3 * probs
    probs[np.arange(len(y)), target] += 0.7
    return probs / probs.sum(1, keepdims=True)


def _image_levels(leaf: np.ndarray, h: Hierarchy) -> dict[str, np.ndarray]:
    return {lv: to_level(leaf, h, lv) for lv in h.levels}


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    good = _branch(y, 4, 0.9, rng)
    poor = _branch(y, 4, 0.3, rng)
    return y, good, poor


def _weights(f: Fusion) -> dict[str, float]:
    """The image branch's weight per level."""
    return {lv: lf.weights["image"] for lv, lf in f.levels.items()}


def _two(image: dict[str, np.ndarray], kp_leaf: np.ndarray, h: Hierarchy = H) -> dict[str, dict[str, np.ndarray]]:
    return {"image": image, "keypoint": leaf_to_levels(kp_leaf, h)}


def _fit(image, kp_leaf, y, h: Hierarchy = H) -> Fusion:
    return Fusion(h).fit(_two(image, kp_leaf, h), y)


def _level(w_image: float, t_image: float = 1.0, t_keypoint: float = 1.0) -> LevelFusion:
    return LevelFusion({"image": w_image, "keypoint": round(1 - w_image, 4)}, {"image": t_image, "keypoint": t_keypoint})


def test_weights_prefer_the_better_image_branch(synthetic):
    y, good, poor = synthetic
    f = _fit(_image_levels(good, H), poor, y)
    assert set(f.levels) == {"class", "group"}
    assert all(w >= 0.7 for w in _weights(f).values()), _weights(f)


def test_weights_prefer_the_better_keypoint_branch(synthetic):
    y, good, poor = synthetic
    f = _fit(_image_levels(poor, H), good, y)
    assert all(w <= 0.3 for w in _weights(f).values()), _weights(f)


def test_an_overconfident_branch_does_not_win_by_confidence():
    """The worse branch, made over-confident, must still not take the weight (temperature scaling)."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 800)
    good, poor = _branch(y, 4, 0.85, rng), _branch(y, 4, 0.45, rng)
    loud = poor ** 6
    loud /= loud.sum(1, keepdims=True)
    f = _fit(_image_levels(good, H), loud, y)
    assert all(w >= 0.6 for w in _weights(f).values()), _weights(f)
    assert f.levels["class"].temperatures["keypoint"] > 1.5  # the over-confident branch is cooled down


def test_equal_branches_share_the_weight():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 3000)
    a, b = _branch(y, 4, 0.6, rng), _branch(y, 4, 0.6, rng)
    f = _fit(_image_levels(a, H), b, y)
    assert all(0.25 <= w <= 0.75 for w in _weights(f).values()), _weights(f)


def test_fusion_beats_either_branch_on_log_loss():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, 2000)
    a, b = _branch(y, 4, 0.7, rng), _branch(y, 4, 0.7, rng)
    f = _fit(_image_levels(a[:1000], H), b[:1000], y[:1000])
    fused = f.predict_proba(_two(_image_levels(a[1000:], H), b[1000:]))["class"]
    def nll(p):
        return -np.log(np.clip(p[np.arange(1000), y[1000:]], 1e-9, 1)).mean()
    assert nll(fused) < min(nll(a[1000:]), nll(b[1000:]))


def test_fit_ignores_abstaining_rows(synthetic):
    y, good, poor = synthetic
    kp = good.copy()
    kp[::3] = np.nan
    f = _fit(_image_levels(poor, H), kp, y)
    assert all(w <= 0.3 for w in _weights(f).values())
    none = _fit(_image_levels(poor, H), np.full_like(good, np.nan), y)
    assert _weights(none) == {"class": 1.0, "group": 1.0}


def test_abstaining_keypoint_rows_use_the_image_branch_alone(synthetic):
    y, good, poor = synthetic
    f = _fit(_image_levels(good, H), poor, y)
    kp = poor[:10].copy()
    kp[[2, 7]] = np.nan
    image = _image_levels(good[:10], H)
    out = f.combine(_two(image, kp))
    alone = f.combine(_two(image, np.full_like(kp, np.nan)))
    for lv in H.levels:
        np.testing.assert_allclose(out[lv][[2, 7]], tempered(image[lv], f.levels[lv].temperatures["image"])[[2, 7]])
        np.testing.assert_allclose(out[lv][[2, 7]], alone[lv][[2, 7]])
        assert not np.allclose(out[lv][[0, 1, 3]], alone[lv][[0, 1, 3]])  # the others do use the keypoints
    fused = f.predict_proba(_two(image, kp))
    for lv in H.levels:
        assert np.isfinite(fused[lv]).all()
    plain = Fusion(H, {lv: _level(0.3) for lv in H.levels})  # temperature 1: exactly the image branch
    np.testing.assert_allclose(plain.combine(_two(image, kp))["class"][[2, 7]], image["class"][[2, 7]])


def test_pool_and_temperature_basics():
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(4), 5), rng.dirichlet(np.ones(4), 5)
    np.testing.assert_allclose(pool([p, q], (1.0, 0.0)), p)
    np.testing.assert_allclose(pool([p, q], (0.0, 1.0)), q)
    np.testing.assert_allclose(tempered(p, 1.0), p)
    hot = tempered(p, 3.0)
    assert (hot.max(1) < p.max(1)).all() and (hot.argmax(1) == p.argmax(1)).all()
    y = rng.integers(0, 4, 500)
    sharp = _branch(y, 4, 0.5, rng) ** 5
    sharp /= sharp.sum(1, keepdims=True)
    assert fit_temperature(sharp, y) > 1.5   # over-confident: soften
    soft = np.full((500, 4), 0.2)
    soft[np.arange(500), y] = 0.4
    assert fit_temperature(soft, y) < 0.7    # under-confident and always right: sharpen


def test_round_trip_dict():
    f = Fusion(H, {"class": _level(0.35, 1.2, 0.8), "group": _level(0.8, 1.0, 2.0)})
    g = Fusion.from_dict(H, json.loads(json.dumps(f.to_dict())))
    assert g.levels == f.levels


def test_cross_fitted_fold_never_sees_its_own_labels(synthetic):
    y, good, poor = synthetic
    folds = np.arange(len(y)) % 3 + 1
    image = _image_levels(poor, H)
    a = cross_fitted(H, _two(image, good), y, folds)
    y2 = y.copy()
    y2[folds == 2] = (y2[folds == 2] + 1) % 4  # different labels in fold 2 only
    b = cross_fitted(H, _two(image, good), y2, folds)
    for lv in H.levels:
        np.testing.assert_allclose(a[lv][folds == 2], b[lv][folds == 2])
        assert not np.allclose(a[lv][folds == 1], b[lv][folds == 1])
        np.testing.assert_allclose(a[lv].sum(1), 1)


# --- hierarchy-consistent labels ----------------------------------------------------------


def _best_path(h: Hierarchy, level_probs: dict[str, np.ndarray], row: int) -> str:
    """Brute force: the leaf whose path has the largest product of level probabilities."""
    def score(leaf):
        return np.prod([level_probs[lv][row, h.classes(lv).index(h.ancestor(leaf, lv))] for lv in h.levels])
    return max(h.leaves, key=score)


def test_consistent_picks_the_best_path_when_level_argmaxes_disagree():
    # leaf argmax A (in g1), group argmax g2: the per-level answers contradict each other
    probs = {"class": np.array([[0.4, 0.1, 0.3, 0.2]]), "group": np.array([[0.2, 0.8]])}
    q = Fusion(H).consistent(probs)
    leaf = H.leaves[q.argmax(1)[0]]
    assert leaf == "C"                 # 0.3 * 0.8 beats 0.4 * 0.2
    assert H.ancestor(leaf, "group") == "g2"
    np.testing.assert_allclose(q[0], np.array([0.08, 0.02, 0.24, 0.16]) / 0.5)


@pytest.mark.parametrize("h", [H, H3], ids=["2 levels", "3 levels"])
def test_consistent_argmax_is_the_best_path(h):
    rng = np.random.default_rng(5)
    n = 200
    probs = {lv: rng.dirichlet(np.ones(len(h.classes(lv))) * 0.5, n) for lv in h.levels}
    q = Fusion(h).consistent(probs)
    assert q.shape == (n, len(h.leaves))
    np.testing.assert_allclose(q.sum(1), 1)
    assert (q >= 0).all()
    for i in range(n):
        assert h.leaves[q[i].argmax()] == _best_path(h, probs, i)


@pytest.mark.parametrize("h", [H, H3], ids=["2 levels", "3 levels"])
def test_predict_proba_levels_are_the_leaf_distribution_summed_up(h):
    rng = np.random.default_rng(2)
    n, k = 100, len(h.leaves)
    image = {lv: rng.dirichlet(np.ones(len(h.classes(lv))), n) for lv in h.levels}
    kp = rng.dirichlet(np.ones(k), n)
    kp[::4] = np.nan
    out = Fusion(h, {lv: _level(0.5, 1.3, 0.7) for lv in h.levels}).predict_proba(_two(image, kp, h))
    leaf = out[h.leaf_level]
    for lv in h.levels:
        np.testing.assert_allclose(out[lv], to_level(leaf, h, lv), atol=1e-12)
        np.testing.assert_allclose(out[lv].sum(1), 1)


def test_consistent_handles_zero_probabilities():
    probs = {"class": np.array([[1.0, 0.0, 0.0, 0.0]]), "group": np.array([[0.0, 1.0]])}
    q = Fusion(H).consistent(probs)
    assert np.isfinite(q).all() and q.sum() == pytest.approx(1.0)


def test_oof_predictions_fused_levels_agree_with_the_fused_leaf():
    """oof_predictions.csv: `pred_fused_<level>` must be the ancestors of the fused leaf (docs/FORMATS.md)."""
    from hybridpose.run.predtable import table

    # image heads: the leaf head spreads over g2's two leaves; fused leaf argmax A (in g1),
    # while the summed leaf distribution puts more mass on g2
    image = {"class": np.array([[0.40, 0.05, 0.30, 0.25]]), "group": np.array([[0.45, 0.55]])}
    kp = np.full((1, 4), np.nan)  # no person: image branch alone
    fusion = Fusion(H, {lv: _level(0.5) for lv in H.levels})
    fused = fusion.predict_proba(_two(image, kp))
    frame = table(H, {"path": ["x.jpg"], "fold": [1], "status": ["no_person"]},
                  {lv: [H.ancestor("A", lv)] for lv in H.levels}, {**_two(image, kp), "fused": fused})
    leaf = frame["pred_fused_class"].iat[0]
    assert leaf in H.leaves
    assert frame["pred_fused_group"].iat[0] == H.ancestor(leaf, "group")
    assert frame["pred_keypoint_class"].iat[0] == ""  # the keypoint branch abstained
    assert frame["pred_image_group"].iat[0] == "g2"    # a branch's own levels are its own argmax


# --- more than two branches -----------------------------------------------------------------


def test_weight_grid_is_the_simplex():
    grid = weight_grid(3, 0.25)
    assert len(grid) == 15 and all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in grid)
    assert weight_grid(2, 0.5) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]


def test_three_branches_weight_the_useful_ones_and_ignore_noise():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 1500)
    branches = {"image": _image_levels(_branch(y, 4, 0.75, rng), H),
                "keypoint": leaf_to_levels(_branch(y, 4, 0.75, rng), H),
                "noise": leaf_to_levels(rng.dirichlet(np.ones(4), len(y)), H)}
    f = Fusion(H).fit(branches, y)
    w = f.levels["class"].weights
    assert set(w) == {"image", "keypoint", "noise"} and abs(sum(w.values()) - 1) < 1e-9
    assert w["noise"] <= 0.1 and w["image"] >= 0.25 and w["keypoint"] >= 0.25, w
    out = f.predict_proba(branches)["class"]
    assert (out.argmax(1) == y).mean() > 0.8


def test_a_branch_that_abstains_leaves_the_row_to_the_others():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 4, 400)
    a, b, c = (_branch(y, 4, 0.7, rng) for _ in range(3))
    branches = {"image": _image_levels(a, H), "keypoint": leaf_to_levels(b, H), "third": leaf_to_levels(c, H)}
    f = Fusion(H).fit(branches, y)
    gone = {**branches, "third": leaf_to_levels(np.full_like(c, np.nan), H)}
    without = Fusion(H, {lv: LevelFusion({k: v for k, v in lf.weights.items() if k != "third"}, lf.temperatures)
                         for lv, lf in f.levels.items()})
    np.testing.assert_allclose(f.combine(gone)["class"], without.combine(branches)["class"], atol=1e-12)
