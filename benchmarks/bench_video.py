"""Video prediction speed against a bare decode + MediaPipe loop, and memory over long videos.

    .venv/bin/python benchmarks/bench_video.py --model RUN [--video FILE] [--fps F] [--repeat R] [--json PATH]
    .venv/bin/python benchmarks/bench_video.py --model RUN --memory [--minutes 1,10]
    .venv/bin/python benchmarks/bench_video.py --model RUN --live [--video FILE] [--height 720]
    .venv/bin/python benchmarks/bench_video.py --smoke [--model RUN]   # both modes, tiny: does it run?

Speed mode, in one process, on the same video and sampling (default 4 frames per second), best of --repeat:
  bare loop    PyAV decode of the whole video, keeping the sampled frames (scaled to 720 px, as predict does),
               each through the MediaPipe pose model (warmed up): the floor any video tool pays.
  predict      `ClipPredictor.predict_clip` with a fresh, empty pose cache: the same decode and pose model,
               plus crops, the K fold networks of the image branch (batches of 16), temporal statistics,
               the clip keypoint branch, fusion and rules.
  Both in sampled frames per second; ratio = predict / bare.
Memory mode: a long video made by looping a clip (320 px, 10 frames per second, H.264) to each of --minutes,
predicted (--memory-fps, default 2 frames per second sampled) in a fresh process each; peak RSS of that process (ru_maxrss) per length.
Flat memory: the peak at 10 minutes is close to the one at 1 minute (frames are decoded, analysed, dropped).
Live mode: the video scaled to --height (default 720 px) and played at its own frame rate as the camera of
`predict --camera FILE` (the live loop with the whole hybrid, frames the loop has no time for dropped):
frames labelled per second, frames dropped, against the file's own rate.
--smoke: without --model, fits a tiny clip run on the tests' clips (tests/clipdata.py) first (preset tiny, 2 folds, 3 frames a clip);
one repeat on a test clip; memory at 0.2 and 0.4 minutes. Numbers meaningless.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def bare_loop(video: Path, fps: float) -> tuple[int, float]:
    from hybridpose.data.video import Sampling, iter_frames
    from hybridpose.pose.frontend import estimator_class

    est = estimator_class("body")()
    first = next(iter(iter_frames(video, Sampling(fps=fps))))
    est.landmarks(first.rgb)  # warm-up
    t0 = time.perf_counter()
    n = 0
    for fr in iter_frames(video, Sampling(fps=fps)):
        est.landmarks(fr.rgb)
        n += 1
    return n, time.perf_counter() - t0


def predict_loop(run: Path, video: Path, fps: float, cache: Path) -> tuple[int, float, str]:
    from hybridpose.data.clips import Sample
    from hybridpose.data.video import Sampling
    from hybridpose.inference.clips import ClipPredictor

    pred = ClipPredictor(run, sampling=Sampling(fps=fps), cache_dir=cache / "warm")
    pred.predict_clip(Sample(video, "video"))  # warm-up: models created, first calls made
    pred.cache_dir = cache / f"fresh-{time.time_ns()}"
    t0 = time.perf_counter()
    res = pred.predict_clip(Sample(video, "video"))
    return len(res.frames), time.perf_counter() - t0, res.row.get("class", res.status)


def live_loop(run: Path, video: Path, height: int, tmp: Path) -> dict:
    """The live loop on ``video`` scaled to ``height``, played at its own rate: labelled frames/s, dropped."""
    from hybridpose.data.video import Sampling, VideoWriter, iter_frames, probe
    from hybridpose.inference.clips import ClipPredictor
    from hybridpose.inference.live import live

    rate = probe(video).rate or 30.0
    frames = [f.rgb for f in iter_frames(video, Sampling(n=100000), max_side=10 ** 6, every=True)]
    scale = height / frames[0].shape[0]
    import cv2

    size = (int(frames[0].shape[1] * scale) // 2 * 2, height)
    scaled = tmp / f"live_{height}p.mp4"
    with VideoWriter(scaled, rate, *size) as w:
        for f in frames:
            w.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
    pred = ClipPredictor(run)
    list(live(pred, str(scaled), show=False, max_frames=3, realtime=False))  # warm-up: models made, first calls
    t0 = time.perf_counter()
    out = list(live(pred, str(scaled), show=False, realtime=True))
    seconds = time.perf_counter() - t0
    return {"video_fps": rate, "video_frames": len(frames), "size": list(size), "labelled": len(out),
            "dropped": out[-1]["dropped"] if out else 0, "seconds": seconds,
            "labelled_fps": len(out) / seconds if seconds else 0.0, "last_label": out[-1]["label"] if out else None}


def make_long_video(src: Path, minutes: float, out: Path) -> Path:
    """``src`` looped to ``minutes`` at 320 px and 10 frames per second."""
    from hybridpose.data.video import Sampling, VideoWriter, iter_frames

    frames = [f.rgb for f in iter_frames(src, Sampling(fps=10), max_side=320)]
    n = int(minutes * 60 * 10)
    with VideoWriter(out, 10, frames[0].shape[1], frames[0].shape[0]) as w:
        for i in range(n):
            w.write(frames[i % len(frames)] if (i // len(frames)) % 2 == 0 else frames[-1 - i % len(frames)])
    return out


MEMORY_CHILD = """
import json, resource, sys, time
from pathlib import Path
from hybridpose.inference.clips import ClipPredictor
from hybridpose.data.clips import Sample
from hybridpose.data.video import Sampling
run, video, cache = sys.argv[1:4]
p = ClipPredictor(run, sampling=Sampling(fps=float(sys.argv[4])), cache_dir=cache)
t0 = time.perf_counter()
r = p.predict_clip(Sample(Path(video), "video"))
print(json.dumps({"frames": len(r.frames), "seconds": time.perf_counter() - t0, "status": r.status,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(run: Path, src: Path, minutes: list[float], tmp: Path, fps: float) -> list[dict]:
    rows = []
    for m in minutes:
        video = make_long_video(src, m, tmp / f"long_{m:g}min.mp4")
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(run), str(video), str(tmp / f"cache{m:g}"), str(fps)],
                             capture_output=True, text=True, check=True)
        rows.append({"minutes": m, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def smoke_run(tmp: Path) -> Path:
    from hybridpose.train.fit import fit

    run = tmp / "smoke_run"
    fit(_common.smoke_clips(tmp), run, folds=2, preset="tiny", show_progress=False, clips={"frames": 3}, cache_dir=tmp / "fitcache")
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared" / "data" / "exercise_clips" / "squat" / "squat_correct_010.mp4")
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--live", action="store_true", help="the live loop (whole hybrid) on the video played as a camera")
    ap.add_argument("--height", type=int, default=720, help="live mode: the video scaled to this height")
    ap.add_argument("--minutes", default="1,10")
    ap.add_argument("--memory-fps", type=float, default=2.0, help="frames sampled per second in memory mode")
    ap.add_argument("--json")
    _common.add_smoke_arg(ap, "a test clip, memory at 12 and 24 s")
    a = ap.parse_args()
    keep = _common.setup_env()
    tmp = Path(tempfile.mkdtemp(prefix="bench-video-", dir=keep.name))
    if a.smoke:
        _common.apply_smoke(a, video=_common.smoke_clips(tmp) / "squat" / "squat_correct_003.mp4", repeat=1,
                            minutes="0.2,0.4", height=240)
    run = a.model or (smoke_run(tmp) if a.smoke else None)
    if run is None:
        sys.exit("--model RUN: a run fitted on clips (or --smoke)")
    payload: dict = {"machine": _common.machine_info(), "video": str(a.video), "fps": a.fps}
    if a.live or a.smoke:
        got = live_loop(run, a.video, a.height, tmp)
        _common.print_table(f"live loop, whole hybrid, {got['size'][0]}x{got['size'][1]} played at {got['video_fps']:.1f} frames/s",
                            ["frames in file", "labelled", "dropped", "seconds", "labelled frames/s"],
                            [[got["video_frames"], got["labelled"], got["dropped"], round(got["seconds"], 1),
                              round(got["labelled_fps"], 1)]])
        print(_common.busy_warning("measured"))
        payload["live"] = got
        if a.smoke:
            _common.smoke_check(got["labelled"] > 0 and got["labelled"] + got["dropped"] <= got["video_frames"],
                                "the live loop labelled frames and dropped the rest")
    if a.live and not a.smoke:
        _common.finish(a, payload)
        return 0
    if not a.memory or a.smoke:
        bare = min((bare_loop(a.video, a.fps) for _ in range(a.repeat)), key=lambda r: r[1])
        full = min((predict_loop(run, a.video, a.fps, tmp) for _ in range(a.repeat)), key=lambda r: r[1])
        rows = [["bare decode + MediaPipe", bare[0], round(bare[1], 2), round(bare[0] / bare[1], 2)],
                ["predict_clip", full[0], round(full[1], 2), round(full[0] / full[1], 2)]]
        _common.print_table("video prediction, sampled frames per second", ["loop", "frames", "seconds", "frames/s"], rows)
        ratio = (full[0] / full[1]) / (bare[0] / bare[1])
        print(f"predict / bare = {ratio:.2f}   {_common.busy_warning('measured')}")
        payload["speed"] = {"bare_fps": bare[0] / bare[1], "predict_fps": full[0] / full[1], "ratio": ratio}
        if a.smoke:
            _common.smoke_check(bare[0] == full[0] > 0, "both loops saw the same sampled frames")
    if a.memory or a.smoke:
        mins = [float(m) for m in a.minutes.split(",")]
        mem = memory(run, a.video, mins, tmp, a.memory_fps)
        _common.print_table(f"memory over long videos ({a.memory_fps:g} frames/s sampled)", ["minutes", "frames", "seconds", "peak RSS MB"],
                            [[r["minutes"], r["frames"], round(r["seconds"], 1), round(r["peak_rss_mb"], 1)] for r in mem])
        payload["memory"] = mem
        if a.smoke:
            _common.smoke_check(all(r["status"] == "ok" and r["frames"] > 0 for r in mem), "long videos predicted")
    _common.finish(a, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
