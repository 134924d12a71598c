"""Hardening, round 2, part D: inputs that were silently misread.

1. a video cut short says how many frames were read of how many its container promises;
2. ``predict INPUTS --camera N`` is refused (the input would be ignored), before any work;
3. ``fit`` leaves out (and names) photos it cannot train on, and refuses a class left with none;
4. links to folders are followed (data sets and predict/extract inputs); a link that loops is named.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import hybridpose_cli.main as cli_main
from hybridpose.data.clips import FrameCache, Sample, clip_frames, list_samples
from hybridpose.data.datasets import load_dataset
from hybridpose.data.sources import open_inputs
from hybridpose.data.video import Sampling, VideoWriter
from test_cli import _lines, cli
from test_cli_errors import THREE, one_line_error, tiny_data


class Started(Exception):
    """Raised by a stand-in for the work, once the checks before it passed."""


def run_until_work(monkeypatch, capsys, module, name: str, *args: object) -> tuple[list, str]:
    """Run `hybridpose ARGS` until ``module.name`` (the work) is called; its first argument and the output."""
    seen = []

    def started(paths, *a, **k):
        seen.append(list(paths))
        raise Started

    monkeypatch.setattr(module, name, started)
    monkeypatch.setattr(sys, "argv", ["hybridpose", *map(str, args)])
    with pytest.raises(Started):
        cli_main.main()
    captured = capsys.readouterr()
    return seen[0], captured.out + captured.err


# --- 1. a video cut short ------------------------------------------------------------------------------


def write_video(path: Path, frames: int = 30) -> Path:
    """``frames`` frames of noise (each about as big as the next, so a cut at 60 % keeps ~60 % of them)."""
    rng = np.random.default_rng(0)
    with VideoWriter(path, 10, 128, 96) as w:
        for _ in range(frames):
            w.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return path


@pytest.fixture
def cut_video(tmp_path) -> tuple[Path, Path]:
    whole = write_video(tmp_path / "whole.avi")
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    return whole, cut


def read_of(reason: str) -> tuple[int, int]:
    m = re.search(r"read (\d+) of (\d+) frames", reason)
    assert m, reason
    return int(m.group(1)), int(m.group(2))


def test_cut_video_says_how_many_frames_were_read(cut_video, tmp_path):
    whole, cut = cut_video
    cache = FrameCache(tmp_path / "cache")
    full = clip_frames(Sample(whole, "video"), Sampling(fps=10), cache)
    assert (full.status, full.reason, len(full.paths)) == ("ok", "", 30)  # a whole video: no reason
    part = clip_frames(Sample(cut, "video"), Sampling(fps=10), cache)
    read, promised = read_of(part.reason)
    assert part.status == "ok" and promised == 30 and 12 <= read <= 20 and len(part.paths) == read
    assert "cut short" in part.reason


def test_predict_row_of_a_cut_video_says_so(cut_video, monkeypatch):
    """predict's row of a cut video (the analysis stands in: the status and reason come from the decoding)."""
    from hybridpose.inference.clips import ClipPredictor, FrameResult, _clip_row

    pred = ClipPredictor.__new__(ClipPredictor)
    pred.sampling, pred.last_info = Sampling(fps=10), None
    monkeypatch.setattr(ClipPredictor, "analyse_frames",
                        lambda self, sample, frames: [FrameResult(f.index, f.time, "ok", None, None) for f in frames])
    monkeypatch.setattr(ClipPredictor, "_decide", lambda self, frames: ({"frames": len(frames)}, {}))
    whole, cut = cut_video
    assert _clip_row(pred.predict_clip(Sample(whole, "video")))["reason"] == ""
    row = _clip_row(pred.predict_clip(Sample(cut, "video")))
    read, promised = read_of(row["reason"])
    assert row["status"] == "ok" and promised == 30 and row["frames"] == read < 30


# --- 2. predict VIDEO --camera 0 -----------------------------------------------------------------------


@pytest.mark.parametrize("extra, needles", [
    (["INPUT"], ["--camera 0", "clip.avi", "ignore"]),
    (["--out", "p.csv"], ["--camera 0", "--out", "writes no file"]),
    (["--per-frame", "f.csv", "--annotate", "a.mp4"], ["--per-frame", "--annotate"]),
])
def test_predict_refuses_camera_with_an_input_or_output(monkeypatch, capsys, tmp_path, no_work, extra, needles):
    import hybridpose.inference.live

    monkeypatch.setattr(hybridpose.inference.live, "live", lambda *a, **k: pytest.fail("the camera ran"))
    monkeypatch.chdir(tmp_path)
    video = write_video(tmp_path / "clip.avi", frames=3)
    args = [str(video) if a == "INPUT" else a for a in extra]
    before = sorted(os.listdir(tmp_path))
    code, text = cli(monkeypatch, capsys, "predict", *args, "--model", tmp_path / "run", "--camera", "0")
    one_line_error(code, text, *needles)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


# --- 3. fit leaves out photos it cannot train on --------------------------------------------------------


def add_bad_photos(folder: Path) -> list[str]:
    good = sorted(folder.glob("*.jpg"))[0].read_bytes()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo\n")
    Image.new("RGB", (1, 1)).save(folder / "dot.jpg")
    (folder / "cut.jpg").write_bytes(good[: len(good) * 9 // 10])  # the header is whole, the pixels are not
    return ["zero.jpg", "notes.jpg", "dot.jpg", "cut.jpg"]


def test_fit_names_and_leaves_out_unusable_photos(monkeypatch, capsys, tmp_path):
    import hybridpose.train.fit

    data = tiny_data(tmp_path / "data", THREE)
    bad = add_bad_photos(data / "Triangle")
    run = tmp_path / "run"
    paths, text = run_until_work(monkeypatch, capsys, hybridpose.train.fit, "extract",
                                 "fit", data, "--out", run, "--folds", "2")
    assert "Traceback" not in text
    warnings = [line for line in _lines(text) if "warning" in line]
    assert len(warnings) == 1, text
    for name in bad:
        assert f"Triangle/{name}" in warnings[0] and Path(data / "Triangle" / name) not in map(Path, paths)
    assert "4 file(s)" in warnings[0] and "left_out.csv" in warnings[0]
    assert len(paths) == 12  # the 4 good photos of each class
    listed = pd.read_csv(run / "left_out.csv")
    assert sorted(Path(p).name for p in listed["path"]) == sorted(bad)
    reasons = dict(zip((Path(p).name for p in listed["path"]), listed["reason"]))
    assert "zero-byte" in reasons["zero.jpg"] and "too_small" in reasons["dot.jpg"] and "truncated" in reasons["cut.jpg"]


def test_fit_without_bad_photos_says_nothing_of_them(monkeypatch, capsys, tmp_path):
    import hybridpose.train.fit

    data = tiny_data(tmp_path / "data", THREE)
    paths, text = run_until_work(monkeypatch, capsys, hybridpose.train.fit, "extract",
                                 "fit", data, "--out", tmp_path / "run", "--folds", "2")
    assert len(paths) == 12 and "left out" not in text and not (tmp_path / "run" / "left_out.csv").exists()


def test_fit_refuses_a_class_with_no_usable_photo(monkeypatch, capsys, tmp_path, no_work):
    data = tiny_data(tmp_path / "data", THREE)
    (data / "Broken").mkdir()
    (data / "Broken" / "zero.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1)).save(data / "Broken" / "dot.jpg")
    code, text = cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "run", "--folds", "2")
    one_line_error(code, text, "Broken", "no usable photo", "32x32")
    assert not (tmp_path / "run").exists()


# --- 4. links to folders ---------------------------------------------------------------------------------


def linked_data(tmp_path: Path) -> tuple[Path, Path]:
    """data/<class> are links to shared/<class> (a common layout for shared data sets)."""
    shared = tiny_data(tmp_path / "shared", THREE)
    data = tmp_path / "data"
    data.mkdir()
    for cls in THREE:
        os.symlink(shared / cls, data / cls)
    return data, shared


def test_class_folders_that_are_links_are_read(monkeypatch, capsys, tmp_path):
    import hybridpose.pose.extraction
    import hybridpose.train.fit

    data, _ = linked_data(tmp_path)
    ds = load_dataset(data)
    assert len(ds) == 12 and sorted(set(ds.labels)) == sorted(THREE) and not ds.left_out
    paths, text = run_until_work(monkeypatch, capsys, hybridpose.train.fit, "extract",
                                 "fit", data, "--out", tmp_path / "run", "--folds", "2")
    assert len(paths) == 12 and "warning" not in text
    paths, text = run_until_work(monkeypatch, capsys, hybridpose.pose.extraction, "extract", "extract", data, "--out", tmp_path / "x")
    assert len(paths) == 12 and all(Path(p).parent.parent == data for p in paths), paths


def test_a_folder_link_to_an_ancestor_is_named_not_followed(monkeypatch, capsys, tmp_path):
    import hybridpose.train.fit

    data, shared = linked_data(tmp_path)
    os.symlink("..", shared / "Triangle" / "up")                   # back up to shared/, through the class link
    os.symlink(data, shared / "Vrukshasana" / "data")               # to the data folder itself
    os.symlink("loop_b", data / "Triangle" / "loop_a")              # two links pointing at each other
    os.symlink("loop_a", data / "Triangle" / "loop_b")
    rows = {str(e.path.relative_to(data)): e for e in open_inputs(data)}
    for link in ("Triangle/up", "Vrukshasana/data", "Triangle/loop_a", "Triangle/loop_b"):
        assert rows[link].status == "broken_link" and "link loop" in rows[link].reason, rows[link]
    assert sum(e.readable for e in rows.values()) == 12  # every photo once

    paths, text = run_until_work(monkeypatch, capsys, hybridpose.train.fit, "extract",
                                 "fit", data, "--out", tmp_path / "run", "--folds", "2")
    assert len(paths) == 12
    warnings = [line for line in _lines(text) if "warning" in line]
    assert len(warnings) == 1 and "Triangle/up" in warnings[0] and "Vrukshasana/data" in warnings[0], text
    assert "link loop" in warnings[0]


def test_a_class_link_to_the_data_folder_is_left_out(tmp_path):
    data = tiny_data(tmp_path / "data", THREE)
    os.symlink(".", data / "Everything")
    ds = load_dataset(data)
    assert sorted(set(ds.labels)) == sorted(THREE) and len(ds) == 12
    assert [p.name for p, _ in ds.left_out] == ["Everything"] and "link loop" in ds.left_out[0][1]


def test_clip_listing_follows_folder_links(tmp_path):
    frames = tiny_data(tmp_path / "shared", {"Triangle": 3})
    clips = tmp_path / "clips"
    (clips / "a").mkdir(parents=True)
    shutil.copy(write_video(tmp_path / "v.avi", frames=3), clips / "a" / "v.avi")
    os.symlink(frames / "Triangle", clips / "a" / "frames_link")    # a frame folder through a link
    os.symlink(clips, clips / "a" / "back")                          # a loop
    got = {str(s.path.relative_to(clips)): s for s in list_samples(clips)}
    assert got["a/frames_link"].kind == "frames" and not got["a/frames_link"].status
    assert got["a/v.avi"].kind == "video" and not got["a/v.avi"].status
    assert got["a/back"].status == "broken_link" and "link loop" in got["a/back"].reason
    assert len(got) == 3
