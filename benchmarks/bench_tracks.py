"""Tracking several people in a video: ID switches, fragmentation and time per frame of each tracker.

    .venv/bin/python benchmarks/bench_tracks.py [--fps 4,15] [--height 360] [--json PATH]
    .venv/bin/python benchmarks/bench_tracks.py --smoke     # two sample photos panned side by side: does it run?

The test videos: pairs of ../shared/data/exercise_clips videos of different exercises, each resized to --height
and put side by side (tests/clipdata.side_by_side), as long as the shorter, written to a temporary folder (the
clips have no licence: never into the repository). The truth is free: a person whose keypoints lie in the left
half is the left video's, the others the right one's; the largest found on a side is that side's person, any
other one there an extra (a false detection, or someone in the background of that clip). Each video is posed once per sampling rate (the
multi-person model, every person's box, keypoints and score), and the same detections go through every tracker
(pose time is not the tracker's), fresh per video:
  ID switches      a person's track id changing from one frame where it has one to the next (goal 0)
  fragments        ids a person was given beyond the first (a track lost and started again counts here too)
  merged           ids given to both people (one id covering two persons)
  untracked        frames where a side's person was found but left without an id (the tracker's choice)
  extras           other detections on a side; extras_tracked: how many of them got an id
  ms / frame       the tracker's update alone, mean over the video's frames
--smoke: two photos of data/sample (different poses) side by side, panned over 6 frames; numbers meaningless.
CI skips nothing here: --smoke needs no shared data.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PAIRS = [(("squat", "squat_correct_004.mp4"), ("jumpingjack", "jumpingjack_correct_003.mp4")),  # tests/test_tracks.py's
         (("squat", "squat_correct_010.mp4"), ("jumpingjack", "jumpingjack_correct_006.mp4")),
         (("russiantwist", "russiantwist_correct_002.mp4"), ("jumpingjack", "jumpingjack_correct_002.mp4")),
         (("plank", "plank_correct_005.mp4"), ("pushup_incorrect", "pushup_incorrect_001.mp4")),
         (("jumpingjack", "jumpingjack_correct_004.mp4"), ("squat", "squat_correct_007.mp4"))]


def make_videos(tmp: Path, height: int, smoke: bool) -> list[Path]:
    from clipdata import SHARED, side_by_side

    if smoke:
        return [smoke_video(tmp / "smoke.mp4")]
    out = []
    for (ca, a), (cb, b) in PAIRS:
        if (SHARED / ca / a).is_file() and (SHARED / cb / b).is_file():
            out.append(side_by_side(SHARED / ca / a, SHARED / cb / b, tmp / f"{Path(a).stem}+{Path(b).stem}.mp4",
                                    height=height, fps=30))
    if not out:
        sys.exit(f"needs {SHARED} (clips are not kept in the repository); --smoke needs none")
    return out


def smoke_video(path: Path) -> Path:
    """Two sample photos of different poses side by side, panned a few pixels a frame (6 frames)."""
    import numpy as np
    from PIL import Image

    from hybridpose.data.video import VideoWriter

    folders = sorted(p for p in _common.SAMPLE_DATA.iterdir() if p.is_dir())[:2]
    photos = [Image.open(sorted(f.glob("*.jpg"))[0]).convert("RGB") for f in folders]
    h = 256
    tiles = [np.asarray(p.resize((round(p.width * h / p.height) // 2 * 2, h))) for p in photos]
    both = np.concatenate(tiles, axis=1)
    with VideoWriter(path, 6, both.shape[1] - 16, h) as w:
        for i in range(6):
            w.write(both[:, 2 * i: 2 * i + both.shape[1] - 16])
    return path


def detections(video: Path, fps: float, max_people: int) -> tuple[list, int, float]:
    """Every sampled frame's people (boxes, keypoints, scores), the frame width, and the pose time per frame."""
    import numpy as np

    from hybridpose.data.video import Sampling, iter_frames
    from hybridpose.pose.frontend import estimator_class
    from hybridpose.pose.result import analyse_array

    frames, width, spent = [], 0, 0.0
    with estimator_class("body", max_people)() as est:
        for fr in iter_frames(video, Sampling(fps=fps)):
            h, width = fr.rgb.shape[:2]
            t = time.perf_counter()
            r = analyse_array(fr.rgb, width, h, est)
            spent += time.perf_counter() - t
            people = [p for p in r.persons(max_people) if p.keypoints is not None]
            frames.append(([p.box for p in people], [np.asarray(p.keypoints, float) for p in people],
                           [p.score for p in people]))
    return frames, width, spent / max(1, len(frames))


def score(tracker_name: str, frames: list, width: int, fps: float) -> dict:
    """Run one tracker over the detections and count its mistakes against the left/right truth."""
    import numpy as np

    from hybridpose.pose.trackers import make_tracker

    tracker = make_tracker(tracker_name, fps)
    last: dict[str, int] = {}
    given: dict[str, set] = {"left": set(), "right": set()}
    switches = untracked = seen = extras = extras_tracked = 0
    spent = 0.0
    for boxes, kps, scores in frames:
        t = time.perf_counter()
        ids = tracker.update(boxes, kps, scores)
        spent += time.perf_counter() - t
        sides: dict[str, list] = {"left": [], "right": []}
        for kp, box, i in zip(kps, boxes, ids):
            sides["left" if float(np.nanmedian(kp[:, 0])) < width / 2 else "right"].append((box_area(box), i))
        for side, found in sides.items():
            if not found:
                continue
            found.sort(key=lambda f: -f[0])  # the side's person is its largest; the others are extras
            extras += len(found) - 1
            extras_tracked += sum(i is not None for _, i in found[1:])
            i = found[0][1]
            seen += 1
            if i is None:
                untracked += 1
                continue
            switches += side in last and last[side] != i
            last[side] = i
            given[side].add(i)
    return {"tracker": tracker_name, "detections": seen, "id_switches": int(switches),
            "fragments": sum(max(0, len(v) - 1) for v in given.values()),
            "merged": len(given["left"] & given["right"]), "untracked": untracked, "extras": extras,
            "extras_tracked": extras_tracked,
            "ms_per_frame": round(1000 * spent / max(1, len(frames)), 3)}


def box_area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", default="4,15", help="sampling rates (frames per second) the trackers see (4: the "
                    "clip runs' default sampling; 15: closer to a camera's rate)")
    ap.add_argument("--height", type=int, default=360, help="height of each side of the test videos")
    ap.add_argument("--max-people", type=int, default=4)
    ap.add_argument("--json", type=Path, help="also write the results here")
    _common.add_smoke_arg(ap, "two sample photos panned side by side")
    args = ap.parse_args()
    _common.apply_smoke(args, fps="6")
    keep = _common.setup_env()
    from hybridpose.pose.trackers import TRACKERS

    names = [n for n in TRACKERS.names() if TRACKERS[n].available()]
    missing = [f"{n} ({TRACKERS[n].missing})" for n in TRACKERS.names() if n not in names]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tracks-") as tmp:
        for video in make_videos(Path(tmp), args.height, args.smoke):
            for fps in (float(f) for f in args.fps.split(",")):
                frames, width, pose_s = detections(video, fps, args.max_people)
                found = sum(len(b) for b, _, _ in frames)
                for name in names:
                    results.append({"video": video.stem, "fps": fps, "frames": len(frames), "people_found": found,
                                    "pose_ms_per_frame": round(1000 * pose_s, 1), **score(name, frames, width, fps)})
    cols = ["video", "fps", "frames", "people_found", "tracker", "id_switches", "fragments", "merged", "untracked",
            "extras", "extras_tracked", "ms_per_frame", "pose_ms_per_frame"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    for name in names:
        mine = [r for r in results if r["tracker"] == name]
        print(f"{name}: {sum(r['id_switches'] for r in mine)} ID switches, {sum(r['fragments'] for r in mine)} "
              f"fragments, {sum(r['merged'] for r in mine)} merged, {sum(r['untracked'] for r in mine)} untracked, "
              f"{sum(r['extras_tracked'] for r in mine)} of {sum(r['extras'] for r in mine)} extras tracked, "
              f"{sum(r['ms_per_frame'] for r in mine) / max(1, len(mine)):.3f} ms/frame over {len(mine)} runs")
    for m in missing:
        print(f"not measured: {m}")
    if args.json:
        _common.write_json(args.json, {"results": results, "missing": missing, "machine": _common.machine_info()})
    if args.smoke:
        _common.smoke_check(bool(results) and all(r["people_found"] > 0 for r in results), "nobody found or tracked")
        _common.smoke_footer()
    del keep


if __name__ == "__main__":
    main()
