"""Hand-keypoint extraction speed: `hybridpose.pose.frontend.extract(skeleton="hand")` against a bare MediaPipe Hands loop.

    .venv/bin/python benchmarks/bench_hands.py [--data DIR] [--limit N] [--repeat R] [--json PATH]
    .venv/bin/python benchmarks/bench_hands.py --smoke     # 8 photos of tests/data/hands, 1 repeat: does it run?

Measured (images per second, wall clock), each in its own fresh Python process (mediapipe imported first):
  bare loop    PIL open + convert("RGB") + np.asarray + Hands(static_image_mode=True, max_num_hands=2,
               model_complexity=1).process, one model, warmed up before timing (creation and first call
               reported apart as "startup").
  extract w=1  extract(paths, workers=1, skeleton="hand") into a fresh empty cache: hashing, decode, the
               hand model, choosing the larger hand, the box, SQLite writes, the table; INCLUDES creating
               the model (a second figure subtracts the bare loop's startup).
Goal: extract w=1 / bare >= 0.9. --data defaults to ../shared/data/hands14.
--smoke: 8 photos of tests/data/hands, once (seconds; numbers meaningless), plus sanity checks (a row per
photo, hands found by both in the same photos); exit 1 if one fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

HANDS_DATA = _common.REPO.parent / "shared" / "data" / "hands14"
HANDS_SAMPLE = _common.REPO / "tests" / "data" / "hands"


def bare_loop(paths: list[str]) -> dict:
    import mediapipe
    import numpy as np
    from PIL import Image

    def load(p: str) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))

    t0 = time.perf_counter()
    hands = mediapipe.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1)
    t_create = time.perf_counter() - t0
    t0 = time.perf_counter()
    hands.process(load(paths[0]))
    t_first = time.perf_counter() - t0
    found = []
    c0, t0 = _common.cpu_seconds(), time.perf_counter()
    for p in paths:
        found.append(bool(hands.process(load(p)).multi_hand_landmarks))
    wall = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - c0
    hands.close()
    return {"seconds": wall, "images_per_s": len(paths) / wall, "cpu_cores_busy": cpu / wall,
            "model_create_s": t_create, "first_call_s": t_first,
            "startup_s": max(0.0, t_create + t_first - wall / len(paths)), "found": found}


def run_extract(paths: list[str], cache_dir: Path) -> dict:
    from hybridpose.pose.frontend import extract, summarize

    c0, t0 = _common.cpu_seconds(), time.perf_counter()
    table = extract(paths, cache_dir=cache_dir, workers=1, show_progress=False, skeleton="hand")
    wall = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - c0
    return {"seconds": wall, "images_per_s": len(paths) / wall, "cpu_cores_busy": cpu / wall,
            "status": summarize(table), "found": [s == "ok" for s in table["status"]]}


def in_child(mode: str, paths_file: Path, cache: Path | None = None) -> dict:
    return _common.in_child(__file__, mode, paths_file, cache)


def best(runs: list[dict]) -> dict:
    out = dict(min(runs, key=lambda r: r["seconds"]))
    out["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help=f"image folder (default {HANDS_DATA})")
    ap.add_argument("--limit", type=int, help="use N photos, spread evenly over the (class-sorted) list")
    ap.add_argument("--repeat", type=int, default=3, help="repeat each measurement R times, keep the fastest")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "--limit 8 --repeat 1")
    ap.add_argument("--child", choices=["bare", "extract"], help=argparse.SUPPRESS)
    ap.add_argument("--paths-file", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    tmp = _common.setup_env()
    if args.child:
        import mediapipe  # noqa: F401  imported before timing in both modes

        paths = Path(args.paths_file).read_text(encoding="utf-8").splitlines()
        print(json.dumps(bare_loop(paths) if args.child == "bare" else run_extract(paths, Path(args.cache))))
        return {}

    _common.apply_smoke(args, limit=min(args.limit or 8, 8), repeat=1)
    data = Path(args.data) if args.data else (HANDS_SAMPLE if args.smoke or not HANDS_DATA.exists() else HANDS_DATA)
    paths, paths_file, busy_start = _common.photo_list(data, args.limit, args.repeat, Path(tmp.name))
    bare_runs, w1_runs = [], []
    for r in range(args.repeat):  # interleaved, so a change in the machine's load hits both alike
        bare_runs.append(in_child("bare", paths_file))
        w1_runs.append(in_child("extract", paths_file, Path(tempfile.mkdtemp(prefix=f"w1-{r}-", dir=tmp.name))))
    bare, w1 = best(bare_runs), best(w1_runs)
    n = len(paths)
    w1_excl = n / max(1e-9, w1["seconds"] - bare["startup_s"])
    ratio = w1["images_per_s"] / bare["images_per_s"]
    _common.print_table("Hand-keypoint extraction (wall clock)", ["run", "seconds", "images/s", "cores busy", "includes"], [
        ["bare MediaPipe Hands loop", bare["seconds"], bare["images_per_s"], bare["cpu_cores_busy"],
         "decode (full size) + process; model warm"],
        ["extract skeleton=hand w=1", w1["seconds"], w1["images_per_s"], w1["cpu_cores_busy"],
         "hash+decode+hands+box+sqlite+table, model creation"],
        ["  same, minus startup", n / w1_excl, w1_excl, None, f"bare startup ({bare['startup_s']:.2f} s) subtracted"],
    ])
    _common.print_table("Ratios", ["ratio", "value", "goal", ""], [
        _common.goal_line("extract w=1 / bare loop", ratio, 0.9),
        ["  (w=1 minus startup) / bare", round(w1_excl / bare["images_per_s"], 3), "(info)", ""],
    ])
    agree = sum(a == b for a, b in zip(bare["found"], w1["found"]))
    print(f"statuses: {w1['status']}; hands found in the same photos by both: {agree}/{n}")
    if args.smoke:
        _common.smoke_check(sum(w1["status"].values()) == n, f"extract gave {w1['status']} for {n} photos")
        _common.smoke_check(agree == n, f"bare loop and extract disagree on which photos hold a hand ({agree}/{n})")
    print(_common.busy_warning("at end"))
    payload = {"benchmark": "hands", "smoke": args.smoke, "cpu_busy_share_at_start": busy_start, "data": str(data),
               "n_photos": n, "repeat": args.repeat, "machine": _common.machine_info(),
               "bare_loop": {k: v for k, v in bare.items() if k != "found"},
               "extract_workers1": {k: v for k, v in w1.items() if k != "found"},
               "extract_workers1_excl_startup_images_per_s": w1_excl,
               "ratios": {"w1_over_bare": ratio}, "goals": {"w1_over_bare": 0.9}}
    return _common.finish(args, payload)


if __name__ == "__main__":
    main()
