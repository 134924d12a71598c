"""How tests/data/clips was made: 1.2 s of four exercise_clips videos, 320 px, 10 fps, H.264; one as frames.

    .venv/bin/python tests/data/make_clips.py ../shared/data/exercise_clips tests/data/clips
"""
import sys
from pathlib import Path

from PIL import Image

from hybridpose.video import Sampling, VideoWriter, iter_frames

SRC, OUT = Path(sys.argv[1]), Path(sys.argv[2])
PICK = {"squat": ["squat_correct_003.mp4", "squat_correct_004.mp4"],
        "jumpingjack": ["jumpingjack_correct_001.mp4", "jumpingjack_correct_003.mp4"]}
for cls, names in PICK.items():
    for name in names:
        frames = [f for f in iter_frames(SRC / cls / name, Sampling(fps=10), max_side=320) if f.time < 1.2]
        (OUT / cls).mkdir(parents=True, exist_ok=True)
        with VideoWriter(OUT / cls / name, 10, frames[0].rgb.shape[1], frames[0].rgb.shape[0]) as w:
            for f in frames:
                w.write(f.rgb)
# a frame-folder clip: 6 frames of a third jumping jack
folder = OUT / "jumpingjack" / "jj_frames"
folder.mkdir(parents=True, exist_ok=True)
for i, f in enumerate(iter_frames(SRC / "jumpingjack" / "jumpingjack_correct_004.mp4", Sampling(n=6), max_side=240)):
    Image.fromarray(f.rgb).save(folder / f"frame{i + 1}.jpg", quality=80)
(OUT / "hierarchy.csv").write_text("class,exercise\nsquat,squat\njumpingjack,jumpingjack\n")
