"""The hand skeletons (``hand``, ``two_hands``) and MediaPipe Hands: keypoints, handedness, mirror, features,
crop box and the CAM mask drawn from the hand bones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridpose.skeletons import get_skeleton

ROOT = Path(__file__).resolve().parents[1]
HANDS = ROOT / "tests" / "data" / "hands"
PHOTOS = sorted(HANDS.rglob("*.jpg"))


@pytest.fixture(scope="module")
def hand_table() -> pd.DataFrame:
    from hybridpose.pose.frontend import extract

    return extract(PHOTOS, use_cache=False, show_progress=False, skeleton="hand")


def _kp(table: pd.DataFrame, skeleton: str = "hand") -> np.ndarray:
    from hybridpose.pose.frontend import keypoints_array

    return keypoints_array(table, skeleton)


def test_mediapipe_hands_finds_hands_and_says_no_hand(hand_table):
    no_hand = HANDS / "photo" / "photo_00.jpg"
    status = dict(zip(hand_table["path"], hand_table["status"]))
    assert status.pop(str(no_hand)) == "no_hand"
    assert set(status.values()) == {"ok"}
    ok = hand_table[hand_table["status"] == "ok"]
    kp = _kp(ok)
    assert np.isfinite(kp).all()
    v = kp[..., 3]
    assert ((v >= 0) & (v <= 1)).all() and np.allclose(v, v[:, :1])  # P(right), one value per hand
    # the crop is the hand's box, not the whole frame: a hand is small in a webcam frame
    side = np.maximum(ok["box_x1"] - ok["box_x0"], ok["box_y1"] - ok["box_y0"])
    assert (side < 0.6 * ok["height"]).all() and (side > 5).all()
    for i in range(len(ok)):
        x, y = kp[i, :, 0], kp[i, :, 1]
        assert ok["box_x0"].iat[i] <= x.min() + 1e-6 and x.max() <= ok["box_x1"].iat[i] + 1e-6
        assert ok["box_y0"].iat[i] <= y.min() + 1e-6 and y.max() <= ok["box_y1"].iat[i] + 1e-6


def test_hand_features_are_named_and_follow_the_mirror(hand_table):
    sk = get_skeleton("hand")
    assert sk.n == len(sk.keypoints) and sk.handed and sk.estimator == "mediapipe_hands"
    kp = _kp(hand_table[hand_table["status"] == "ok"])
    feats = sk.features(kp)
    for name in ("index_mcp_angle", "index_pip_angle", "index_dip_angle", "thumb_ip_angle", "index_extension",
                 "index_tip_to_wrist", "thumb_tip_to_index_tip", "palm_normal_x", "thumb_index_spread", "handedness"):
        assert name in feats.columns, name
    assert np.isfinite(feats.to_numpy()).all()
    assert list(feats.columns) == sk.feature_names()
    mirrored = sk.features(sk.mirror_keypoints(kp, 320.0))
    np.testing.assert_allclose(mirrored["handedness"], 1 - feats["handedness"])  # a mirrored left hand is a right one
    for name in ("index_pip_angle", "thumb_tip_to_index_tip", "index_extension", "palm_normal_y", "palm_normal_z"):
        np.testing.assert_allclose(mirrored[name], feats[name], atol=1e-6, err_msg=name)
    for name in ("palm_normal_x", "index_direction_x", "thumb_cmc_x"):
        np.testing.assert_allclose(mirrored[name], -feats[name], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(sk.mirror_keypoints(sk.mirror_keypoints(kp, 320.0), 320.0), kp)


def test_finger_angles_see_a_bent_finger():
    """A synthetic hand: straight fingers, then the index bent at its PIP joint."""
    sk = get_skeleton("hand")
    kp = np.zeros((1, sk.n, 4))
    kp[..., 3] = 1.0
    for f, x in zip(("thumb", "index", "middle", "ring", "pinky"), (-40, -20, 0, 20, 40)):
        for j, name in enumerate(n for n in sk.keypoints if n.startswith(f + "_")):
            kp[0, sk.index[name], :2] = (100 + x, 200 - 40 - 20 * j)
    kp[0, sk.index["wrist"], :2] = (100, 200)
    straight = sk.features(kp)
    bent = kp.copy()
    pip = bent[0, sk.index["index_pip"], :2]
    for name in ("index_dip", "index_tip"):  # fold the finger back down at the PIP joint
        bent[0, sk.index[name], 1] = 2 * pip[1] - bent[0, sk.index[name], 1]
    folded = sk.features(bent)
    assert straight["index_pip_angle"].iat[0] == pytest.approx(180, abs=1)
    assert folded["index_pip_angle"].iat[0] < 10
    assert folded["index_extension"].iat[0] < 0.5 < straight["index_extension"].iat[0]
    assert straight["fingers_extended"].iat[0] == 5 and folded["fingers_extended"].iat[0] == 4


def test_two_hands_swap_under_the_mirror_and_keep_a_lone_hand():
    sk = get_skeleton("two_hands")
    one = get_skeleton("hand")
    assert sk.n == 2 * one.n
    kp = np.full((1, sk.n, 4), np.nan)
    rng = np.random.default_rng(0)
    kp[0, : one.n, :2] = rng.uniform(50, 150, (one.n, 2))
    kp[0, : one.n, 2] = 0.0
    kp[0, : one.n, 3] = 0.1  # a left hand
    assert sk.found(kp).tolist() == [True]
    feats = sk.features(kp)
    assert np.isfinite(feats["left_index_pip_angle"]).all() and feats["right_index_pip_angle"].isna().all()
    assert feats["hands_found"].iat[0] == 1
    m = sk.mirror_keypoints(kp, 200.0)
    assert np.isnan(m[0, : one.n]).all() and np.isfinite(m[0, one.n:]).all()  # the left slot moved right
    np.testing.assert_allclose(m[0, one.n:, 3], 0.9)
    mf = sk.features(m)
    np.testing.assert_allclose(mf["right_index_pip_angle"], feats["left_index_pip_angle"])


def test_keypoint_branch_answers_a_photo_with_one_hand_of_two():
    from hybridpose.branches.keypoint import KeypointClassifier

    sk = get_skeleton("two_hands")
    half = sk.n // 2
    rng = np.random.default_rng(1)
    X = np.full((12, sk.n, 4), np.nan)
    X[:, :half, :2] = rng.uniform(50, 150, (12, half, 2))
    X[:, :half, 2:] = 0.2
    X[6:, :half, 1] += 300  # the second class holds its hand lower
    y = ["a"] * 6 + ["b"] * 6
    clf = KeypointClassifier(skeleton="two_hands", n_estimators=5).fit(X, y)
    p = clf.predict_proba(X)
    assert np.isfinite(p).all()
    assert np.isnan(clf.predict_proba(np.full((1, sk.n, 4), np.nan))).all()  # no hand: abstains


def test_cam_mask_covers_the_hand_bones_of_a_left_hand(hand_table):
    """v is handedness for hands, not visibility: a left hand (v near 0) still gets its mask."""
    import torch

    from hybridpose.train.cam import body_coverage

    sk = get_skeleton("hand")
    ok = hand_table[hand_table["status"] == "ok"]
    kp = _kp(ok)[:4].copy()
    kp[..., 3] = 0.01
    box = ok[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy()[:4]
    centre, side = (box[:, :2] + box[:, 2:]) / 2, (box[:, 2:] - box[:, :2]).max(1) * 1.3
    xy = (kp[..., :2] - centre[:, None]) / side[:, None, None] * 2  # the crop's [-1, 1] frame
    t = torch.as_tensor(np.concatenate([xy, kp[..., 3:4]], -1), dtype=torch.float32)
    cov = body_coverage(t, (14, 14), sk)
    share = cov.mean((1, 2))
    assert (share > 0.05).all() and (share < 0.8).all()
    # a missing hand of a two-hand row is NaN; the other hand still gets its mask
    two = get_skeleton("two_hands")
    t2 = torch.full((1, two.n, 3), float("nan"))
    t2[0, : sk.n] = t[0]
    assert body_coverage(t2, (14, 14), two).mean() == pytest.approx(float(share[0]), abs=0.02)


def test_found_allows_a_whole_missing_hand_only():
    two, one = get_skeleton("two_hands"), get_skeleton("hand")
    kp = np.ones((4, two.n, 4))
    kp[1, : one.n] = np.nan          # left hand missing: found
    kp[2, 3] = np.nan                # one point of a hand missing: not found
    kp[3] = np.nan                   # no hand: not found
    assert two.found(kp).tolist() == [True, True, False, False]
    single = np.ones((2, one.n, 4))
    single[1, 5] = np.nan
    assert one.found(single).tolist() == [True, False]
