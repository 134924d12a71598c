"""A second chance before "nobody" (issue 22, item 5): ``extract(second_look=True)`` gives a photo where the pose
model found no hand / nobody a stricter second look; off by default."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO_00 = ROOT / "tests" / "data" / "hands" / "photo" / "photo_00.jpg"
SHARED = ROOT.parent / "shared" / "data"
# photo_00's full-size original (640 x 480) in hands14, and a yoga8 photo where MediaPipe Pose finds nobody
ORIGINAL = SHARED / "hands14" / "photo" / "0459928b-79fd-4209-8e37-a914079d23f1_org.jpg"
NOBODY_FOUND = SHARED / "yoga8" / "ArdhaChandrasana" / "v8.jpeg"


def test_photo_00_stays_no_hand_with_the_second_look():
    from hybridpose.pose.frontend import extract

    for second in (False, True):
        table = extract([PHOTO_00], skeleton="hand", use_cache=False, show_progress=False, second_look=second)
        assert table["status"].tolist() == ["no_hand"] and np.isnan(table.loc[0, "box_x0"])


def test_each_pose_model_has_its_own_second_look_and_the_multi_person_model_is_unchanged():
    from hybridpose.pose.estimators import ESTIMATORS
    from hybridpose.pose.frontend import estimator_class, retry_class

    pairs = {"mediapipe_hands": "mediapipe_hands_second", "mediapipe_pose": "mediapipe_pose_second",
             "mediapipe_people": "mediapipe_people_second"}
    for base, second in pairs.items():
        found = retry_class(ESTIMATORS[base], "second_look_of")
        assert found is ESTIMATORS[second] and found.version != ESTIMATORS[base].version
    assert retry_class(ESTIMATORS["mediapipe_hands"]).name == "mediapipe_hands_retry"  # the clips' retry as before
    assert estimator_class("body", 4).name == "mediapipe_people" and estimator_class("body").name == "mediapipe_pose"


def test_a_second_look_keeps_a_whole_body_of_the_photos_size_only():
    from hybridpose.pose.estimators.mediapipe_pose import plausible_body

    body = np.zeros((33, 4))
    body[:, 1] = np.linspace(0.1, 0.9, 33)  # head to feet over 80 % of the photo's height
    body[:, 3] = 0.95
    assert plausible_body(body)
    arm = body.copy()
    arm[:, 1] = np.linspace(0.5, 0.75, 33)  # an arm at the photo's edge taken for a small person
    assert not plausible_body(arm)
    half_seen = body.copy()
    half_seen[16:, 3] = 0.2  # the legs guessed, not seen
    assert not plausible_body(half_seen)


def test_an_empty_picture_stays_empty(tmp_path):
    from hybridpose.pose.frontend import extract

    rng = np.random.default_rng(0)
    empty = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(empty)
    for skeleton, max_people, nobody in (("hand", 1, "no_hand"), ("body", 1, "no_person"), ("body", 4, "no_person")):
        table = extract([empty], skeleton=skeleton, max_people=max_people, use_cache=False, show_progress=False,
                        second_look=True)
        assert table["status"].tolist() == [nobody]


@pytest.mark.skipif(not ORIGINAL.is_file(), reason="../shared/data/hands14 absent")
def test_the_full_size_original_of_photo_00_gets_its_raised_hand(tmp_path):
    from hybridpose.pose.frontend import extract

    cache = tmp_path / "cache"
    plain = extract([ORIGINAL], skeleton="hand", cache_dir=cache, show_progress=False)
    assert plain["status"].tolist() == ["no_hand"]
    second = extract([ORIGINAL], skeleton="hand", cache_dir=cache, show_progress=False, second_look=True)
    assert second["status"].tolist() == ["ok"]
    x = (second.loc[0, "box_x0"] + second.loc[0, "box_x1"]) / 2 / 640
    y = (second.loc[0, "box_y0"] + second.loc[0, "box_y1"]) / 2 / 480
    assert 0.66 < x < 0.78 and 0.33 < y < 0.5  # the hand held up beside the face, not the one at the frame's edge
    again = extract([ORIGINAL], skeleton="hand", cache_dir=cache, show_progress=False)
    assert again["status"].tolist() == ["no_hand"]  # the base model's cache entry is its own, not the second look's


@pytest.mark.skipif(not NOBODY_FOUND.is_file(), reason="../shared/data/yoga8 absent")
@pytest.mark.parametrize("max_people", [1, 4])
def test_a_yoga_photo_where_nobody_was_found_gets_its_person(max_people):
    from hybridpose.pose.frontend import extract

    plain = extract([NOBODY_FOUND], max_people=max_people, use_cache=False, show_progress=False)
    assert plain["status"].tolist() == ["no_person"]
    second = extract([NOBODY_FOUND], max_people=max_people, use_cache=False, show_progress=False, second_look=True)
    assert second["status"].tolist() == ["ok"]  # one person, not found twice
    w = second.loc[0, "width"]
    assert (second.loc[0, "box_x1"] - second.loc[0, "box_x0"]) > 0.3 * w


def test_the_clips_retry_brightens_a_dark_frame_and_pads_below_a_hand_cut_by_the_edge():
    """The clip retry's last looks: lifted shadows (a dark hand on a patterned cloth), then a black band below
    the frame; a hand found in the padded frame is mapped back to the frame's own coordinates."""
    from types import SimpleNamespace

    from hybridpose.pose.estimators.mediapipe_hands import HandRetryEstimator, brighter, padded_below

    dark = np.full((40, 60, 3), 30, dtype=np.uint8)
    assert brighter(dark).min() > 80 and brighter(np.array([[[0, 255, 128]]], np.uint8)).tolist() == [[[0, 255, 181]]]
    assert padded_below(dark).shape == (60, 60, 3) and not padded_below(dark)[40:].any()

    def hand_at(y):
        point = SimpleNamespace(x=0.5, y=y, z=0.0)
        side = SimpleNamespace(classification=[SimpleNamespace(label="Right", score=0.9)])
        return SimpleNamespace(multi_hand_landmarks=[SimpleNamespace(landmark=[point] * 21)], multi_handedness=[side])

    class Graph:  # finds a hand only in a frame taller than the original: the padded look
        def __init__(self):
            self.seen = []

        def process(self, rgb):
            self.seen.append(rgb.shape[0])
            return hand_at(0.5) if rgb.shape[0] > 40 else SimpleNamespace(multi_hand_landmarks=None)

    retry = HandRetryEstimator.__new__(HandRetryEstimator)
    retry._lite, retry._graph, retry._warm = Graph(), Graph(), True
    hands = retry.detect(dark)
    assert retry._lite.seen == [40, 20, 40, 60] and retry._graph.seen == [40, 40]  # every look, in order
    assert len(hands) == 1 and np.allclose(hands[0][:, 1], 0.75)  # y 0.5 of 60 rows = row 30 = 0.75 of 40
