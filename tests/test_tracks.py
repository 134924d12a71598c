"""Tracking several people in a video: the tracker wrappers (synthetic people) and, on a video of two
exercise clips side by side, a clip run that labels each person as a clip of its own."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from hybridpose.pose.trackers import TRACKERS, make_tracker


def person(cx: float, cy: float, h: float = 120.0, seed: int = 0) -> tuple[list, np.ndarray]:
    """A standing person of 33 keypoints around (cx, cy), ``h`` pixels tall, and its box."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((33, 4))
    kp[:, 0] = cx + rng.uniform(-h / 5, h / 5, 33)
    kp[:, 1] = cy + np.linspace(-h / 2, h / 2, 33)
    kp[:, 3] = 0.9
    return [cx - h / 4, cy - h / 2, cx + h / 4, cy + h / 2], kp


def run(name: str, frames: list[list[tuple[float, float]]], fps: float = 5) -> list[list[int | None]]:
    t = make_tracker(name, fps)
    out = []
    for people in frames:
        made = [person(x, y, seed=k) for k, (x, y) in enumerate(people)]
        out.append(t.update([b for b, _ in made], [k for _, k in made], [0.9] * len(made)))
    return out


def usable() -> list[str]:
    return [n for n in TRACKERS.names() if TRACKERS[n].available()]


@pytest.mark.parametrize("name", sorted(TRACKERS.names()))
def test_two_people_walking_apart_and_crossing_keep_their_ids(name):
    if not TRACKERS[name].available():
        pytest.skip(TRACKERS[name].missing)
    # a person may get its id from its second frame on (norfair waits for a second sighting)
    apart = run(name, [[(100 + 5 * f, 200), (500 - 5 * f, 210)] for f in range(12)])[1:]
    assert all(None not in ids for ids in apart) and len({tuple(ids) for ids in apart}) == 1
    assert apart[0][0] != apart[0][1]
    # they cross in the middle (frame 10) at a steady pace, listed left to right as the pose model lists them
    crossing = []
    for f in range(20):
        a, b = (100 + 20 * f, 200), (500 - 20 * f, 230)
        crossing.append(sorted([a, b]) if f != 10 else [a])  # one hides the other where they meet
    ids = run(name, crossing)[1:]
    walker = [i[0] if f < 9 else i[-1] for f, i in enumerate(ids)]  # the one coming from the left
    assert len(set(walker)) == 1, ids
    assert all(None not in i for i in ids)


@pytest.mark.parametrize("name", sorted(TRACKERS.names()))
def test_a_person_missing_for_a_frame_keeps_its_id_and_a_newcomer_gets_a_new_one(name):
    if not TRACKERS[name].available():
        pytest.skip(TRACKERS[name].missing)
    frames = [[(150, 200)]] * 3 + [[]] + [[(150, 200)]] * 3 + [[(150, 200), (450, 200)]] * 3
    ids = run(name, frames)
    first = ids[1][0]
    assert first is not None and [i[0] for i in ids[1:] if i] == [first] * 8
    assert ids[-1][1] not in (None, first)


def test_an_unknown_or_missing_tracker_is_one_line(monkeypatch):
    from hybridpose.errors import HybridPoseError

    with pytest.raises(HybridPoseError, match="unknown tracker 'nope'; choose one of"):
        make_tracker("nope", 5)
    monkeypatch.setattr(TRACKERS["norfair"], "available", staticmethod(lambda: False))
    with pytest.raises(HybridPoseError, match="norfair is not installed"):
        make_tracker("norfair", 5)


def test_tracks_become_clips_numbered_by_first_frame_then_left_to_right():
    from hybridpose.inference.clips import PeopleFrame, per_frame_table, segments, split_tracks

    empty = np.full((33, 4), np.nan)
    probs = {"a": np.array([0.9, 0.1]), "b": np.array([0.2, 0.8])}
    seen = []
    for i in range(10):
        pf = PeopleFrame(i, i / 5, "ok")
        people = [(7, 300.0, "b"), (3, 10.0, "a")] + ([(9, 500.0, "a")] if i == 4 else [])  # 9: a false detection
        for t, x, p in people:
            if not (t == 3 and i == 5):  # the left one missing in frame 5
                pf.ids.append(t)
                pf.boxes.append((x, 0.0, x + 50, 100.0))
                pf.keypoints.append(np.zeros((33, 4)))
                pf.image.append(probs[p])
        seen.append(pf)
    tracks = split_tracks(seen, empty, 2)
    assert len(tracks) == 2  # the one-frame detection is no clip
    left, right = tracks
    assert [f.box[0] for f in left if f.box] == [10.0] * 9 and all(f.box[0] == 300.0 for f in right)
    assert left[5].status == "no_person" and np.isnan(left[5].image).all() and np.isnan(left[5].keypoints).all()

    class Res:  # the fields per_frame_table reads
        def __init__(self, frames, track):
            self.frames, self.track = frames, track
            self.sample = type("S", (), {"path": "v.mp4"})()

    table = pd.concat([per_frame_table(Res(f, k), ["a", "b"], 3) for k, f in enumerate(tracks)])
    assert table.groupby("track")["smoothed_label"].agg(lambda s: set(s) - {""}).to_dict() == {0: {"a"}, 1: {"b"}}
    assert table.loc[(table["track"] == 0) & (table["frame"] == 5), "label"].item() == ""
    seg = segments(table)
    assert list(seg["track"]) == [0, 1] and list(seg["label"]) == ["a", "b"] and list(seg["frames"]) == [10, 10]


@pytest.mark.slow
def test_two_people_side_by_side_are_two_tracks_each_with_its_own_exercise(clip_run, tmp_path):
    """A squat (left) and jumping jacks (right) side by side: two tracks, left first, each labelled by its own
    frames (the knee rule of tests/test_clips.py reads each track's statistics), IDs never switching, and the
    annotated video drawn; the same clip with --max-people 1 is one clip, track 0."""
    from clipdata import make_pair
    from hybridpose.data.video import Sampling, iter_frames
    from hybridpose.inference.clips import predict_clips
    from test_clips import RULE

    video = make_pair(tmp_path / "pair")
    if video is None:
        pytest.skip("../shared/data/exercise_clips is not here")
    run = tmp_path / "run"
    shutil.copytree(clip_run[0], run)
    (run / "rules.yaml").write_text(RULE)
    res = predict_clips(video, run, tmp_path / "p.csv", per_frame=tmp_path / "f.csv", annotate=tmp_path / "a.mp4",
                        show_progress=False, max_people=4)
    pred = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(pred["track"]) == [0, 1] and (pred["status"] == "ok").all()
    assert list(pred["class"]) == ["squat", "jumpingjack"], pred[["track", "class", "rule", "rule_statistic"]]
    frames = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    assert set(frames["track"]) == {0, 1} and frames.groupby("track").size().tolist() == pred["frames"].tolist()
    assert (frames["status"] == "ok").mean() > 0.8  # each person found in most of its frames
    seg = pd.read_csv(tmp_path / "f_segments.csv")
    assert set(seg["track"]) == {0, 1}
    assert len(list(iter_frames(res["annotated"], Sampling(n=1000)))) >= 6
    # without a per-frame table the networks see only each track's picked frames: the same rows
    predict_clips(video, run, tmp_path / "plain.csv", show_progress=False, max_people=4)
    plain = pd.read_csv(tmp_path / "plain.csv", keep_default_na=False)
    cols = ["track", "class", "top1", "top2", "frames", "rule"]
    assert plain[cols].to_dict("records") == pred[cols].to_dict("records")
    np.testing.assert_allclose(plain["top1_prob"], pred["top1_prob"], atol=1e-4)
    from hybridpose.inference.clips import ClipPredictor
    from hybridpose.inference.live import LIVE_MIN_FRAMES, live

    shown = list(live(ClipPredictor(run, max_people=4), str(video), show=False, max_frames=LIVE_MIN_FRAMES + 2,
                       realtime=False))
    later = shown[LIVE_MIN_FRAMES - 1:]  # each person numbered from its third frame on
    assert all([p["track"] for p in o["people"]] == [0, 1] for o in later), later
    left, right = (p["box"][0] for p in later[0]["people"])
    assert left < right and all(o["label"] in ("squat", "jumpingjack") for o in later)
    one = predict_clips(video, run, tmp_path / "one.csv", show_progress=False, max_people=1)
    single = pd.read_csv(tmp_path / "one.csv", keep_default_na=False)
    assert one["rows"] == 1 and list(single["track"]) == [0]


@pytest.mark.slow
def test_one_person_video_gives_the_same_row_with_several_people_asked_for(clip_run, clip_data, tmp_path):
    from hybridpose.inference.clips import predict_clips

    video = clip_data / "squat" / "squat_correct_003.mp4"
    rows = {}
    for n in (1, 4):
        predict_clips(video, clip_run[0], tmp_path / f"p{n}.csv", per_frame=tmp_path / f"f{n}.csv",
                      show_progress=False, max_people=n)
        rows[n] = pd.read_csv(tmp_path / f"p{n}.csv", keep_default_na=False)
    assert list(rows[4]["track"]) == [0] == list(rows[1]["track"])
    labels = ["class", "exercise", "top1", "top2", "status", "frames"]
    assert rows[4][labels].to_dict("records") == rows[1][labels].to_dict("records")
    assert abs(rows[4]["top1_prob"].item() - rows[1]["top1_prob"].item()) < 0.02


def test_wide_strips_are_searched_in_overlapping_windows_and_a_part_of_a_person_is_that_person():
    from hybridpose.pose.estimators.mediapipe_people import MAX_WINDOW, same_person, windows

    aspect = 720 / 202  # two 16:9 videos side by side
    win = windows([(0.0, 1.0)], aspect)
    width = MAX_WINDOW / aspect
    assert len(win) == 4 and win[0][0] == 0.0 and win[-1][1] == pytest.approx(1.0)
    assert all(b - a == pytest.approx(width) for a, b in win)
    assert all(win[i + 1][0] < win[i][1] for i in range(len(win) - 1))  # overlapping: nobody falls in a gap
    assert windows([(0.1, 0.3)], aspect) == [(0.1, 0.3)]  # narrow enough: searched as it is
    def person(x0, y0, x1, y1):  # keypoints spanning that box
        return np.array([[x0, y0, 0, 1, 1], [x1, y1, 0, 1, 1]], float)

    found = person(0.1, 0.1, 0.3, 0.9)
    assert same_person(person(0.12, 0.3, 0.25, 0.5), found)  # a window saw its middle
    assert not same_person(person(0.5, 0.1, 0.7, 0.9), found)
