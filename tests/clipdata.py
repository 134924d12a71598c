"""Tiny clips for tests and benchmark smoke runs, cut from ../shared/data/exercise_clips when it is there.

The exercise clips have no licence, so the repository holds none of them: ``make_clips(dest)`` writes
1.2 s of four of them (320 px, 10 fps, H.264) and one as a folder of six frames, as tests/data/clips
used to hold. ``None`` where the shared data is absent (callers skip).
"""
from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "exercise_clips"
PICK = {"squat": ["squat_correct_003.mp4", "squat_correct_004.mp4"],
        "jumpingjack": ["jumpingjack_correct_001.mp4", "jumpingjack_correct_003.mp4"]}
FRAMES_FROM = ("jumpingjack", "jumpingjack_correct_004.mp4")


def available() -> bool:
    return all((SHARED / c / n).is_file() for c, names in PICK.items() for n in names)


def make_clips(dest: Path) -> Path | None:
    """The tiny clip data set in ``dest`` (written once; a complete earlier one is reused)."""
    if not available():
        return None
    done = dest / ".complete"
    if done.exists():
        return dest
    from PIL import Image

    from hybridpose.data.video import Sampling, VideoWriter, iter_frames

    for cls, names in PICK.items():
        for name in names:
            frames = [f for f in iter_frames(SHARED / cls / name, Sampling(fps=10), max_side=320) if f.time < 1.2]
            (dest / cls).mkdir(parents=True, exist_ok=True)
            with VideoWriter(dest / cls / name, 10, frames[0].rgb.shape[1], frames[0].rgb.shape[0]) as w:
                for f in frames:
                    w.write(f.rgb)
    folder = dest / FRAMES_FROM[0] / "jj_frames"
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(iter_frames(SHARED / FRAMES_FROM[0] / FRAMES_FROM[1], Sampling(n=6), max_side=240)):
        Image.fromarray(f.rgb).save(folder / f"frame{i + 1}.jpg", quality=80)
    (dest / "hierarchy.csv").write_text("class,exercise\nsquat,squat\njumpingjack,jumpingjack\n")
    done.touch()
    return dest


PAIR = (("squat", "squat_correct_004.mp4"), ("jumpingjack", "jumpingjack_correct_003.mp4"))  # of make_clips, one person each


def side_by_side(left: Path, right: Path, out: Path, *, height: int = 360, fps: float = 10,
                 seconds: float | None = None) -> Path:
    """Two videos resized to ``height``, put side by side (left, right) at ``fps``, as long as the shorter (or
    ``seconds``): a video of two people doing each their exercise."""
    import numpy as np
    from PIL import Image

    from hybridpose.data.video import Sampling, VideoWriter, iter_frames

    def frames(path: Path):
        for f in iter_frames(path, Sampling(fps=fps)):
            if seconds is not None and f.time >= seconds:
                return
            im = Image.fromarray(f.rgb)
            yield np.asarray(im.resize((round(im.width * height / im.height) // 2 * 2, height)))

    writer = None
    try:
        for a, b in zip(frames(left), frames(right)):
            both = np.concatenate([a, b], axis=1)
            if writer is None:
                writer = VideoWriter(out, fps, both.shape[1], both.shape[0])
            writer.write(both)
    finally:
        if writer is not None:
            writer.close()
    return out


def make_pair(dest: Path, seconds: float | None = None) -> Path | None:
    """Two people side by side, a squat (left) and jumping jacks (right), from PAIR's full clips; None without
    the shared data."""
    if not all((SHARED / c / n).is_file() for c, n in PAIR):
        return None
    out = dest / "two_people.mp4"
    if not out.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        side_by_side(SHARED / PAIR[0][0] / PAIR[0][1], SHARED / PAIR[1][0] / PAIR[1][1], out, seconds=seconds)
    return out
