"""Clips and video: decoding and sampling, the frame cache, clip listing, temporal statistics, folds by clip,
and (slow) fit + predict on tiny clips cut from ../shared/data/exercise_clips (tests/clipdata.py; skipped where
that is absent: the repository holds no clip of that unlicensed set)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridpose.data.clips import FrameCache, Sample, clip_frames, list_samples, load_clip_dataset, select_frames
from hybridpose.data.video import Sampling, VideoError, iter_frames, probe
from hybridpose.errors import DatasetError
from hybridpose.pose.temporal import clip_statistics, statistic_names
from hybridpose.skeletons import get_skeleton
from hybridpose.train.clips import clip_folds


@pytest.fixture(scope="session")
def CLIPS(clip_data):
    return clip_data


@pytest.fixture(scope="session")
def VIDEO(clip_data):
    return clip_data / "squat" / "squat_correct_003.mp4"   # 12 frames at 10 fps, 320 px


def test_sampling_by_fps_and_by_count(VIDEO):
    info = probe(VIDEO)
    assert info.rate == pytest.approx(10) and info.frames == 12
    by_fps = list(iter_frames(VIDEO, Sampling(fps=5)))
    assert [f.index for f in by_fps] == [0, 2, 4, 6, 8, 10]
    assert [f.time for f in by_fps] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    by_n = list(iter_frames(VIDEO, Sampling(n=4)))
    assert [f.index for f in by_n] == [0, 4, 7, 11]
    every = list(iter_frames(VIDEO, Sampling(fps=5), every=True))
    assert len(every) == 12 and sum(f.sampled for f in every) == 6
    assert max(by_fps[0].rgb.shape) == 320


def test_a_short_clip_gives_at_least_min_frames(VIDEO):
    # 12 frames at 10 fps: 1.2 s, which at 5 fps would be 6 frames
    dense = list(iter_frames(VIDEO, Sampling(fps=5, min_frames=8)))
    assert len(dense) == 8 and dense[0].index == 0 and dense[-1].index == 11
    assert len(list(iter_frames(VIDEO, Sampling(fps=5, min_frames=20)))) == 12  # all it has
    assert len(list(iter_frames(VIDEO, Sampling(fps=5, min_frames=6)))) == 6    # enough at 5 fps already
    assert Sampling(fps=4, min_frames=16).count(total=300, rate=30) == 0        # a 10 s clip: by fps
    assert Sampling(fps=4, min_frames=16).key != Sampling(fps=4).key            # its own frame cache
    assert select_frames(10, Sampling(fps=4, min_frames=16), rate=4) == list(range(10))
    assert len(select_frames(40, Sampling(fps=4, min_frames=16), rate=4)) == 40


def test_image_branch_frames_are_spread_over_each_clip():
    from hybridpose.train.clips import image_subset

    ids = pd.Series(["a"] * 10 + ["b"] * 2 + ["c"] * 5)
    keep = image_subset(ids, 4)
    assert keep[:10].nonzero()[0].tolist() == [0, 3, 6, 9] and keep[10:12].all() and keep[12:].sum() == 4
    assert image_subset(ids, 0).all()
    found = np.ones(17, dtype=bool)
    found[[0, 1, 2, 13]] = False   # clip a: no skeleton in its first 3 frames; b: none at all
    found[10:12] = False
    keep = image_subset(ids, 4, found)
    assert keep[:10].nonzero()[0].tolist() == [3, 5, 7, 9]   # spread over the frames with a skeleton
    assert keep[10:12].all()                                  # none has one: all frames
    assert keep[12:].nonzero()[0].tolist() == [0, 2, 3, 4]
    assert image_subset(ids, 0, found).sum() == 7 + 2 + 4


def test_frame_picker_spreads_a_stream_of_unknown_length_in_bounded_memory():
    from hybridpose.data.clips import FramePicker

    for n in (1, 5, 8, 31, 32):   # up to 4 x per_clip: exactly linspace over all of them
        picker, made = FramePicker(8), []
        for i in range(n):
            picker.offer(lambda i=i: made.append(i) or i)
        want = np.unique(np.linspace(0, n - 1, min(8, n)).round().astype(int)).tolist()
        assert [x for _, x in picker.chosen()] == want and made == list(range(n))
    picker, made = FramePicker(8), []
    for i in range(10_000):   # a long video: never more than 32 kept, made only for those kept
        picker.offer(lambda i=i: made.append(i) or i)
        assert len(picker.kept) <= 32
    chosen = [x for _, x in picker.chosen()]
    assert len(chosen) == 8 and chosen[0] == 0 and chosen[-1] > 9_000 and len(made) < 200
    gaps = np.diff(chosen)
    assert gaps.max() <= 2 * gaps.min()   # evenly spread
    assert len(FramePicker(0).chosen()) == 0


def test_frames_decoded_ahead_keep_order_errors_and_clean_up():
    from hybridpose.data.video import ahead

    closed = []

    def source(n, fail_at=None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise VideoError("unreadable", f"broken at {i}")
                yield i
        finally:
            closed.append(n)

    assert list(ahead(source(50), depth=3)) == list(range(50))
    got = []
    with pytest.raises(VideoError, match="broken at 7"):
        for i in ahead(source(20, fail_at=7)):
            got.append(i)
    assert got == list(range(7))   # every item before the error, then the error where it happened
    it = ahead(source(1000), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()                     # the consumer stops early: the source is closed too (a video's container)
    assert closed[-1] == 1000


def test_corrupt_and_cut_videos_get_a_reason(tmp_path, VIDEO):
    data = VIDEO.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "noise.mp4").write_bytes(b"\x00\x01junk" * 500)
    for name in ("cut.mp4", "noise.mp4"):
        with pytest.raises(VideoError) as e:
            list(iter_frames(tmp_path / name))
        assert e.value.status == "unreadable" and e.value.reason


def test_frame_cache_decodes_once(tmp_path, monkeypatch, VIDEO):
    cache = FrameCache(tmp_path)
    first = cache.frames(VIDEO, Sampling(fps=5))
    assert first.status == "ok" and len(first.paths) == 6 and all(Path(p).exists() for p in first.paths)
    import hybridpose.data.clips as clips

    monkeypatch.setattr(clips, "iter_frames", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = cache.frames(VIDEO, Sampling(fps=5))
    assert again.paths == first.paths and again.index == first.index


def test_bad_video_in_cache_gives_status(tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF....AVI junk")
    cf = clip_frames(Sample(bad, "video"), Sampling(), FrameCache(tmp_path))
    assert cf.status == "unreadable" and not cf.paths and "video" in cf.reason


def test_listing_and_dataset(CLIPS):
    kinds = {s.path.name: s.kind for s in list_samples(CLIPS)}
    assert kinds == {"jj_frames": "frames", "jumpingjack_correct_001.mp4": "video",
                     "jumpingjack_correct_003.mp4": "video", "squat_correct_003.mp4": "video",
                     "squat_correct_004.mp4": "video"}
    assert [s.kind for s in list_samples(CLIPS / "jumpingjack" / "jj_frames", frames_folder=True)] == ["frames"]
    ds = load_clip_dataset(CLIPS)
    assert sorted(set(ds.labels)) == ["jumpingjack", "squat"] and ds.hierarchy.levels == ["class", "exercise"]


def test_temporal_statistics():
    sk = get_skeleton("body")
    rng = np.random.default_rng(0)
    base = rng.uniform(100, 300, (sk.n, 4))
    base[:, 3] = 0.9
    kp = np.stack([base + [dx, 0, 0, 0] for dx in (0.0, 10.0, 30.0)] + [sk.empty(1)[0]])
    times = [0.0, 0.5, 1.0, 1.5]
    s = clip_statistics(kp, times, sk)
    assert s["found"] == pytest.approx(0.75)
    assert s["range_nose_x"] == pytest.approx(s["max_nose_x"] - s["min_nose_x"])
    f = sk.features(kp[:3])["nose_x"].to_numpy()
    assert s["speed_nose_x"] == pytest.approx(np.mean(np.abs(np.diff(f)) / 0.5))
    assert s["std_nose_x"] == pytest.approx(np.std(f))
    none = clip_statistics(sk.empty(3), [0, 1, 2], sk)
    assert none["found"] == 0 and np.isnan(none["range_nose_x"])
    assert set(s) == set(statistic_names(sk))


def test_clip_folds_keep_single_clip_classes_for_training():
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 1 + ["d"] * 2
    fold, notes = clip_folds(labels, np.arange(len(labels)), 3, 0)
    assert fold[8] == 0 and (fold[np.arange(len(labels)) != 8] > 0).all()
    assert any("c" in n and "not scored" in n for n in notes) and any("d" in n for n in notes)
    grouped = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6])  # clips of one group share a fold
    fold, _ = clip_folds(labels, grouped, 2, 0)
    assert all(len(set(fold[grouped == g])) == 1 for g in np.unique(grouped))
    with pytest.raises(DatasetError, match="--folds"):
        clip_folds(["a", "a", "b", "b"], np.arange(4), 5, 0)
    with pytest.raises(DatasetError, match="two clips"):
        clip_folds(["a", "a", "b", "c"], np.arange(4), 2, 0)


# --------------------------------------------------------------------------- end to end

RULE = """level: class
rules:
- name: knees_bend_in_a_squat
  if_high: jumpingjack
  if_low: squat
  statistic: min_min_knee_angle
  threshold: 145
  margin: 0
"""


# clip_run: tests/conftest.py (one tiny clip run per session, shared with tests/test_tracks.py)


@pytest.mark.slow
def test_fit_on_clips_scores_per_clip(clip_run, CLIPS):
    run, summary = clip_run
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert len(oof) == 5 and set(oof["path"]) == {str(s.path) for s in list_samples(CLIPS)}
    assert set(summary["oof_top1"]) == {"image", "clip_keypoint", "sequence", "trajectory", "fused"}
    folds = pd.read_csv(run / "folds.csv")
    frames = pd.read_csv(run / "clip_frames.csv")
    merged = frames.merge(folds, on="path")
    assert (merged.groupby("clip")["fold"].nunique() == 1).all()  # a clip's frames share one fold
    stats = pd.read_csv(run / "clip_statistics.csv")
    assert len(stats) == 5 and "range_min_knee_angle" in stats
    span = frames.groupby("clip")["time"].agg(lambda t: t.max() - t.min())
    seconds = json.loads((run / "sequence_model.json").read_text())["seconds"]
    assert seconds == pytest.approx(span.median())  # the running label's look-back: a training clip's length


@pytest.mark.slow
def test_predict_clips_rule_per_frame_annotate_and_live(clip_run, tmp_path, CLIPS, VIDEO):
    from hybridpose.inference.clips import ClipPredictor, predict_clips
    from hybridpose.inference.live import live

    src, _ = clip_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "rules.yaml").write_text(RULE)
    res = predict_clips(CLIPS, run, tmp_path / "p.csv", per_frame=tmp_path / "f.csv", annotate=tmp_path / "a.mp4",
                        show_progress=False)
    pred = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert len(pred) == 5 and (pred["status"] == "ok").all()
    stats = pd.read_csv(run / "clip_statistics.csv").set_index("clip")["min_min_knee_angle"]
    for _, row in pred.iterrows():  # the rule decides every clip whose top-2 is its pair
        if {row["top1"], row["top2"]} == {"jumpingjack", "squat"} and np.isfinite(stats[row["path"]]):
            assert row["rule"] == "knees_bend_in_a_squat"
            assert row["class"] == ("jumpingjack" if stats[row["path"]] >= 145 else "squat")
    per_frame = pd.read_csv(tmp_path / "f.csv")
    assert {"frame", "time", "label", "confidence", "smoothed_label", "motion_label"} <= set(per_frame.columns)
    seen = per_frame["status"].eq("ok").groupby(per_frame["clip"]).cummax()  # a skeleton so far in the clip
    assert (per_frame["motion_label"].fillna("").ne("") == seen).all()
    assert per_frame.groupby("clip").size().sum() == pred["frames"].sum()
    seg = pd.read_csv(tmp_path / "f_segments.csv")
    assert (seg.groupby("clip")["frames"].sum() == per_frame.groupby("clip").size()).all()
    first = res["annotated"]
    assert first and len(list(iter_frames(first, Sampling(n=1000)))) >= 6
    p = ClipPredictor(run, use_rules=False)
    out = list(live(p, str(VIDEO), show=False, max_frames=4, realtime=False))
    assert len(out) == 4 and all(o["label"] in p.h.leaves and o["fps"] > 0 for o in out)
    assert all(o["motion_label"] in p.h.leaves for o in out if o["status"] == "ok")  # the sequence branch, live


@pytest.mark.slow
def test_clip_predict_runs_the_networks_only_on_the_frames_fit_chose(clip_run, VIDEO):
    """The K networks see a few frames of a clip, spread over those with a skeleton, as fit chose them; the
    clip's label and probabilities are the same as when they run on every frame (a per-frame table)."""
    from hybridpose.data.clips import Sample
    from hybridpose.inference.clips import ClipPredictor

    run, _ = clip_run
    pred = ClipPredictor(run, use_rules=False)
    assert pred.image_frames == 8
    seen = []
    branch = pred.clf.image_branch
    real = branch.predict_level_proba
    branch.predict_level_proba = lambda X, h: seen.append(len(X)) or real(X, h)
    res = pred.predict_clip(Sample(VIDEO, "video"))
    found = [f.status == "ok" for f in res.frames]
    picked = [f for f in res.frames if f.picked]
    assert len(res.frames) > 8 and any(found)
    assert sum(seen) == len(picked) == min(8, sum(found)) and len(seen) == 1   # one batch
    assert all(f.status == "ok" and np.isfinite(f.image).all() for f in picked)
    assert all(np.isnan(f.image).all() for f in res.frames if not f.picked)
    seen.clear()
    pred.every_image = True
    every = pred.predict_clip(Sample(VIDEO, "video"))
    assert sum(seen) == len(res.frames)
    assert [f.index for f in every.frames if f.picked] == [f.index for f in picked]
    assert every.row["class"] == res.row["class"]
    for name in res.probs:
        for lv, p in res.probs[name].items():
            np.testing.assert_allclose(every.probs[name][lv], p, atol=1e-5)
    seen.clear()
    pred.every_image, pred.image_frames = False, 0   # a run fitted on every frame: streamed, batch by batch
    whole = pred.predict_clip(Sample(VIDEO, "video"))
    assert sum(seen) == len(whole.frames) and max(seen) <= 16
    assert [f.picked for f in whole.frames] == [f.status == "ok" for f in whole.frames]


@pytest.mark.slow
def test_clip_cli(clip_run, tmp_path, VIDEO):
    from typer.testing import CliRunner

    from hybridpose_cli.main import app

    run, _ = clip_run
    r = CliRunner().invoke(app, ["predict", str(VIDEO), "-m", str(run), "-o", str(tmp_path / "p.csv"),
                                 "--per-frame", str(tmp_path / "f.csv")])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 1 and (tmp_path / "f_segments.csv").exists()


def test_groups_file_for_photos(tmp_path):
    from hybridpose.data.datasets import load_dataset
    from hybridpose.run.folder import RunFolder
    from hybridpose.train.fit import _user_groups, _write_folds

    data = Path(__file__).parents[1] / "data" / "sample"
    ds = load_dataset(data)
    per_class: dict[str, list] = {}
    for p, y in zip(ds.paths, ds.labels):
        per_class.setdefault(y, []).append(p)
    rows = ["path,group"]
    for y, ps in per_class.items():  # two subjects per class: half the photos each
        rows += [f"{p.relative_to(data)},{y}_{i % 2}" for i, p in enumerate(ps)]
    (tmp_path / "groups.csv").write_text("\n".join(rows) + "\n")
    table = _write_folds(RunFolder(tmp_path / "run"), ds, 2, 0, _user_groups(ds, tmp_path / "groups.csv"))
    subject = {str(data / r.split(",")[0]): r.split(",")[1] for r in rows[1:]}
    table["subject"] = table["path"].map(subject)
    assert (table.groupby("subject")["fold"].nunique() == 1).all()
    with pytest.raises(DatasetError, match="groups"):
        _user_groups(ds, tmp_path / "missing.csv")


def test_smoothing_and_segments():
    from hybridpose.inference.clips import segments, smooth, window_frames

    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.2, 0.8]])
    s = smooth(p, 3)
    assert s[1] == pytest.approx(p[0:3].mean(0)) and s[0] == pytest.approx(p[0:2].mean(0))
    assert smooth(p, 3, causal=True)[2] == pytest.approx(p[0:3].mean(0))
    assert s.argmax(1).tolist() == [0, 0, 0, 0, 1, 1, 1]  # the one-frame flip at frame 2 is smoothed away
    assert window_frames(Sampling(fps=4)) == 5 and window_frames(Sampling(fps=1)) == 1
    t = pd.DataFrame({"clip": "c", "time": np.arange(7) * 0.25,
                      "smoothed_label": ["a" if i == 0 else "b" for i in s.argmax(1)]})
    seg = segments(t)
    assert seg[["label", "start", "end", "frames"]].values.tolist() == [["a", 0.0, 1.0, 4], ["b", 1.0, 1.5, 3]]


@pytest.mark.slow
def test_predict_bad_and_cut_videos(clip_run, tmp_path, VIDEO):
    from hybridpose.inference.clips import predict_clips

    run, _ = clip_run
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "noise.mp4").write_bytes(b"junk" * 100)
    (folder / "notes.txt").write_text("x")
    shutil.copy(VIDEO, folder / "good.mp4")
    predict_clips(folder, run, tmp_path / "p.csv", show_progress=False)
    rows = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("path")
    assert rows.loc[str(folder / "noise.mp4"), "status"] == "unreadable"
    assert rows.loc[str(folder / "noise.mp4"), "reason"]
    assert rows.loc[str(folder / "notes.txt"), "status"] == "unsupported"
    assert rows.loc[str(folder / "good.mp4"), "status"] == "ok" and rows.loc[str(folder / "good.mp4"), "class"]


@pytest.mark.slow
def test_evaluate_clip_run_on_a_labelled_clip_folder(clip_run, tmp_path, CLIPS):
    from hybridpose.evaluation.evaluate import evaluate
    from hybridpose.inference.clips import predict_clips

    src, _ = clip_run
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(src, run)
    (run / "rules.yaml").write_text(RULE)
    shutil.copytree(CLIPS, data)
    (data / "squat" / "broken.mp4").write_bytes(b"junk" * 100)
    predict_clips(data, run, tmp_path / "p.csv", show_progress=False)
    pred = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("path")
    ds = load_clip_dataset(data)
    truth = {str(s.path): y for s, y in zip(ds.samples, ds.labels)}
    leaf = ds.hierarchy.leaf_level

    res = evaluate(data, model=run, out=tmp_path / "ev", show_progress=False)
    table = pd.read_csv(tmp_path / "ev" / "predictions_evaluated.csv", keep_default_na=False)
    assert sorted(table["path"]) == sorted(truth) and len(table) == 6  # one row per clip, not per frame
    broken = table.set_index("path").loc[str(data / "squat" / "broken.mp4")]
    assert broken["status"] == "unreadable" and broken["reason"] and broken[leaf] == ""
    assert (table[f"true_{leaf}"] == table["path"].map(truth)).all()
    assert (table[leaf] == table["path"].map(pred[leaf])).all()  # the labels predict gives, rules included
    assert (table["rule"] == table["path"].map(pred["rule"])).all() and (table[f"rules_{leaf}"] == table[leaf]).all()
    metrics = pd.DataFrame(res["metrics"]).set_index(["branch", "level"])
    read = [p for p in truth if pred.loc[p, "status"] == "ok"]
    expected = np.mean([pred.loc[p, leaf] == truth[p] for p in read])
    assert metrics.loc[("rules", leaf), "top1"] == pytest.approx(expected) and res["best_branch"] == "rules"
    assert metrics.loc[("rules", leaf), "top1_all"] == pytest.approx(expected * len(read) / len(truth))
    assert (metrics.xs(leaf, level="level")["n_abstained"] == 1).all()  # the unreadable clip, in every branch
    assert {"image", "clip_keypoint", "fused"} <= set(metrics.index.get_level_values("branch"))
    fired = pred["rule"][pred["rule"] != ""].value_counts().to_dict()
    assert res["rules_fired"] == fired
    assert (tmp_path / "ev" / "report.html").stat().st_size > 0 and (tmp_path / "ev" / "top_losses.csv").exists()
    with pytest.raises(DatasetError, match="--images"):
        evaluate(data, model=run, out=tmp_path / "ev2", images=data, show_progress=False)


def test_clip_keypoint_branch_abstains_saves_and_loads(tmp_path):
    """Fits on every class (a class without clips gets a column), abstains on a clip without a skeleton, and reads
    a file in the layout runs were written with (booster JSON inside a tagged JSON file)."""
    import json

    from hybridpose.branches.clip_keypoint import ClipKeypointClassifier
    from hybridpose.errors import RunError

    names = statistic_names(get_skeleton("body"))
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.uniform(0, 1, (20, len(names))), columns=names)
    X["found"] = 1.0
    y = ["a", "b"] * 10
    X.loc[[i for i in range(20) if y[i] == "b"], "mean_nose_x"] += 5  # b is separable
    X.loc[0, "found"] = 0.0
    m = ClipKeypointClassifier(n_estimators=10, n_jobs=1).fit(X, y, classes=["a", "b", "c"])
    p = m.predict_proba(X)
    assert p.shape == (20, 3) and np.isnan(p[0]).all() and np.allclose(p[1:].sum(1), 1)
    assert [m.classes_[i] for i in p[1:].argmax(1)] == y[1:]
    m.save(tmp_path / "m.json")
    saved = json.loads((tmp_path / "m.json").read_text())
    assert list(saved) == ["format", "version", "classes", "features", "skeleton", "params", "booster"]
    old = {"format": "hybridpose-clip-keypoint-model", "version": 1, "classes": m.classes_, "features": names,
           "skeleton": "body", "params": m.params,
           "booster": m.model_.get_booster().save_raw(raw_format="json").decode()}
    (tmp_path / "old.json").write_text(json.dumps(old))
    np.testing.assert_array_equal(ClipKeypointClassifier.load(tmp_path / "old.json").predict_proba(X), p)
    del old["classes"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    for bad in (tmp_path / "old.json", tmp_path / "missing.json"):
        with pytest.raises(RunError, match="not a hybridpose clip keypoint model"):
            ClipKeypointClassifier.load(bad)


def test_review_sheet_shows_a_clip_by_its_first_frame(tmp_path, CLIPS, VIDEO):
    from PIL import Image

    from hybridpose.data.clips import preview
    from hybridpose.evaluation.review import _shown

    first = preview(str(VIDEO))
    assert isinstance(first, Image.Image) and max(first.size) == 320
    folder = CLIPS / "jumpingjack" / "jj_frames"
    with Image.open(folder / "frame1.jpg") as im:
        assert _shown(str(folder)).size == im.size
    (tmp_path / "bad.mp4").write_bytes(b"junk" * 10)
    assert _shown(str(tmp_path / "bad.mp4")) == str(tmp_path / "bad.mp4")  # the sheet draws a tile saying why
    assert _shown(str(CLIPS / "hierarchy.csv")) == str(CLIPS / "hierarchy.csv")  # not a clip: as it was
