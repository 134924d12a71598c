"""The trajectory branch: the nearest training clip by the path its keypoints drew."""
import json

import numpy as np
import pytest

from hybridpose.branches import branch_class
from hybridpose.branches.trajectory import FILENAME, TrajectoryNeighbours, paths
from hybridpose.errors import RunError
from hybridpose.skeletons import get_skeleton
from test_sequence import DIRECTIONS, REVERSED, SK, swipe_set


@pytest.fixture(scope="module")
def data():
    return swipe_set(1, 5, 3)


def labels(model, clips):
    return [model.classes_[i] for i in model.predict_proba(clips).argmax(1)]


def test_registered_as_a_clip_branch():
    assert branch_class("trajectory") is TrajectoryNeighbours and TrajectoryNeighbours.input == "clip_sequence"


def test_paths_ignore_where_and_how_large_the_gesture_was_drawn(data):
    X, _, _ = data
    clip = X[0]
    moved = clip.copy()
    moved[..., :2] = clip[..., :2] * 0.5 + 100.0
    assert np.allclose(paths(clip, SK, 16), paths(moved, SK, 16))
    assert paths(np.full((5, SK.n, 4), np.nan), SK, 16) is None


def test_labels_swipes_and_a_clip_played_backwards_gets_its_mirror_in_time(data):
    X, y, test = data
    model = TrajectoryNeighbours(skeleton="hand").fit(X, y)
    clips, truth = [c for c, _ in test], [d for _, d in test]
    assert labels(model, clips) == truth
    assert labels(model, [c[::-1] for c in clips]) == [REVERSED[d] for d in truth]


def test_probabilities_are_the_nearest_class_at_its_leave_one_out_accuracy(data):
    X, y, test = data
    model = TrajectoryNeighbours(skeleton="hand").fit(X, y)
    p = model.predict_proba([test[0][0], np.full((4, SK.n, 4), np.nan)])
    assert np.isclose(p[0].sum(), 1) and np.isclose(p[0].max(), model.confidence_) and np.isnan(p[1]).all()
    assert 0.9 <= model.confidence_ < 1  # the swipes are easy: every left-out one finds its class
    noisy = TrajectoryNeighbours(skeleton="hand").fit(X, list(np.random.default_rng(0).permutation(y)))
    assert noisy.confidence_ < model.confidence_  # shuffled labels: the neighbour is right less often


def test_flip_pairs_teach_the_mirrored_class(data):
    """Trained on left swipes only, with left/right declared mirror classes: a right swipe is labelled right."""
    X, y, test = data
    keep = [i for i, c in enumerate(y) if c != "right"]
    model = TrajectoryNeighbours(skeleton="hand", flip_pairs={"left": "right", "right": "left"})
    model.fit([X[i] for i in keep], [y[i] for i in keep], classes=sorted(DIRECTIONS))
    rights = [c for c, d in test if d == "right"]
    assert labels(model, rights) == ["right"] * len(rights)
    plain = TrajectoryNeighbours(skeleton="hand").fit([X[i] for i in keep], [y[i] for i in keep], classes=sorted(DIRECTIONS))
    assert "right" not in labels(plain, rights)


def test_saves_loads_and_refuses_a_damaged_file(data, tmp_path):
    X, y, test = data
    model = TrajectoryNeighbours(skeleton="hand").fit(X, y)
    model.save(tmp_path / FILENAME)
    back = TrajectoryNeighbours.load(tmp_path / FILENAME)
    clips = [c for c, _ in test]
    assert np.allclose(back.predict_proba(clips), model.predict_proba(clips), atol=1e-6)
    d = json.loads((tmp_path / FILENAME).read_text())
    d["labels"] = d["labels"][:-1]
    (tmp_path / FILENAME).write_text(json.dumps(d))
    with pytest.raises(RunError, match="not a hybridpose trajectory model"):
        TrajectoryNeighbours.load(tmp_path / FILENAME)


def test_no_clip_with_a_skeleton_is_an_error_that_says_so():
    with pytest.raises(RunError, match="no clip with a skeleton"):
        TrajectoryNeighbours(skeleton="hand").fit([np.full((4, SK.n, 4), np.nan)], ["left"])


def test_body_clips_work_too():
    body = get_skeleton("body")
    rng = np.random.default_rng(0)
    pose = rng.normal(0, 40, (body.n, 2))

    def squat(down):
        t = np.sin(np.linspace(0, np.pi, 12)) * (1 if down else -1)
        kp = np.zeros((12, body.n, 4))
        kp[..., :2] = pose[None] + np.c_[np.zeros(12), 60 * t][:, None] + 300 + rng.normal(0, 2, (12, body.n, 2))
        kp[..., 2:] = 1.0
        return kp

    X, y = [squat(i % 2 == 0) for i in range(8)], ["down" if i % 2 == 0 else "up" for i in range(8)]
    model = TrajectoryNeighbours(skeleton="body").fit(X, y)
    assert labels(model, [squat(True), squat(False)]) == ["down", "up"]
