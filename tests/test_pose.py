"""Pose front end: one row per file whatever it holds, the content-hash cache, pixel coordinates."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import hybridpose.pose.frontend as pose_mod
import hybridpose.pose.workers as pose_workers
from corpus import EXIF_ORIENTATION, PHOTO
from hybridpose.data.content import default_cache_dir
from hybridpose.pose.estimators.mediapipe_pose import POSE_VERSION
from hybridpose.pose.frontend import BOX_COLUMNS, HEAD_COLUMNS, boxes_array, extract, keypoints_array, summarize
from hybridpose.skeletons.body import BODY, person_box
from hybridpose.skeletons.geometry import MIN_VISIBILITY

KEYPOINT_COLUMNS = BODY.columns
TABLE_COLUMNS = [*HEAD_COLUMNS, *BOX_COLUMNS, *KEYPOINT_COLUMNS]

STATUSES = {"ok", "no_person", "unreadable", "too_small", "too_large"}


class _NoModel:
    """Stands in for PoseEstimator where the test says the pose model must not run."""

    name, version, skeleton_name = "mediapipe_pose", POSE_VERSION, "body"

    def __init__(self, *a, **k):
        raise AssertionError("the pose model ran although the result should come from the cache")


def _visible(kp: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return kp[:, 3] >= threshold


def _assert_keypoints_close(a: np.ndarray, b: np.ndarray, size: float, max_frac: float = 0.05,
                            median_frac: float = 0.01) -> None:
    """Keypoints a and b (33 x 4, pixels) agree on the points visible in both."""
    vis = _visible(a) & _visible(b)
    assert vis.sum() >= 15, f"only {vis.sum()} keypoints visible in both"
    err = np.abs(a[vis, :2] - b[vis, :2])
    assert err.max() <= max_frac * size, f"max error {err.max():.1f} px > {max_frac:.0%} of {size}"
    assert np.median(err) <= median_frac * size, f"median error {np.median(err):.1f} px"


@pytest.fixture(scope="module")
def corpus_table(bad_corpus):
    directory, expected = bad_corpus
    paths = sorted(directory / name for name in expected)
    return paths, expected, extract(paths, show_progress=False)


# --- bad input --------------------------------------------------------------------------


def test_corpus_one_row_per_file_with_expected_status(corpus_table):
    paths, expected, table = corpus_table
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["path"]) == [str(p) for p in paths]
    got = {Path(p).name: s for p, s in zip(table["path"], table["status"])}
    assert got == expected
    assert set(table["status"]) <= STATUSES


def test_corpus_reasons_and_empty_keypoints(corpus_table):
    _, _, table = corpus_table
    for row in table.itertuples(index=False):
        name = Path(row.path).name
        if row.status == "ok":
            assert row.reason == "" or pd.isna(row.reason), name
            assert np.isfinite(row._asdict()["box_x0"]), name
        else:
            assert isinstance(row.reason, str) and row.reason.strip(), name
    not_ok = table["status"] != "ok"
    assert table.loc[not_ok, KEYPOINT_COLUMNS].isna().all().all()
    ok = ~not_ok
    assert table.loc[ok, KEYPOINT_COLUMNS].notna().all().all()
    # the huge photo was measured (12000 x 9000) even though it was decoded small
    huge = table[table["path"].str.endswith("huge.jpg")].iloc[0]
    assert (huge["width"], huge["height"]) == (12000, 9000)


def test_missing_and_directory_paths_do_not_raise(tmp_path):
    (tmp_path / "a_folder.jpg").mkdir()
    paths = [tmp_path / "missing.jpg", tmp_path / "a_folder.jpg", PHOTO]
    table = extract(paths, show_progress=False)
    assert list(table["status"]) == ["unreadable", "not_a_file", "ok"]
    assert all(r.strip() for r in table["reason"][:2])


def test_summarize_counts_statuses(corpus_table):
    _, expected, table = corpus_table
    counts = summarize(table)
    assert sum(counts.values()) == len(expected)
    for status in set(expected.values()):
        assert counts[status] == list(expected.values()).count(status)


# --- cache ------------------------------------------------------------------------------


def test_rerun_is_served_from_cache(corpus_table, monkeypatch):
    paths, _, first = corpus_table
    monkeypatch.setitem(pose_mod.ESTIMATORS, "mediapipe_pose", _NoModel)
    second = extract(paths, show_progress=False)
    pd.testing.assert_frame_equal(first, second)


def test_cache_can_be_bypassed(tmp_path, monkeypatch):
    extract([PHOTO], show_progress=False)  # cached now
    monkeypatch.setitem(pose_mod.ESTIMATORS, "mediapipe_pose", _NoModel)
    with pytest.raises(AssertionError, match="pose model ran"):
        extract([PHOTO], show_progress=False, use_cache=False)


def test_same_photo_under_another_path_comes_from_cache(tmp_path, monkeypatch):
    first = extract([PHOTO], show_progress=False)
    copy = tmp_path / "renamed" / "copy_of_photo.jpg"
    copy.parent.mkdir()
    shutil.copyfile(PHOTO, copy)
    monkeypatch.setitem(pose_mod.ESTIMATORS, "mediapipe_pose", _NoModel)
    second = extract([copy], show_progress=False)
    assert second["path"].iloc[0] == str(copy)
    assert second["sha256"].iloc[0] == first["sha256"].iloc[0]
    np.testing.assert_array_equal(keypoints_array(second), keypoints_array(first))


def test_duplicates_in_one_call_run_the_model_once(tmp_path, monkeypatch):
    copies = []
    for i in range(3):
        p = tmp_path / f"dup_{i}.jpg"
        shutil.copyfile(PHOTO, p)
        copies.append(p)
    calls = []
    real = pose_workers.analyse

    def counting(path, estimator):
        calls.append(path)
        return real(path, estimator)

    monkeypatch.setattr(pose_workers, "analyse", counting)
    table = extract(copies, show_progress=False, use_cache=False)
    assert len(calls) == 1
    assert list(table["status"]) == ["ok"] * 3
    kp = keypoints_array(table)
    np.testing.assert_array_equal(kp[0], kp[2])


def test_separate_cache_dir_is_used(tmp_path):
    cache = tmp_path / "cache"
    extract([PHOTO], cache_dir=cache, show_progress=False)
    assert (cache / "poses.sqlite").is_file()


# --- geometry ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_kp() -> np.ndarray:
    return keypoints_array(extract([PHOTO], show_progress=False))[0]


@pytest.mark.parametrize("factor", [2, 5])  # 5x: 855 x 1280, decoded below 1024 px for the pose model
def test_keypoints_are_in_pixels_of_the_original(tmp_path, photo_kp, factor):
    with Image.open(PHOTO) as img:
        big = img.convert("RGB").resize((img.width * factor, img.height * factor), Image.LANCZOS)
    path = tmp_path / f"up{factor}.jpg"
    big.save(path, quality=95)
    table = extract([path], show_progress=False)
    assert table["status"].iloc[0] == "ok"
    assert (table["width"].iloc[0], table["height"].iloc[0]) == big.size
    kp = keypoints_array(table)[0]
    scaled = kp.copy()
    scaled[:, :2] /= factor
    _assert_keypoints_close(photo_kp, scaled, size=max(Image.open(PHOTO).size))
    # the box scales too
    box = boxes_array(table)[0] / factor
    small_box = boxes_array(extract([PHOTO], show_progress=False))[0]
    np.testing.assert_allclose(box, small_box, atol=0.05 * 256)


@pytest.mark.parametrize("orientation,stored", [
    (6, Image.Transpose.ROTATE_90),    # stored turned counter-clockwise, EXIF turns it back
    (8, Image.Transpose.ROTATE_270),
    (3, Image.Transpose.ROTATE_180),
])
def test_exif_rotated_copy_matches_upright(tmp_path, photo_kp, orientation, stored):
    with Image.open(PHOTO) as img:
        photo = img.convert("RGB")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / f"exif_{orientation}.jpg"
    photo.transpose(stored).save(path, "JPEG", quality=95, exif=exif)
    table = extract([path], show_progress=False)
    assert table["status"].iloc[0] == "ok"
    assert (table["width"].iloc[0], table["height"].iloc[0]) == photo.size
    _assert_keypoints_close(photo_kp, keypoints_array(table)[0], size=max(photo.size), max_frac=0.04)


def test_corpus_exif_rotated_file_matches_upright(corpus_table, photo_kp):
    _, _, table = corpus_table
    row = table[table["path"].str.endswith("exif_rotated.jpg")]
    _assert_keypoints_close(photo_kp, keypoints_array(row)[0], size=256, max_frac=0.04)


def test_person_box_inside_image_and_around_visible_keypoints(sample_poses):
    ok = sample_poses[sample_poses["status"] == "ok"]
    assert len(ok) >= 70
    boxes, kps = boxes_array(ok), keypoints_array(ok)
    w, h = ok["width"].to_numpy(), ok["height"].to_numpy()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for box, kp, wi, hi in zip(boxes, kps, w, h):
        vis = kp[:, 3] >= MIN_VISIBILITY
        x = np.clip(kp[vis, 0], 0, wi)
        y = np.clip(kp[vis, 1], 0, hi)
        # keypoints are stored rounded to 1/1000 px, the box from the unrounded ones
        assert (x >= box[0] - 1e-3).all() and (x <= box[2] + 1e-3).all()
        assert (y >= box[1] - 1e-3).all() and (y <= box[3] + 1e-3).all()


def test_person_box_reaches_above_the_eyes():
    from conftest import standing_keypoints

    kp = standing_keypoints()
    box = person_box(kp, 400, 600)
    eyes_top = kp[1:7, 1].min()
    assert box[1] < eyes_top  # the head reaches above the eyes
    assert box[1] >= 0


def test_person_box_clipped_to_image():
    from conftest import standing_keypoints

    kp = standing_keypoints()
    kp[:, 0] += 250  # the person walks half out of a 400 px wide frame
    box = person_box(kp, 400, 600)
    assert box[2] == 400
    assert 0 <= box[0] < box[2]


def test_sample_keypoints_lie_in_the_photo(sample_poses):
    ok = sample_poses[sample_poses["status"] == "ok"]
    kps = keypoints_array(ok)
    w, h = ok["width"].to_numpy()[:, None], ok["height"].to_numpy()[:, None]
    vis = kps[..., 3] >= 0.5
    # MediaPipe may place occluded points slightly outside; visible ones stay near the frame
    assert (kps[..., 0][vis] >= -0.05 * np.broadcast_to(w, vis.shape)[vis]).all()
    assert (kps[..., 0][vis] <= 1.05 * np.broadcast_to(w, vis.shape)[vis]).all()
    assert (kps[..., 1][vis] >= -0.05 * np.broadcast_to(h, vis.shape)[vis]).all()
    assert (kps[..., 1][vis] <= 1.05 * np.broadcast_to(h, vis.shape)[vis]).all()


# --- workers ----------------------------------------------------------------------------




WORKERS_SCRIPT = """
import os, sys
from pathlib import Path
import hybridpose.pose.frontend as pose
import hybridpose.pose.workers as workers

def recording_init(*args):
    Path(os.environ["HYBRIDPOSE_TEST_WORKER_DIR"], str(os.getpid())).touch()
    real_init(*args)

if __name__ == "__main__":
    real_init = workers._init
    workers._init = recording_init
    paths = Path(sys.argv[1]).read_text().splitlines()
    pose.extract(paths, workers=2, show_progress=False, use_cache=False).to_pickle(sys.argv[2])
"""


def test_two_workers_give_the_same_table(bad_corpus, sample_dataset, tmp_path):
    directory, expected = bad_corpus
    paths = [*sample_dataset.paths[::10], *(directory / n for n in sorted(expected) if n != "huge.jpg")]
    one = extract(paths, workers=1, show_progress=False, use_cache=False)
    # A fresh process, as the CLI is: a pool is only forked from a process that never ran MediaPipe.
    # A worker that dies is silently replaced by the pool, so count the processes started.
    started = tmp_path / "workers"
    started.mkdir()
    (tmp_path / "paths.txt").write_text("\n".join(str(p) for p in paths))
    (tmp_path / "run.py").write_text(WORKERS_SCRIPT)
    env = {**os.environ, "HYBRIDPOSE_TEST_WORKER_DIR": str(started)}
    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "paths.txt"), str(tmp_path / "two.pkl")],
                   check=True, env=env, timeout=300)
    two = pd.read_pickle(tmp_path / "two.pkl")
    assert list(two["path"]) == [str(p) for p in paths]
    pd.testing.assert_frame_equal(one, two)
    assert len(list(started.iterdir())) == 2, "a pose worker process died and was replaced"


def test_workers_after_mediapipe_ran_here_fall_back_to_one(sample_dataset, capsys):
    paths = sample_dataset.paths[:4]
    one = extract(paths, workers=1, show_progress=False, use_cache=False)  # MediaPipe now ran in this process
    two = extract(paths, workers=2, show_progress=False, use_cache=False)
    pd.testing.assert_frame_equal(one, two)
    assert "running one worker" in capsys.readouterr().err


# --- a damaged or unusable cache never stops a run (PoseCache) --------------------------------------------

import json  # noqa: E402
import sqlite3  # noqa: E402
import threading  # noqa: E402

from hybridpose.data.content import file_sha256  # noqa: E402
from hybridpose.pose.cache import PoseCache  # noqa: E402
from hybridpose.pose.result import PoseResult  # noqa: E402

GOOD = PoseResult("ok", "", 10, 20, (1.0, 2.0, 3.0, 4.0), [[1.0, 2.0, 0.5, 0.9]] * 33)


@pytest.mark.parametrize("text", [
    "{not json", "null", "[]", json.dumps({"status": "ok"}),
    json.dumps({"status": "ok", "reason": "", "width": 1, "height": 1, "keypoints": None}),  # no box
    json.dumps({**json.loads(GOOD.to_json()), "extra": 1}),
    json.dumps({**json.loads(GOOD.to_json()), "box": "abcd"}),
    json.dumps({**json.loads(GOOD.to_json()), "box": [1, 2, 3]}),
    json.dumps({**json.loads(GOOD.to_json()), "keypoints": [[1, 2, 3, None]]}),
    json.dumps({**json.loads(GOOD.to_json()), "width": "10"}),
    json.dumps({**json.loads(GOOD.to_json()), "status": ""}),
    json.dumps({**json.loads(GOOD.to_json()), "box": None}),  # a person without a box
])
def test_malformed_stored_result_is_refused(text):
    with pytest.raises(ValueError):
        PoseResult.from_json(text)


def test_stored_result_round_trips():
    assert PoseResult.from_json(GOOD.to_json()) == GOOD
    none = PoseResult("no_person", "MediaPipe found no person", 5, 6)
    assert PoseResult.from_json(none.to_json()) == none


def test_bad_entry_is_a_miss_then_replaced(tmp_path, capsys):
    cache = PoseCache(tmp_path)
    cache.put_many([("a", GOOD), ("b", GOOD)])
    cache._db.execute("UPDATE pose SET result = '{\"status\": \"ok\"}' WHERE key = ?", (cache.key("a"),))
    cache._db.commit()
    assert set(cache.get_many(["a", "b"])) == {"b"}
    assert f"pose cache {cache.path}: 1 damaged entry" in capsys.readouterr().err
    cache.put_many([("a", GOOD)])
    assert cache.get_many(["a", "b"]) == {"a": GOOD, "b": GOOD}
    cache.close()
    assert not list(tmp_path.glob("*.corrupt-*"))


@pytest.mark.parametrize("damage", ["not_a_database", "malformed", "other_schema"])
def test_damaged_database_is_moved_aside(tmp_path, capsys, damage):
    db = tmp_path / "poses.sqlite"
    if damage == "not_a_database":  # with a write-ahead log left beside it: never replayed into the new cache
        db.write_bytes(b"\x00garbage" * 1000)
        Path(f"{db}-wal").write_bytes(b"old log")
    elif damage == "other_schema":
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE pose (key TEXT PRIMARY KEY, value TEXT)")
        con.close()
    else:
        cache = PoseCache(tmp_path)
        cache.put_many([(str(i), GOOD) for i in range(50)])
        cache.close()
        with open(db, "r+b") as fh:  # page 2 holds the table's b-tree
            fh.seek(4096)
            fh.write(b"\xff" * 4096)
    damaged = db.read_bytes()
    cache = PoseCache(tmp_path)
    assert cache.get_many(["1", "2"]) == {}  # on open or on read: the run goes on with an empty cache
    cache.put_many([("1", GOOD)])
    assert cache.get_many(["1"]) == {"1": GOOD}
    cache.close()
    aside = [p for p in tmp_path.glob("poses.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    if damage == "other_schema":  # a sound database of another layout (opening it switched it to WAL): kept whole
        with sqlite3.connect(aside[0]) as con:
            assert [c[1] for c in con.execute("PRAGMA table_info(pose)")] == ["key", "value"]
        con.close()
    else:
        assert [p.read_bytes() for p in aside] == [damaged]
    if damage == "not_a_database":
        assert not any(p.read_bytes() == b"old log" for p in tmp_path.glob("poses.sqlite-*"))
    err = " ".join(capsys.readouterr().err.split())
    assert f"pose cache {db} was damaged" in err and str(aside[0]) in err


def test_file_replaced_by_another_run_is_not_moved_again(tmp_path, capsys):
    """Two runs hit the same damaged file: the second must not move aside the fresh cache the first made."""
    db = tmp_path / "poses.sqlite"
    cache = PoseCache(tmp_path)
    cache.put_many([(str(i), GOOD) for i in range(50)])
    cache.close()
    with open(db, "r+b") as fh:
        fh.seek(4096)
        fh.write(b"\xff" * 4096)
    slow, quick = PoseCache(tmp_path), PoseCache(tmp_path)  # both opened the damaged file
    assert quick.get_many(["1"]) == {}  # quick moves it aside and starts a new cache ...
    quick.put_many([("new", GOOD)])  # ... and saves a result there
    quick.close()
    assert slow.get_many(["1"]) == {}  # slow now finds the damage too
    assert slow.get_many(["new"]) == {"new": GOOD}  # and reads quick's new file instead of moving it aside
    slow.close()
    assert len([p for p in tmp_path.glob("poses.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]) == 1
    assert capsys.readouterr().err.count("was damaged") == 1


def test_unusable_cache_runs_without_it_and_says_so_once(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for _ in range(2):  # the classifier opens the cache once per batch: one note only
        cache = PoseCache(blocker / "cache")
        assert cache.get_many(["a"]) == {}
        cache.put_many([("a", GOOD)])
        cache.close()
    err = capsys.readouterr().err
    assert err.count("running without it") == 1 and str(blocker / "cache") in err


def test_cache_file_that_is_a_fifo_is_never_opened(tmp_path, capsys):
    os.mkfifo(tmp_path / "poses.sqlite")
    _within(10, lambda: PoseCache(tmp_path).close(), release=tmp_path / "poses.sqlite")
    assert "running without it" in capsys.readouterr().err


def test_hashing_never_opens_a_fifo(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    assert _within(10, lambda: file_sha256(fifo), release=fifo) is None
    assert file_sha256(PHOTO) is not None


def test_empty_cache_variable_means_the_default(monkeypatch):
    monkeypatch.setenv("HYBRIDPOSE_CACHE", "")
    assert default_cache_dir() == Path.home() / ".cache" / "hybridpose"


def _within(seconds: float, action, release: Path):
    """``action()`` in a thread; fails (after unblocking it by writing into the FIFO ``release``) if it hangs."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", action()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        fd = os.open(release, os.O_WRONLY | os.O_NONBLOCK)  # the hung reader now gets EOF
        os.close(fd)
        thread.join(5)
        pytest.fail(f"hung on the FIFO {release}")
    return box.get("value")
