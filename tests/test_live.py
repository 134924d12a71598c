"""The live loop: the whole hybrid decides every frame's label, and a loop slower than its camera drops frames
rather than falling behind."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest


class _FakeCamera:
    """A cv2.VideoCapture stand-in: ``n`` frames as fast as they are asked for."""

    def __init__(self, n: int):
        self.n, self.i = n, 0

    def read(self):
        if self.i >= self.n:
            return False, None
        self.i += 1
        return True, np.full((4, 4, 3), self.i, np.uint8)


def test_a_slow_loop_gets_the_newest_frame_and_counts_the_dropped_ones():
    from hybridpose.inference.live import LatestFrame

    reader = LatestFrame(_FakeCamera(40), rate=200.0)  # a "camera" of 200 frames/s
    seen = []
    while (got := reader.next()) is not None:
        seen.append(int(got[0][0, 0, 0]))
        time.sleep(0.02)  # a loop of 50 frames/s: it cannot keep up
    reader.close()
    assert seen == sorted(seen) and seen[-1] == 40  # always forward, and the last frame is labelled
    assert len(seen) < 30 and reader.dropped == 40 - len(seen)


def test_a_file_standing_in_for_a_camera_plays_at_its_own_rate():
    from hybridpose.inference.live import LatestFrame

    start = time.perf_counter()
    reader = LatestFrame(_FakeCamera(10), rate=50.0)
    got = []
    while (frame := reader.next()) is not None:
        got.append(frame)
    reader.close()
    assert len(got) == 10 and reader.dropped == 0  # a fast loop takes every frame
    assert time.perf_counter() - start >= 9 / 50.0  # ... but no sooner than the file's own clock gives them
    assert not reader.thread.is_alive() and reader.thread.name == "hybridpose-live"


def _photo_video(photo: Path, out: Path, frames: int = 6) -> Path:
    import av
    from PIL import Image

    im = Image.open(photo).convert("RGB")
    im = im.resize((im.width // 2 * 2, im.height // 2 * 2))
    with av.open(str(out), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = im.width, im.height, "yuv420p"
        for _ in range(frames):
            for packet in s.encode(av.VideoFrame.from_image(im)):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return out


@pytest.mark.slow
def test_a_photo_run_live_labels_each_frame_with_the_whole_hybrid(tiny_run, tmp_path):
    """A video of one photo, live: every frame's label and confidence are the photo's fused prediction (the
    keypoint branches, fusion and rules, not the image branch alone)."""
    from hybridpose.inference.classifier import HybridPoseClassifier
    from hybridpose.inference.clips import ClipPredictor
    from hybridpose.inference.live import live

    photo = sorted((Path(__file__).resolve().parents[1] / "data" / "sample").rglob("*.jpg"))[0]
    video = _photo_video(photo, tmp_path / "still.mp4")
    pred = ClipPredictor(tiny_run)
    got = list(live(pred, str(video), show=False, realtime=False))
    assert len(got) == 6 and all(o["status"] == "ok" for o in got)
    # the frame as the live loop sees it (decoded from the video) through the photo path
    import av

    with av.open(str(video)) as c:
        first = next(c.decode(video=0)).to_image()
    first.save(tmp_path / "frame.png")
    clf = HybridPoseClassifier.load(tiny_run)
    rows, batch = clf.predict_batch([tmp_path / "frame.png"])
    leaf = clf.hierarchy.leaf_level
    fused, image = batch.fused[leaf][0], batch.image[leaf][0]
    assert abs(fused.max() - image.max()) > 1e-3  # the two differ here, so the check below tells them apart
    assert {o["label"] for o in got} == {rows[leaf].iloc[0]}
    assert got[-1]["confidence"] == pytest.approx(float(fused.max()), abs=1e-4)
    assert got[-1]["rule"] == (rows["rule"].iloc[0] or "") and got[-1]["dropped"] == 0


@pytest.mark.slow
def test_a_clip_run_live_averages_the_image_branch_over_frames_with_a_skeleton(clip_run):
    """As predict does: a frame without a skeleton (a whole-frame crop) does not pull the live label, unless no
    frame of the history has one."""
    from hybridpose.inference.clips import ClipPredictor, FrameResult

    pred = ClipPredictor(clip_run[0], use_rules=False)
    leaves, n = pred.h.leaves, pred.sk.n
    kp = np.random.default_rng(0).uniform(0.3, 0.7, (n, 4))
    kp[:, 2:] = 1.0
    onehot = lambda i: np.eye(len(leaves))[i]  # noqa: E731
    seen = [FrameResult(i, i / 4, "ok", kp, onehot(0)) for i in range(6)]
    stray = FrameResult(6, 1.5, "no_person", np.full((n, 4), np.nan), onehot(1), picked=False)
    with_stray = pred._decide(seen + [stray])[1]["image"][pred.h.leaf_level]
    np.testing.assert_allclose(with_stray[0], onehot(0))
    alone = pred._decide([stray])[1]["image"][pred.h.leaf_level]
    np.testing.assert_allclose(alone[0], onehot(1))
    from hybridpose.pose.result import PoseResult

    rgb = np.full((120, 160, 3), 90, np.uint8)
    live = pred.live_frame(rgb, PoseResult("no_person", "", 160, 120), 0.0)   # the live loop's frame: the same rule
    assert not live.picked and np.isfinite(live.image).all()
    box = (40.0, 10.0, 120.0, 110.0)
    pixels = (kp[:, :2] * [160, 120]).tolist()
    live = pred.live_frame(rgb, PoseResult("ok", "", 160, 120, box, [p + [0.0, 1.0] for p in pixels]), 0.25)
    assert live.picked
