"""Pose extraction speed: `hybridpose.pose.frontend.extract` against a bare MediaPipe loop on the same photos.

    .venv/bin/python benchmarks/bench_extract.py [--data DIR] [--limit N] [--repeat R] [--json PATH]
    .venv/bin/python benchmarks/bench_extract.py --smoke     # 8 photos of data/sample, 1 repeat: does it run?

Measured (images per second, wall clock):
  bare loop    PIL open + convert("RGB") + np.asarray + Pose(static_image_mode=True,
               model_complexity=1).process, one model, warmed up before timing (its creation
               and first call are timed separately and reported as "startup").
  extract w=1  extract(paths, workers=1) into a fresh empty cache: file hashing, decode (with
               JPEG draft downscaling to 1024 px), the pose model, SQLite writes, the table;
               the time runs from the call to its return, so it INCLUDES creating the model.
               A second figure subtracts the bare loop's measured startup cost.
  bare x2      the bare loop in 2 processes at once (half the photos each, clocks started together
               after both warmed up): the parallel ceiling of this machine, for workers=2.
  extract w=2  the same with workers=2 (fork pool; each worker creates its own model, in parallel).
  cached       extract(paths, workers=1) again on the w=1 cache: every photo is a cache hit
               (hashing + one SQLite query + the table; no decode, no model).
Each measurement runs in its own fresh Python process (mediapipe imported before the clock starts).
Goals: w=1 / bare >= 0.9, w=2 / w=1 >= 1.6, cached speedup >= 20.
--smoke: the same runs and tables on 8 photos of data/sample, once each (seconds; numbers meaningless),
plus sanity checks (every run gives a row per photo, all runs agree on the statuses); exit 1 if one fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def bare_loop(paths: list[str], go_file: Path | None = None) -> dict:
    """Time the plain MediaPipe loop; model creation and the first call are timed apart.

    With ``go_file``, announce readiness (``go_file``.ready-PID) after the warm-up and start the clock
    only once ``go_file`` exists, so that several such loops run truly side by side.
    """
    import mediapipe
    import numpy as np
    from PIL import Image

    def load(p: str) -> np.ndarray:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")  # Pillow's notes on palette transparency: the bare loop ignores it
            return np.asarray(im.convert("RGB"))

    t0 = time.perf_counter()
    pose = mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
    t_create = time.perf_counter() - t0
    t0 = time.perf_counter()
    pose.process(load(paths[0]))  # warm-up: the first call initialises the graph
    t_first = time.perf_counter() - t0
    if go_file is not None:
        Path(f"{go_file}.ready-{os.getpid()}").touch()
        while not go_file.exists():
            time.sleep(0.001)
    found = 0
    c0, t0 = _common.cpu_seconds(), time.perf_counter()
    for p in paths:
        found += pose.process(load(p)).pose_landmarks is not None
    wall = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - c0
    pose.close()
    per_image = wall / len(paths)
    return {"seconds": wall, "images_per_s": len(paths) / wall, "cpu_cores_busy": cpu / wall,
            "model_create_s": t_create, "first_call_s": t_first,
            "startup_s": max(0.0, t_create + t_first - per_image), "person_found": found}


def run_extract(paths: list[str], cache_dir: Path, workers: int) -> dict:
    from hybridpose.pose.frontend import extract, summarize

    c0, t0 = _common.cpu_seconds(), time.perf_counter()
    table = extract(paths, cache_dir=cache_dir, workers=workers, show_progress=False)
    wall = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - c0
    return {"seconds": wall, "images_per_s": len(paths) / wall, "cpu_cores_busy": cpu / wall,
            "status": summarize(table)}


def best(runs: list[dict]) -> dict:
    out = dict(min(runs, key=lambda r: r["seconds"]))
    out["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    return out


def in_child(mode: str, paths_file: Path, cache: Path | None = None, workers: int = 1) -> dict:
    return _common.in_child(__file__, mode, paths_file, cache, "--workers", str(workers))


def bare_side_by_side(paths: list[str], tmp: Path, procs: int = 2) -> dict:
    """The bare loop in ``procs`` processes at once, each on its share of the photos, started together
    after every one has warmed up: what this machine can do in parallel, the ceiling for workers=2."""
    go = tmp / f"go-{time.monotonic_ns()}"
    files, children = [], []
    for j in range(procs):
        f = tmp / f"paths-part{j}-{go.name}.txt"
        f.write_text("\n".join(paths[j::procs]), encoding="utf-8")
        files.append(f)
        cmd = [sys.executable, __file__, "--child", "bare", "--paths-file", str(f), "--go-file", str(go)]
        children.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    while len(list(tmp.glob(f"{go.name}.ready-*"))) < procs:
        if any(c.poll() is not None for c in children):
            break
        time.sleep(0.01)
    go.touch()
    results = []
    for c in children:
        out, err = c.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if c.returncode != 0 or not lines:
            sys.stderr.write(err[-4000:])
            sys.exit(f"side-by-side bare loop failed with exit code {c.returncode}")
        results.append(json.loads(lines[-1]))
    wall = max(r["seconds"] for r in results)
    return {"processes": procs, "seconds": wall, "images_per_s": len(paths) / wall,
            "per_process_seconds": [round(r["seconds"], 3) for r in results],
            "cpu_cores_busy": sum(r["cpu_cores_busy"] * r["seconds"] for r in results) / wall}


def child(args: argparse.Namespace) -> None:
    import mediapipe  # noqa: F401  imported before timing in every mode (the bare loop needs it anyway)

    paths = Path(args.paths_file).read_text(encoding="utf-8").splitlines()
    if args.child == "bare":
        result = bare_loop(paths, Path(args.go_file) if args.go_file else None)
    else:
        result = run_extract(paths, Path(args.cache), args.workers)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help=f"image folder (default {_common.DEFAULT_DATA})")
    ap.add_argument("--limit", type=int, help="use N photos, spread evenly over the (class-sorted) list")
    ap.add_argument("--repeat", type=int, default=3,
                    help="repeat each measurement R times, keep the fastest (default 3)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "--limit 8 --repeat 1")
    ap.add_argument("--child", choices=["bare", "extract"], help=argparse.SUPPRESS)
    ap.add_argument("--paths-file", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--go-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    tmp = _common.setup_env()
    if args.child:
        child(args)
        return {}

    _common.apply_smoke(args, limit=min(args.limit or 8, 8), repeat=1)
    data = _common.resolve_data(args.data, args.smoke)
    paths, paths_file, busy_start = _common.photo_list(data, args.limit, args.repeat, Path(tmp.name))
    bare_runs, bare2_runs, w1_runs, w2_runs, cached_runs = [], [], [], [], []
    for r in range(args.repeat):
        bare_runs.append(in_child("bare", paths_file))
        bare2_runs.append(bare_side_by_side(paths, Path(tmp.name), 2))
        c1 = Path(tempfile.mkdtemp(prefix=f"w1-{r}-", dir=tmp.name))
        w1_runs.append(in_child("extract", paths_file, c1, 1))
        cached_runs.append(in_child("extract", paths_file, c1, 1))  # every photo now a cache hit
        c2 = Path(tempfile.mkdtemp(prefix=f"w2-{r}-", dir=tmp.name))
        w2_runs.append(in_child("extract", paths_file, c2, 2))
    bare, bare2 = best(bare_runs), best(bare2_runs)
    w1, w2, cached = best(w1_runs), best(w2_runs), best(cached_runs)
    n = len(paths)
    w1_excl = n / max(1e-9, w1["seconds"] - bare["startup_s"])

    ratios = {
        "w1_over_bare": w1["images_per_s"] / bare["images_per_s"],
        "w1_excl_startup_over_bare": w1_excl / bare["images_per_s"],
        "w2_over_w1": w2["images_per_s"] / w1["images_per_s"],
        "cached_speedup": cached["images_per_s"] / w1["images_per_s"],
        "bare2_over_bare": bare2["images_per_s"] / bare["images_per_s"],
        "w2_over_bare2": w2["images_per_s"] / bare2["images_per_s"],
    }
    header = ["run", "seconds", "images/s", "cores busy", "what the time includes"]
    _common.print_table("Pose extraction (wall clock)", header, [
        ["bare MediaPipe loop", bare["seconds"], bare["images_per_s"], bare["cpu_cores_busy"],
         "decode (full size) + process; model warm"],
        ["bare loop x2 side by side", bare2["seconds"], bare2["images_per_s"], bare2["cpu_cores_busy"],
         "2 processes, half the photos each, started together warm"],
        ["extract workers=1", w1["seconds"], w1["images_per_s"], w1["cpu_cores_busy"],
         "hash+decode(<=1024px)+pose+sqlite+table, model creation"],
        ["  same, minus startup", n / w1_excl, w1_excl, None,
         f"bare loop's startup cost ({bare['startup_s']:.2f} s) subtracted"],
        ["extract workers=2", w2["seconds"], w2["images_per_s"], w2["cpu_cores_busy"],
         "as workers=1, plus pool fork; 2 models made in parallel"],
        ["extract cached rerun", cached["seconds"], cached["images_per_s"], cached["cpu_cores_busy"],
         "hash + SQLite lookup + table (no decode, no model)"],
    ])
    print(f"bare loop startup: model creation {bare['model_create_s']:.2f} s, first call {bare['first_call_s']:.2f} s "
          f"(not in the bare loop's time)\n")
    _common.print_table("Ratios", ["ratio", "value", "goal", ""], [
        _common.goal_line("extract w=1 / bare loop", ratios["w1_over_bare"], 0.9),
        ["  (w=1 minus startup) / bare", round(ratios["w1_excl_startup_over_bare"], 3), "(info)", ""],
        _common.goal_line("extract w=2 / extract w=1", ratios["w2_over_w1"], 1.6),
        ["  bare x2 / bare (machine ceiling)", round(ratios["bare2_over_bare"], 3), "(info)", ""],
        ["  extract w=2 / bare x2", round(ratios["w2_over_bare2"], 3), "(info)", ""],
        _common.goal_line("cached rerun speedup", ratios["cached_speedup"], 20),
    ])
    if w1["status"] != w2["status"]:
        print(f"warning: workers=1 and workers=2 disagree on statuses: {w1['status']} vs {w2['status']}\n")
    if args.smoke:
        for name, r in (("workers=1", w1), ("workers=2", w2), ("cached", cached)):
            _common.smoke_check(sum(r["status"].values()) == n, f"extract {name} gave {r['status']} for {n} photos")
        _common.smoke_check(w1["status"] == w2["status"] == cached["status"],
                            f"statuses differ: workers=1 {w1['status']}, workers=2 {w2['status']}, cached {cached['status']}")
    print(f"statuses: {w1['status']}; bare loop found a person in {bare['person_found']}/{n}")
    for name, r in (("workers=1", w1), ("workers=2", w2), ("cached", cached)):
        if r.get("stderr_alerts"):
            print(f"note: extract {name} printed {r['stderr_alerts'][:2]} on stderr")

    print(_common.busy_warning("at end"))
    payload = {"benchmark": "extract", "smoke": args.smoke, "cpu_busy_share_at_start": busy_start,
               "data": str(data), "n_photos": n, "repeat": args.repeat,
               "machine": _common.machine_info(), "bare_loop": bare, "bare_loop_x2_side_by_side": bare2,
               "extract_workers1": w1,
               "extract_workers1_excl_startup_images_per_s": w1_excl, "extract_workers2": w2,
               "extract_cached": cached, "ratios": ratios,
               "goals": {"w1_over_bare": 0.9, "w2_over_w1": 1.6, "cached_speedup": 20}}
    return _common.finish(args, payload)


if __name__ == "__main__":
    main()
