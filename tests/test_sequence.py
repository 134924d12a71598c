"""The sequence branch: a temporal network over a clip's keypoint track that sees the order of the frames."""
from pathlib import Path

import numpy as np
import pytest

from hybridpose.branches import branch_class
from hybridpose.branches.sequence import SequenceClassifier, resample
from hybridpose.errors import RunError
from hybridpose.pose.temporal import clip_statistics
from hybridpose.skeletons import get_skeleton

SK = get_skeleton("hand")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # image y points down
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up"}


def swipe(rng, direction, frames, hand, missing=0, handed=0.9):
    """A hand of fixed shape moving 200 px across a 640x480 frame, with jitter; ``missing`` frames without it."""
    dx, dy = DIRECTIONS[direction]
    t = np.linspace(0, 1, frames)
    centre = np.array([320.0, 240.0]) + np.c_[dx * t, dy * t] * 200 + rng.normal(0, 5, 2)
    kp = np.zeros((frames, SK.n, 4))
    kp[..., :2] = hand[None] * rng.uniform(0.8, 1.2) + centre[:, None] + rng.normal(0, 2, (frames, SK.n, 2))
    kp[..., 3] = handed
    kp[rng.choice(frames, missing, replace=False)] = np.nan
    return kp


def swipe_set(seed, per_class, tests_per_class):
    """Training swipes (10-30 frames, up to 3 without the hand) of one hand in every direction, and held-out
    ones (20 frames, 3 without it): X, y, [(clip, direction)]."""
    rng = np.random.default_rng(seed)
    hand = rng.normal(0, 30, (SK.n, 2))
    X, y = [], []
    for d in DIRECTIONS:
        for _ in range(per_class):
            X.append(swipe(rng, d, int(rng.integers(10, 30)), hand, missing=int(rng.integers(0, 4))))
            y.append(d)
    test = [(swipe(rng, d, 20, hand, missing=3), d) for d in DIRECTIONS for _ in range(tests_per_class)]
    return X, y, test


@pytest.fixture(scope="module")
def swipes():
    X, y, test = swipe_set(0, 8, 2)
    model = SequenceClassifier(skeleton="hand", epochs=60, seeds=1).fit(X, y)
    return model, test


def test_registered_as_a_clip_branch():
    assert branch_class("sequence") is SequenceClassifier and SequenceClassifier.input == "clip_sequence"


def test_resample_uses_the_frames_with_a_skeleton():
    kp = np.full((5, SK.n, 4), np.nan)
    kp[1, ..., :2], kp[3, ..., :2] = 0.0, 10.0
    kp[[1, 3], ..., 2:] = 1.0
    seq = resample(kp, SK, 3)
    assert seq.shape == (3, SK.n, 4) and np.allclose(seq[:, 0, 0], [0, 5, 10])
    assert resample(np.full((4, SK.n, 4), np.nan), SK, 3) is None


def test_resample_keeps_each_frame_at_its_time():
    """A hand lost for a while: the frames after the gap are later in the clip, not squeezed up to the first."""
    kp = np.full((7, SK.n, 4), np.nan)
    for i, x in ((0, 0.0), (1, 10.0), (6, 60.0)):
        kp[i, ..., :2], kp[i, ..., 2:] = x, 1.0
    seq = resample(kp, SK, 4)
    assert np.allclose(seq[:, 0, 0], [0, 20, 40, 60])  # times 0, 2, 4, 6: linear over the gap
    assert np.allclose(resample(kp[1:], SK, 2)[:, 0, 0], [10, 60])  # starts at the first frame with a skeleton


def test_labels_swipes_and_a_clip_played_backwards_gets_its_mirror_in_time(swipes):
    model, test = swipes
    clips, truth = [c for c, _ in test], [d for _, d in test]
    forward = [model.classes_[i] for i in model.predict_proba(clips).argmax(1)]
    backward = [model.classes_[i] for i in model.predict_proba([c[::-1] for c in clips]).argmax(1)]
    assert forward == truth
    assert backward == [REVERSED[d] for d in truth]


def test_order_aware_statistics_change_sign_when_played_backwards(swipes):
    _, test = swipes
    clip = test[0][0]  # a left swipe
    times = np.arange(len(clip)) / 10
    fwd, bwd = clip_statistics(clip, times, SK), clip_statistics(clip[::-1], times, SK)
    assert fwd["net_path_index_tip_x"] < -1 and bwd["net_path_index_tip_x"] == pytest.approx(-fwd["net_path_index_tip_x"])
    assert fwd["heading_cos_index_tip"] == pytest.approx(-bwd["heading_cos_index_tip"])
    assert fwd["range_path_index_tip_x"] == pytest.approx(bwd["range_path_index_tip_x"])  # order-free: the same


def test_abstains_without_a_skeleton_and_saves_and_loads(swipes, tmp_path):
    model, test = swipes
    clips = [test[0][0], np.full((6, SK.n, 4), np.nan)]
    p = model.predict_proba(clips)
    assert np.isfinite(p[0]).all() and np.isclose(p[0].sum(), 1) and np.isnan(p[1]).all()
    model.save(tmp_path / "sequence_model.json")
    back = SequenceClassifier.load(tmp_path / "sequence_model.json")
    assert back.classes_ == model.classes_
    assert np.allclose(back.predict_proba(clips[:1]), p[:1], atol=1e-6)


def test_a_running_label_looks_back_as_long_as_a_training_clip_lasts(tmp_path):
    """Fitted with each clip's length, the running label over a clip's frames (with their times) is decided on
    the last seconds a training clip lasts, whatever the clip's frame rate: a left swipe followed by a right one
    reads left at the end of the first and right at the end of the second; the length is saved."""
    rng = np.random.default_rng(2)
    hand = rng.normal(0, 30, (SK.n, 2))
    X = [swipe(rng, d, 40, hand) for d in ["left", "right"] * 6]  # 1 s each, at 40 frames a second
    model = SequenceClassifier(skeleton="hand", epochs=60, seeds=1).fit(X, ["left", "right"] * 6, seconds=[1.0] * 12)
    assert model.seconds_ == 1.0 and model.frames_ == 40
    both = np.concatenate([swipe(rng, "left", 20, hand), swipe(rng, "right", 20, hand)])
    times = np.arange(40) / 20.0  # a clip sampled at 20 frames a second: a second is 20 frames here
    p = model.running_proba(both, times=times)
    assert [model.classes_[i] for i in p[[19, 39]].argmax(1)] == ["left", "right"]
    by_count = model.running_proba(both)[39]  # the last 40 frames: both swipes, there and back
    assert p[39].max() > by_count.max()
    model.save(tmp_path / "sequence_model.json")
    assert SequenceClassifier.load(tmp_path / "sequence_model.json").seconds_ == 1.0


def test_a_damaged_weights_file_is_one_error(swipes, tmp_path):
    model, _ = swipes
    model.save(tmp_path / "sequence_model.json")
    (tmp_path / "sequence_model.pt").write_bytes(b"not torch")
    with pytest.raises(RunError, match="sequence model"):
        SequenceClassifier.load(tmp_path / "sequence_model.json")


def test_mirrors_only_with_flip_pairs():
    rng = np.random.default_rng(1)
    hand = rng.normal(0, 30, (SK.n, 2)) * [0, 1]  # its own mirror image: only the motion tells a mirrored clip
    X = [swipe(rng, d, 16, hand, handed=0.5) for d in ["left"] * 6 + ["right"] * 6]
    y = ["left"] * 6 + ["right"] * 6
    # trained on left swipes only, with the pair declared: the mirrored copies teach it what a right swipe is
    only_left = SequenceClassifier(skeleton="hand", epochs=40, seeds=1, flip_pairs={"left": "right", "right": "left"})
    only_left.fit(X[:6], y[:6], classes=["left", "right"])
    assert [only_left.classes_[i] for i in only_left.predict_proba(X[6:]).argmax(1)].count("right") >= 5
    without = SequenceClassifier(skeleton="hand", epochs=40, seeds=1).fit(X[:6], y[:6], classes=["left", "right"])
    assert [without.classes_[i] for i in without.predict_proba(X[6:]).argmax(1)].count("right") == 0


EGO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "egogestar"


@pytest.mark.slow
def test_frames_without_a_hand_get_a_second_look_in_clips_only(tmp_path):
    """On a real clip with a busy background the hand model finds the hand in few frames; the retry finds more,
    and leaves the frames it had found alone."""
    from hybridpose.data.clips import FrameCache, Sample, clip_frames
    from hybridpose.data.video import Sampling
    from hybridpose.pose.frontend import extract

    clip = EGO / "down" / "testvideo_down_3.mp4"
    if not clip.is_file():
        pytest.skip("../shared/data/egogestar is not here (the repository holds none of its clips)")
    frames = clip_frames(Sample(clip, "video"), Sampling(fps=4, min_frames=16), FrameCache(tmp_path)).paths
    first = extract(frames, skeleton="hand", cache_dir=tmp_path, show_progress=False)
    both = extract(frames, skeleton="hand", cache_dir=tmp_path, show_progress=False, retry=True)
    ok1, ok2 = (first["status"] == "ok").to_numpy(), (both["status"] == "ok").to_numpy()
    assert len(frames) == 16 and ok2.sum() >= ok1.sum() + 4 and (ok2 | ~ok1).all()
    cols = [c for c in first.columns if c.endswith("_x") or c.endswith("_y")]
    assert np.allclose(first.loc[ok1, cols].to_numpy(float), both.loc[ok1, cols].to_numpy(float))
    again = extract(frames, skeleton="hand", cache_dir=tmp_path, show_progress=False)  # photos: no second look
    assert (again["status"] == first["status"]).all()
