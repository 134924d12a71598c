"""Keypoint features: names, mirror symmetry, NaN rows, torso normalisation; MediaPipe on a mirrored photo."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import standing_keypoints
from hybridpose.pose.frontend import extract, keypoints_array
from hybridpose.skeletons.body import (
    KEYPOINT_NAMES,
    MIRROR_INDEX,
    feature_names,
    features,
    mirror_feature_name,
    mirror_keypoints,
    normalise,
)


def _people(n: int = 12, seed: int = 0) -> np.ndarray:
    """n jittered variants of the standing skeleton, with random limb poses (pixels)."""
    rng = np.random.default_rng(seed)
    base = standing_keypoints()
    out = np.repeat(base[None], n, axis=0)
    out[..., :2] += rng.normal(0, 25, (n, 33, 2))
    out[..., 2] = rng.normal(0, 30, (n, 33))
    out[..., 3] = rng.uniform(0.2, 1.0, (n, 33))
    return out


@pytest.fixture(scope="module")
def real_keypoints(sample_poses) -> np.ndarray:
    ok = sample_poses[sample_poses["status"] == "ok"]
    return keypoints_array(ok)


# --- names ------------------------------------------------------------------------------


def test_names_unique_and_readable():
    names = feature_names()
    assert len(names) == len(set(names))
    assert len(names) > 150
    for name in names:
        assert re.fullmatch(r"[a-z][a-z0-9_]*[a-z0-9]", name), name
        assert "__" not in name, name
    assert list(features(_people(2)).columns) == names
    for expected in ("left_knee_angle", "right_knee_angle", "min_knee_angle", "max_knee_angle", "torso_tilt",
                     "nose_x", "left_wrist_visibility", "wrist_distance", "left_wrist_to_right_ankle"):
        assert expected in names


def test_every_sided_statistic_has_its_partner_and_min_max():
    names = set(feature_names())
    for name in names:
        assert mirror_feature_name(name) in names, name
        if name.startswith("left_") and not name.endswith(("_x", "_y", "_z", "_visibility")) and "_to_" not in name:
            stat = name[len("left_"):]
            assert {f"min_{stat}", f"max_{stat}"} <= names, stat


def test_mirror_feature_name_swaps_sides():
    assert mirror_feature_name("left_knee_angle") == "right_knee_angle"
    assert mirror_feature_name("right_wrist_to_left_ankle") == "left_wrist_to_right_ankle"
    assert mirror_feature_name("min_knee_angle") == "min_knee_angle"
    assert mirror_feature_name(mirror_feature_name("left_eye_inner_x")) == "left_eye_inner_x"


def test_min_max_bracket_both_sides(real_keypoints):
    f = features(real_keypoints)
    for name in f.columns:
        if name.startswith("min_"):
            stat = name[4:]
            left, right = f[f"left_{stat}"], f[f"right_{stat}"]
            np.testing.assert_allclose(f[name], np.fmin(left, right))
            np.testing.assert_allclose(f[f"max_{stat}"], np.fmax(left, right))


# --- mirroring --------------------------------------------------------------------------


def test_mirror_index_swaps_left_and_right():
    for i, name in enumerate(KEYPOINT_NAMES):
        other = KEYPOINT_NAMES[MIRROR_INDEX[i]]
        assert other == mirror_feature_name(name)
    assert (MIRROR_INDEX[MIRROR_INDEX] == np.arange(33)).all()


def test_mirror_twice_is_identity():
    kp = _people(5)
    np.testing.assert_allclose(mirror_keypoints(mirror_keypoints(kp, 400), 400), kp)
    widths = np.array([300.0, 400, 500, 600, 700])[:, None]  # per-photo widths broadcast
    np.testing.assert_allclose(mirror_keypoints(mirror_keypoints(kp, widths), widths), kp)


def test_mirror_moves_points_and_swaps_names():
    kp = standing_keypoints(width=400)
    m = mirror_keypoints(kp, 400)
    lw, rw = KEYPOINT_NAMES.index("left_wrist"), KEYPOINT_NAMES.index("right_wrist")
    assert m[rw, 0] == pytest.approx(400 - kp[lw, 0])
    assert m[rw, 1] == kp[lw, 1] and m[rw, 3] == kp[lw, 3]
    nose = KEYPOINT_NAMES.index("nose")
    assert m[nose, 0] == pytest.approx(400 - kp[nose, 0])
    assert kp.shape == m.shape


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_features_of_mirror_equal_swapped_features(source, real_keypoints):
    kp = _people(16) if source == "synthetic" else real_keypoints[:30]
    width = 1000.0
    f = features(kp)
    fm = features(mirror_keypoints(kp, width))
    assert f.notna().all().all() and fm.notna().all().all()
    x_coords = {f"{n}_x" for n in KEYPOINT_NAMES}
    for name in f.columns:
        partner = fm[mirror_feature_name(name)].to_numpy()
        mine = f[name].to_numpy()
        if name in x_coords:  # normalised x is measured from the hip centre: a mirror flips its sign
            np.testing.assert_allclose(partner, -mine, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_allclose(partner, mine, rtol=1e-9, atol=1e-9, err_msg=name)
    for name in f.columns:
        if name.startswith(("min_", "max_")) or mirror_feature_name(name) == name and name not in x_coords:
            np.testing.assert_allclose(fm[name], f[name], rtol=1e-9, atol=1e-9, err_msg=name)


# --- NaN rows and normalisation ---------------------------------------------------------


def test_nan_keypoints_give_nan_rows():
    kp = _people(4)
    kp[1] = np.nan             # no person
    kp[3, 5, 0] = np.nan       # one coordinate missing
    f = features(kp)
    assert len(f) == 4
    assert f.iloc[1].isna().all() and f.iloc[3].isna().all()
    assert f.iloc[0].notna().all() and f.iloc[2].notna().all()
    # the same rows as computed alone
    pd.testing.assert_series_equal(f.iloc[2], features(kp[2:3]).iloc[0], check_names=False)


def test_empty_input_gives_named_empty_frame():
    f = features(np.zeros((0, 33, 4)))
    assert len(f) == 0 and list(f.columns) == feature_names()


@pytest.mark.parametrize("scale,shift", [(2.0, (0.0, 0.0)), (0.37, (120.0, -40.0)), (5.0, (-900.0, 3000.0))])
def test_torso_normalisation_makes_features_invariant(real_keypoints, scale, shift):
    kp = real_keypoints[:20]
    moved = kp.copy()
    moved[..., :3] *= scale
    moved[..., 0] += shift[0]
    moved[..., 1] += shift[1]
    a, b = features(kp), features(moved)
    pd.testing.assert_frame_equal(a, b, rtol=1e-7, atol=1e-7)


def test_normalised_coordinates_are_hip_centred_and_torso_scaled():
    kp = standing_keypoints()[None]
    p, scale = normalise(kp)
    K = {n: i for i, n in enumerate(KEYPOINT_NAMES)}
    hip = (p[0, K["left_hip"], :2] + p[0, K["right_hip"], :2]) / 2
    shoulder = (p[0, K["left_shoulder"], :2] + p[0, K["right_shoulder"], :2]) / 2
    np.testing.assert_allclose(hip, 0, atol=1e-12)
    assert np.linalg.norm(shoulder - hip) == pytest.approx(1.0)
    assert shoulder[1] > 0  # y points up
    assert scale[0] == pytest.approx(180.0)  # pixel torso length of the skeleton


def test_upright_skeleton_reads_as_upright():
    f = features(standing_keypoints()[None]).iloc[0]
    assert f["torso_tilt"] < 10                     # upright
    assert f["min_knee_angle"] > 160                # straight legs
    assert f["head_height"] > f["hip_height"] > 0   # head above hips above the floor
    upside_down = standing_keypoints()
    upside_down[:, 1] = 600 - upside_down[:, 1]
    g = features(upside_down[None]).iloc[0]
    assert g["torso_tilt"] > 170
    assert g["head_height"] < g["hip_height"]


def test_head_below_hips_is_positive_when_the_head_hangs_below_the_hips():
    upright = features(standing_keypoints()[None]).iloc[0]
    upside_down = standing_keypoints()
    upside_down[:, 1] = 600 - upside_down[:, 1]
    inverted = features(upside_down[None]).iloc[0]
    assert inverted["head_below_hips"] > 0 > upright["head_below_hips"]


# --- MediaPipe on a mirrored photo ------------------------------------------------------


def test_mediapipe_on_flipped_photo_gives_mirrored_keypoints(sample_dataset, tmp_path):
    paths = list(sample_dataset.paths[::8])
    flipped = []
    for i, p in enumerate(paths):
        with Image.open(p) as img:
            q = tmp_path / f"flipped_{i}.png"
            img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(q)
            flipped.append(q)
    a, b = extract(paths, show_progress=False), extract(flipped, show_progress=False)
    checked = 0
    for i in range(len(paths)):
        if a["status"].iat[i] != "ok" or b["status"].iat[i] != "ok":
            continue
        width, size = a["width"].iat[i], max(a["width"].iat[i], a["height"].iat[i])
        orig = keypoints_array(a.iloc[[i]])[0]
        back = mirror_keypoints(keypoints_array(b.iloc[[i]])[0], width)
        vis = (orig[:, 3] > 0.5) & (back[:, 3] > 0.5)
        assert vis.sum() >= 15, paths[i]
        err = np.abs(orig[vis, :2] - back[vis, :2]).max(1) / size
        assert err.max() < 0.05, (paths[i], err.max())
        assert np.median(err) < 0.015, (paths[i], np.median(err))
        checked += 1
    assert checked >= 8
