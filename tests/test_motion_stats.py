"""Order-aware clip statistics (pose/temporal.py), frame-position features, and calibrate --statistics.

Synthetic hands moved along known paths: played backwards, the order-aware statistics change sign; a clockwise and a
counter-clockwise circle turn opposite ways; a wagging finger reverses; the same motion closer to the camera (bigger
in pixels) gives the same statistics. Then the rule refiner on a small pair: with a thousand statistics scanned the
bar is out of reach, with the one named it keeps the rule that helps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hybridpose.data.hierarchy import Hierarchy
from hybridpose.errors import RulesError
from hybridpose.pose.temporal import (
    ORDER_STATISTICS,
    STATISTICS,
    clip_statistics,
    reversals,
    statistic_names,
    turning_angle,
)
from hybridpose.rules import calibrate_rules
from hybridpose.rules.calibrate import select_statistics
from hybridpose.skeletons import get_skeleton

HAND = get_skeleton("hand")
RNG = np.random.default_rng(0)
SHAPE = RNG.uniform(-30, 30, (HAND.n, 2))
SHAPE[HAND.index["wrist"]] = (0, 0)
SHAPE[HAND.index["middle_mcp"]] = (0, -40)  # palm: 40 px
SHAPE[HAND.index["index_tip"]] = (0, -90)   # the top-most point: a raised index finger


def hand_clip(path: np.ndarray, scale: float = 1.0, centre=(320.0, 240.0), wag: np.ndarray | None = None) -> np.ndarray:
    """(T, 21, 4) keypoints of a hand whose wrist follows ``path`` (palm sizes, y up), ``scale`` x 40 px per palm;
    ``wag`` moves only the index fingertip sideways (palm sizes per frame)."""
    path = np.asarray(path, dtype=float)
    kp = np.zeros((len(path), HAND.n, 4))
    kp[..., 3] = 0.9
    kp[..., :2] = np.asarray(centre) + scale * SHAPE[None]
    kp[..., 0] += scale * 40 * path[:, None, 0]
    kp[..., 1] -= scale * 40 * path[:, None, 1]
    if wag is not None:
        kp[:, HAND.index["index_tip"], 0] += scale * 40 * wag
    return kp


def times(n: int) -> np.ndarray:
    return np.arange(n) / 10.0


def circle(clockwise: bool, n: int = 20, r: float = 2.0) -> np.ndarray:
    th = np.linspace(0, 2 * np.pi, n) * (-1 if clockwise else 1)
    return np.c_[r * np.cos(th), r * np.sin(th)]


def swipe(n: int = 12, dx: float = 4.0, dy: float = 0.0) -> np.ndarray:
    s = np.linspace(-0.5, 0.5, n)
    return np.c_[dx * s, dy * s]


def test_backwards_clip_changes_sign_of_order_aware_statistics_only():
    """A right swipe played backwards is a left swipe: net, heading and turning negate, start and end swap; the
    statistics that ignore order do not move."""
    path = swipe(dy=1.0) + np.c_[np.zeros(12), 0.3 * np.sin(np.linspace(0, np.pi, 12))]  # a slight arc
    kp = hand_clip(path)
    fwd = clip_statistics(kp, times(12), HAND, (640, 480))
    back = clip_statistics(kp[::-1], times(12), HAND, (640, 480))
    assert fwd["net_path_index_tip_x"] == pytest.approx(4.0 * 11 / 12, rel=0.2)  # about 4 palms to the right
    for name in ("net_path_index_tip_x", "net_path_wrist_y", "heading_cos_index_tip", "heading_sin_wrist",
                 "turning_index_tip", "net_frame_index_tip_x", "net_index_tip_x"):
        assert back[name] == pytest.approx(-fwd[name], abs=1e-9), name
    assert abs(fwd["turning_index_tip"]) > 10 and fwd["heading_cos_index_tip"] > 0.9
    assert back["start_path_wrist_x"] == pytest.approx(fwd["end_path_wrist_x"])
    assert back["end_frame_wrist_y"] == pytest.approx(fwd["start_frame_wrist_y"])
    for s in ("min", "max", "range", "mean", "std"):
        assert back[f"{s}_path_index_tip_x"] == pytest.approx(fwd[f"{s}_path_index_tip_x"]), s
    assert back["straightness_wrist"] == pytest.approx(fwd["straightness_wrist"])
    assert back["reversals_x_wrist"] == fwd["reversals_x_wrist"]


def test_turning_angle_sign_clockwise_vs_counter_clockwise():
    ccw = clip_statistics(hand_clip(circle(clockwise=False)), times(20), HAND)
    cw = clip_statistics(hand_clip(circle(clockwise=True)), times(20), HAND)
    assert 270 < ccw["turning_index_tip"] < 380 and -380 < cw["turning_index_tip"] < -270
    assert ccw["straightness_wrist"] < 0.2  # back about where it started
    line = clip_statistics(hand_clip(swipe()), times(12), HAND)
    assert abs(line["turning_wrist"]) < 1 and line["straightness_wrist"] > 0.85
    # jitter below MIN_STEP does not turn a still point
    still = np.c_[RNG.normal(0, 0.01, 30), RNG.normal(0, 0.01, 30)]
    assert turning_angle(still) == 0.0


def test_reversal_counts_wagging_and_jitter():
    wag = np.sin(np.linspace(0, 6 * np.pi, 31))  # three periods: six turns back
    assert reversals(wag) == 6
    assert reversals(0.1 * wag) == 0  # smaller than REVERSAL_SIZE: jitter
    assert reversals(np.linspace(0, 3, 10)) == 0
    s = clip_statistics(hand_clip(np.c_[wag, np.zeros(31)]), times(31), HAND)
    assert s["reversals_x_wrist"] == 6 and s["reversals_y_wrist"] == 0


def test_extreme_point_statistic_sees_a_wagging_fingertip():
    """number one vs wagging finger: only the top-most point (the index tip) moves sideways."""
    n = 21
    still = clip_statistics(hand_clip(np.zeros((n, 2))), times(n), HAND)
    wagging = clip_statistics(hand_clip(np.zeros((n, 2)), wag=0.8 * np.sin(np.linspace(0, 4 * np.pi, n))),
                              times(n), HAND)
    assert still["range_topmost_x"] == pytest.approx(0.0, abs=1e-9)
    assert wagging["range_topmost_x"] == pytest.approx(1.6, rel=0.05)  # 0.8 palms either way
    assert wagging["range_path_wrist_x"] == pytest.approx(0.0, abs=1e-9)  # the hand itself is still
    assert wagging["reversals_x_index_tip"] >= 3


def test_motion_statistics_hold_across_distance_to_the_camera():
    """The same gesture twice as close (everything twice as big in pixels, and in a frame twice as big) gives the
    same path statistics; the frame position is in [0, 1] of the frame."""
    path = circle(clockwise=False, n=16) + swipe(n=16)
    near = clip_statistics(hand_clip(path, scale=2.0, centre=(640, 480)), times(16), HAND, (1280, 960))
    far = clip_statistics(hand_clip(path, scale=1.0, centre=(320, 240)), times(16), HAND, (640, 480))
    for name in statistic_names(HAND):
        a, b = near[name], far[name]
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9), name
    assert 0 <= far["min_frame_wrist_x"] <= far["max_frame_wrist_x"] <= 1
    no_size = clip_statistics(hand_clip(path), times(16), HAND)
    assert np.isnan(no_size["mean_frame_wrist_x"]) and no_size["net_path_wrist_x"] == pytest.approx(far["net_path_wrist_x"])


def test_frames_without_a_hand_are_left_out():
    path = swipe(n=10)
    kp = hand_clip(path)
    gaps = np.concatenate([kp[:3], HAND.empty(4), kp[3:], HAND.empty(2)])
    t_gaps = np.r_[times(3), np.linspace(0.25, 0.28, 4), times(10)[3:] + 0.0, [1.5, 1.6]]
    s = clip_statistics(gaps, t_gaps, HAND)
    full = clip_statistics(kp, times(10), HAND)
    assert s["found"] == pytest.approx(10 / 16)
    for name in ("net_path_index_tip_x", "turning_wrist", "range_topmost_x", "heading_cos_wrist", "mean_index_tip_x"):
        assert s[name] == pytest.approx(full[name]), name
    none = clip_statistics(HAND.empty(5), times(5), HAND)
    assert none["found"] == 0 and np.isnan(none["net_path_wrist_x"]) and np.isnan(none["turning_wrist"])


def test_statistic_names_are_complete_and_per_skeleton():
    for name in ("hand", "two_hands", "body"):
        sk = get_skeleton(name)
        names = statistic_names(sk)
        assert len(names) == len(set(names))
        n_frame = len(sk.feature_names()) + 4 * len(sk.tracked()) + 4
        assert len(names) == (len(STATISTICS) + len(ORDER_STATISTICS)) * n_frame + 6 * len(sk.tracked()) + 1
        s = clip_statistics(sk.empty(2), [0, 1], sk)
        assert set(s) == set(names)
    # two hands: a frame with one hand counts as found; the other hand's paths are NaN, not the whole clip
    two = get_skeleton("two_hands")
    kp = two.empty(8)
    kp[:, two.index["right_wrist"]:, :] = hand_clip(swipe(n=8))
    s = clip_statistics(kp, times(8), two)
    assert s["found"] == 1.0 and s["net_path_right_wrist_x"] > 2 and np.isnan(s["net_path_left_wrist_x"])


# --------------------------------------------------------------------------- calibrate --statistics

LEAVES = ["left", "right", "up"]
FLAT = Hierarchy(["class"], {c: [] for c in LEAVES})


def small_pair(n: int = 14, noise_columns: int = 1000, seed: int = 0):
    """left vs right, n clips each, told apart by net_path_index_tip_x; the fused model is a coin flip between them."""
    rng = np.random.default_rng(seed)
    y = ["left"] * n + ["right"] * n + ["up"] * n
    net = np.r_[rng.normal(-2, 0.4, n), rng.normal(2, 0.4, n), rng.normal(0, 0.4, n)]
    probs = np.full((3 * n, 3), 0.05)
    for i in range(2 * n):
        right_first = (i % 2 == 0) == (i >= n)  # half of each class wrong
        probs[i, :2] = (0.45, 0.5) if right_first else (0.5, 0.45)
    probs[2 * n:, 2] = 0.9
    cols = {f"range_noise_{j}": rng.normal(size=3 * n) for j in range(noise_columns)}
    features = pd.DataFrame({"net_path_index_tip_x": net, "net_path_wrist_x": net + rng.normal(0, 0.2, 3 * n), **cols})
    return features, y, probs


def test_named_statistics_lower_the_bar_and_a_helping_rule_is_kept():
    features, y, probs = small_pair()
    rules, table = calibrate_rules(features, y, probs, LEAVES, FLAT)
    row = table.iloc[0]
    assert rules.rules == [] and row["decided_by"] == "sign_test"  # 14 fixes cannot beat 0.05 / 1002
    assert row["n_scanned"] == 1002 and row["max_p"] == pytest.approx(0.05 / 1002, rel=1e-2)
    assert row["n_fixed"] >= 12 and row["n_broken"] == 0  # ... although the rule fixes every confused clip
    names = select_statistics(list(features.columns), ["net_path_*"])
    assert names == ["net_path_index_tip_x", "net_path_wrist_x"]
    rules, table = calibrate_rules(features, y, probs, LEAVES, FLAT, statistics=names)
    assert [r.statistic for r in rules.rules] and rules.rules[0].statistic.startswith("net_path_")
    assert rules.rules[0].pair[0] == "right" and table.iloc[0]["n_scanned"] == 2 and bool(table.iloc[0]["kept"])
    assert rules.meta["n_statistics"] == 2
    decided, _ = rules.apply(probs, LEAVES, features)
    wrong = [i for i in range(28) if LEAVES[int(np.argmax(probs[i]))] != y[i]]
    assert sum(decided[i] == y[i] for i in wrong) >= 12


def test_select_statistics_globs_default_and_errors():
    cols = ["net_path_wrist_x", "net_frame_wrist_x", "range_topmost_x", "found"]
    assert select_statistics(cols, None, ("*_frame_*",)) == ["net_path_wrist_x", "range_topmost_x", "found"]
    assert select_statistics(cols, ["range_topmost_x", "net_*"]) == ["net_path_wrist_x", "net_frame_wrist_x",
                                                                     "range_topmost_x"]
    with pytest.raises(RulesError, match="net_pth"):
        select_statistics(cols, ["net_pth_*"])


def test_report_counts_clips_by_frames_with_a_skeleton(tmp_path):
    from hybridpose.evaluation.evaluate import found_bands
    from hybridpose.evaluation.report import write_report

    frame = pd.DataFrame({"path": list("abcdef"), "found": [0.0, 0.2, 0.5, 0.95, 1.0, 1.0],
                          "true_class": ["x"] * 6, "pred_fused_class": ["y", "x", "x", "y", "x", "x"]})
    bands = found_bands(frame, Hierarchy(["class"], {"x": [], "y": []}))
    assert [b["clips"] for b in bands] == [1, 1, 1, 3]
    assert [b["top-1 %"] for b in bands] == [0.0, 100.0, 100.0, pytest.approx(66.7)]
    html = write_report(tmp_path, {"found": bands}, title="t").read_text()
    assert "Frames with a skeleton" in html and "under half" in html
