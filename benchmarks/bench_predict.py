"""Prediction speed (end to end against the sum of its bare parts) and memory use over many photos.

    .venv/bin/python benchmarks/bench_predict.py --model RUN [--data DIR] [--n N] [--repeat R]
                                                 [--batch-size 32] [--json PATH]
    .venv/bin/python benchmarks/bench_predict.py --model RUN --memory [M] [--copies link|distinct]
    .venv/bin/python benchmarks/bench_predict.py --model RUN [--data DIR] --cli [--bundle DIR] [--repeat R]
    .venv/bin/python benchmarks/bench_predict.py --smoke [--model RUN]   # both modes, tiny: does it run?
    .venv/bin/python benchmarks/bench_predict.py --smoke --cli           # the --cli mode, tiny

--cli (whole processes, every photo of --data, cold pose cache, median of R alternating rounds):
`hybridpose predict` with --engine torch (the run), onnxruntime (a bundle exported on the spot unless
--bundle) and the default engine on the run (its ONNX graph, built before the clocks start: that first
use is timed once, apart), --workers 0/1/2, against the yardstick (bench_yardstick.py: MediaPipe + k-NN,
one process) and the bare parts (decode + MediaPipe in W forked processes; ONNX Runtime forward on
pre-made crops) alone and run concurrently. Goals: predict wall <= 1.2 x yardstick wall, and `predict
--model RUN` (the default engine) <= 1.1 x; bare concurrent wall / predict wall >= 0.85; identical
labels across predict configurations.

Speed mode (default), all in one process on the same N photos (default 128, spread over the class
folders), chunk by chunk (32 photos, one predict batch): end to end, then the parts on the same
chunk, so that other jobs on the machine slow both alike; all of it --repeat times (default 3, a
fresh pose cache each time), keeping per chunk the fastest time of each quantity. Loading the run
and warm-ups (a predict on one other photo; model creation and first calls of every part) happen
before any clock starts.
  end to end   `HybridPoseClassifier.predict(chunk)` with a fresh, empty pose cache so the
               pose model runs on every photo.
  parts        (a) decode + MediaPipe pose: PIL open + convert("RGB") + np.asarray +
                   Pose(static_image_mode=True, model_complexity=1).process, model warmed up;
               (b) the image branch's K fold networks (`clf.image_branch.models_`), each through
                   `network.level_probs` (forward + softmax per level, inference mode, AMP on CUDA
                   as predict does) on pre-made crops already normalised by the branch, batches of 32;
               (c) the keypoint branch's predict_proba (`clf.branches["keypoint"]`) on pre-computed
                   keypoints, batches of 32.
  ratio        (a + b + c) / end to end = end-to-end speed relative to the bare parts (goal >= 0.8),
               over all photos, and its median over chunks.
  For information: time the parts leave out (file hashing, crop cutting, fusion, rules, tables,
  cache writes) shows as "not in the parts".

Memory mode (--memory, default M=2000): a temporary folder of M photos made from the data set's
photos cycled (hard links, or symlinks where hard links fail), predicted with
`hybridpose.predict` (streams CSV rows batch by batch), sampling this process's peak RSS
(ru_maxrss) and current RSS after every batch, reported after 200, 1000 and M photos.
With --copies link the copies share content, and the pose cache keys on the content hash, so after
the first pass over the distinct photos pose results come from the cache (decode, crops, the K CNNs
and the keypoint model still run for every photo). --copies distinct writes real copies, each with a
few unique bytes after the image data, so every photo also runs the pose model (slower).

--smoke: without --model, first fits a run on the spot (`hybridpose.fit`, preset "tiny", 2 folds, on
3 photos per class of the data, into a temporary folder; not timed). Then speed mode on 8 photos
(batches of 4, 1 repeat) and memory mode on 24 photos, with the same tables (seconds; numbers
meaningless), plus sanity checks (a row and a status for every photo); exit 1 if one fails.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------------------- speed
class BarePose:
    """The bare decode + MediaPipe loop, one warm model kept for all chunks."""

    def __init__(self, warm_path: str):
        import mediapipe

        self.pose = mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
        self.pose.process(self.load(warm_path))  # warm-up

    @staticmethod
    def load(p: str):
        import numpy as np
        from PIL import Image

        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")  # Pillow's notes on palette transparency: the bare loop ignores it
            return np.asarray(im.convert("RGB"))

    def time(self, paths: list[str]) -> float:
        t0 = time.perf_counter()
        for p in paths:
            self.pose.process(self.load(p))
        return time.perf_counter() - t0

    def close(self) -> None:
        self.pose.close()


def bare_cnn(branch, crops) -> float:
    """The K fold networks on one batch, normalised (and moved to the device) before the clock starts."""
    import torch

    from hybridpose.nets.network import level_probs

    x = branch.normalise(crops)
    with torch.inference_mode():
        sync(branch.device)
        t0 = time.perf_counter()
        for model in branch.models_:
            level_probs(model, x)
        sync(branch.device)
    return time.perf_counter() - t0


def bare_keypoint(branch, kp) -> float:
    t0 = time.perf_counter()
    branch.predict_proba(kp)
    return time.perf_counter() - t0


def speed(args, tmp: Path, data: Path) -> dict:
    import numpy as np
    import torch

    from hybridpose.data.datasets import list_images
    from hybridpose.inference.classifier import HybridPoseClassifier
    from hybridpose.pose.frontend import keypoints_array

    everything = [str(p) for p in list_images(data)]
    paths = _common.spread(everything, args.n)
    if not paths:
        sys.exit(f"{data}: no images")
    chosen = set(paths)
    others = [p for p in everything if p not in chosen]
    warm = others[0] if others else paths[0]
    bs = args.batch_size

    t0 = time.perf_counter()
    clf = HybridPoseClassifier.load(args.model, engine="torch")  # the parts below time the checkpoints' networks
    t_load = time.perf_counter() - t0
    image, keypoint = clf.image_branch, clf.branches["keypoint"]
    k, device = len(image.models_), image.device
    print(f"{len(paths)} photos from {data}; model {args.model}: {k} fold models, input "
          f"{image.preprocessing_.input_size} px, device {device}; {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}\n")

    # warm-up, not timed: model creation and first calls of every path measured below
    clf.cache_dir = Path(tempfile.mkdtemp(prefix="warm-", dir=tmp))
    t0 = time.perf_counter()
    clf.predict([warm], batch_size=bs)
    t_warm = time.perf_counter() - t0
    wposes, wcrops = clf.poses_and_crops([warm] * min(bs, len(paths)))
    bare_cnn(image, wcrops)
    bare_keypoint(keypoint, keypoints_array(wposes, clf.skeleton))
    bare_pose = BarePose(warm)

    # Chunk by chunk (one predict batch each): end to end first, then the bare parts on the same photos,
    # so that other jobs on the machine slow both alike. Each repeat starts from a fresh pose cache; per
    # chunk and quantity the fastest repeat is kept (a disturbance only ever makes a run slower).
    chunks = [paths[i : i + bs] for i in range(0, len(paths), bs)]
    rows: list[dict] = [{"photos": len(c)} for c in chunks]
    statuses: dict[str, int] = {}
    for r in range(args.repeat):
        # a fresh cache: the pose model runs on every photo
        clf.cache_dir = Path(tempfile.mkdtemp(prefix=f"e2e-{r}-", dir=tmp))
        for row, chunk in zip(rows, chunks):
            t0 = time.perf_counter()
            table = clf.predict(chunk, batch_size=bs)
            sync(device)
            e2e = time.perf_counter() - t0
            poses, crops = clf.poses_and_crops(chunk)  # from the cache predict just filled: the parts' inputs
            if r == 0:
                for st, c in poses["status"].value_counts().items():
                    statuses[str(st)] = statuses.get(str(st), 0) + int(c)
                row["ok"] = int((table["status"] == "ok").sum())
                if args.smoke:
                    _common.smoke_check(list(table["path"]) == chunk and table["status"].notna().all(),
                                        "predict did not return one row with a status per photo, in order")
            measured = {"e2e": e2e, "a": bare_pose.time(chunk), "b": bare_cnn(image, crops),
                        "c": bare_keypoint(keypoint, keypoints_array(poses, clf.skeleton))}
            for key, v in measured.items():
                row[key] = min(row.get(key, v), v)
                row.setdefault(f"{key}_all", []).append(round(v, 4))
    bare_pose.close()

    n = len(paths)
    tot = {key: sum(r[key] for r in rows) for key in ("e2e", "a", "b", "c")}
    parts = tot["a"] + tot["b"] + tot["c"]
    ratio = parts / tot["e2e"]
    paired = float(np.median([(r["a"] + r["b"] + r["c"]) / r["e2e"] for r in rows]))
    ms = lambda t: 1000 * t / n  # noqa: E731

    _common.print_table(f"Prediction, ms per photo ({len(rows)} chunks of up to {bs}, end to end and parts "
                        f"alternating, fastest of {args.repeat} repeats per chunk)", ["step", "ms/photo", "images/s"], [
        ["(a) decode + MediaPipe pose (bare)", ms(tot["a"]), n / tot["a"]],
        [f"(b) {k} fold CNN forwards, batch {bs} (bare)", ms(tot["b"]), n / tot["b"]],
        ["(c) keypoint model predict_proba (bare)", ms(tot["c"]), n / tot["c"]],
        ["sum of parts (a+b+c)", ms(parts), n / parts],
        ["end to end: HybridPoseClassifier.predict", ms(tot["e2e"]), n / tot["e2e"]],
        ["  not in the parts (e2e - sum)", ms(tot["e2e"] - parts), None],
    ])
    _common.print_table("Goal", ["ratio", "value", "goal", "", "median over chunks"],
                        [[*_common.goal_line("sum of parts / end to end", ratio, 0.8), round(paired, 3)]])
    print(f"not timed: loading the run {t_load:.1f} s, warm-up predict of 1 photo {t_warm:.1f} s; "
          f"statuses {statuses}; {sum(r['ok'] for r in rows)}/{n} predicted with a person")
    return {"benchmark": "predict", "mode": "speed", "model": str(args.model), "data": str(data), "n_photos": n,
            "k_models": k, "batch_size": bs, "repeat": args.repeat, "device": str(device),
            "machine": _common.machine_info(),
            "load_seconds": t_load, "warmup_seconds": t_warm,
            "ms_per_photo": {"a_decode_pose": ms(tot["a"]), "b_cnn": ms(tot["b"]), "c_keypoint": ms(tot["c"]),
                             "sum_parts": ms(parts), "end_to_end": ms(tot["e2e"]),
                             "not_in_parts": ms(tot["e2e"] - parts)},
            "ratio_parts_over_e2e": ratio, "ratio_median_over_chunks": paired, "chunks": rows,
            "goals": {"ratio_parts_over_e2e": 0.8}}


# ---------------------------------------------------------------------------- memory
def make_copies(sources: list[Path], m: int, folder: Path, mode: str) -> str:
    folder.mkdir(parents=True)
    how = set()
    for i in range(m):
        src = sources[i % len(sources)]
        dst = folder / f"{i:06d}{src.suffix.lower()}"
        if mode == "distinct":
            shutil.copyfile(src, dst)
            with open(dst, "ab") as fh:  # decoders stop at the end of the image; the hash changes
                fh.write(b"\0hybridpose-bench-copy-%d" % i)
            how.add("copy")
            continue
        try:
            os.link(src, dst)
            how.add("hard link")
        except OSError:
            os.symlink(os.path.abspath(src), dst)
            how.add("symlink")
    return "+".join(sorted(how))


def memory(args, tmp: Path, data: Path) -> dict:
    import numpy as np

    from hybridpose.data.datasets import list_images
    from hybridpose.inference.classifier import HybridPoseClassifier
    from hybridpose.inference.photos import predict_photos

    m = args.memory
    sources = list_images(data)
    if not sources:
        sys.exit(f"{data}: no images")
    folder = tmp / "photos"
    how = make_copies(sources, m, folder, args.copies)
    distinct = min(m, len(sources)) if args.copies == "link" else m
    checkpoints = sorted({c for c in (200, 1000, m) if c <= m})

    samples: list[dict] = []
    original = HybridPoseClassifier.iter_predict
    t_start = time.perf_counter()

    def sampled(self, paths, *a, **kw):
        done = 0
        for frame in original(self, paths, *a, **kw):
            done += len(frame)
            samples.append({"photos": done, "peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb(),
                            "seconds": time.perf_counter() - t_start})
            yield frame

    HybridPoseClassifier.iter_predict = sampled  # sampling hook; this process only
    rss_before = {"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb()}
    try:
        result = predict_photos(folder, args.model, tmp / "predictions.csv", batch_size=args.batch_size,
                              show_progress=False, cache_dir=tmp / "pose-cache", workers=args.workers,
                              engine=args.engine)
    finally:
        HybridPoseClassifier.iter_predict = original
    wall = time.perf_counter() - t_start
    if args.smoke:
        _common.smoke_check(result["images"] == m and sum(result["status"].values()) == m,
                            f"predict gave {result['status']} for {m} photos")
        _common.smoke_check(bool(samples) and samples[-1]["photos"] == m, "the sampling hook did not see every batch")

    rows, at = [], {}
    for c in checkpoints:
        s = next(x for x in samples if x["photos"] >= c)
        at[c] = s
        rows.append([f"after {s['photos']} photos", s["peak_rss_mb"], s["rss_mb"], s["seconds"]])
    first = samples[0]
    _common.print_table(f"Memory of predict over {m} photos ({how}; {distinct} distinct contents)",
                        ["when", "peak RSS MB", "RSS MB", "seconds"],
                        [["before predict (imports only)", rss_before["peak_rss_mb"], rss_before["rss_mb"], 0.0],
                         [f"after the first batch ({first['photos']} photos)", first["peak_rss_mb"], first["rss_mb"],
                          first["seconds"]], *rows])
    lo, hi = at[checkpoints[0]], at[checkpoints[-1]]
    if lo is hi:  # one checkpoint only (M <= 200): measure from the first batch
        lo = first
    growth = hi["peak_rss_mb"] - lo["peak_rss_mb"]
    span = hi["photos"] - lo["photos"]
    per_1000 = f" ({growth / span * 1000:+.1f} MB per 1000 photos)" if span >= 500 else ""
    print(f"peak RSS growth from {lo['photos']} to {hi['photos']} photos: {growth:+.0f} MB{per_1000}; "
          f"{m / wall:.1f} photos/s overall; statuses {result['status']}")
    half = len(samples) // 2
    rss_first = float(np.median([x["rss_mb"] for x in samples[:max(1, half)]]))
    rss_second = float(np.median([x["rss_mb"] for x in samples[half:]]))
    print(f"current RSS, median over the batches of the first / second half of the run: {rss_first:.0f} / "
          f"{rss_second:.0f} MB")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"--workers {args.workers}: largest peak RSS of a finished worker process {children:.0f} MB")
    if args.copies == "link":
        print(f"note: the copies are links to {len(sources)} photos; identical content is served from the pose cache "
              "after its first occurrence, so photos past the first pass skip the pose model (use --copies distinct "
              "to run it on every photo).")
    return {"benchmark": "predict", "mode": "memory", "model": str(args.model), "data": str(data), "photos": m,
            "copies": how, "distinct_contents": distinct, "batch_size": args.batch_size,
            "machine": _common.machine_info(), "before": rss_before, "samples": samples,
            "at": {str(c): at[c] for c in checkpoints}, "peak_growth_mb": growth, "seconds": wall,
            "rss_median_first_half_mb": rss_first, "rss_median_second_half_mb": rss_second,
            "workers": args.workers, "worker_peak_rss_mb": children,
            "status": result["status"]}


# ---------------------------------------------------------------------------- whole processes (--cli)
# "default": the run with no --engine (its ONNX graph where onnxruntime is installed); onnxruntime: the bundle
PREDICT_CONFIGS = [("torch", 0), ("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2), ("default", 2)]
SMOKE_CONFIGS = [("torch", 0), ("onnxruntime", 1), ("default", 1)]


def parse_configs(text: str) -> list[tuple[str, int]]:
    """``default:2,onnxruntime:2`` -> [("default", 2), ("onnxruntime", 2)] (engine: torch, onnxruntime or
    default, the engine `predict --model RUN` picks; then --workers)."""
    out = []
    for part in text.split(","):
        engine, _, workers = part.strip().partition(":")
        if engine not in ("torch", "onnxruntime", "default") or not workers.isdigit():
            raise SystemExit(f"--configs {text!r}: each item is ENGINE:WORKERS, ENGINE torch, onnxruntime or default")
        out.append((engine, int(workers)))
    return out


def run_process(argv: list[str], what: str) -> float:
    """Wall seconds of one whole process (start-up, imports and model loading included)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=_common.REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def labels_of(csv: Path, column: str) -> list[str]:
    import pandas as pd

    frame = pd.read_csv(csv, keep_default_na=False)
    return [f"{p}:{c}" for p, c in zip(frame["path"], frame[column])]


def cli(args, tmp: Path, data: Path) -> dict:
    """`hybridpose predict` as a user runs it (whole process, cold pose cache) against the yardstick and the bare
    parts run concurrently, all on the same photos, alternating, median of --repeat rounds."""
    import numpy as np

    from hybridpose.data.datasets import list_images
    from hybridpose.export import export
    from hybridpose.inference.classifier import HybridPoseClassifier

    photos = tmp / "cli-photos"
    if args.smoke:
        _common.subset_folder(data, 1, photos)
    else:
        photos = data
    paths = [str(p) for p in list_images(photos)]
    bundle = Path(args.bundle) if args.bundle else tmp / "bundle"
    if not args.bundle:
        export(args.model, bundle)
    clf = HybridPoseClassifier.load(bundle)  # the crops the bare forward loop reads (made here, not timed)
    clf.cache_dir = tmp / "crops-cache"
    crops = np.concatenate([np.asarray(clf.poses_and_crops(paths[i : i + 64])[1]) for i in range(0, len(paths), 64)])
    np.save(tmp / "crops.npy", crops)
    del clf
    t0 = time.perf_counter()
    HybridPoseClassifier.load(args.model)  # the default engine's first use: builds the run's graph if not there
    print(f"first use of the run's default engine (its ONNX graph built where missing): {time.perf_counter() - t0:.1f} s")
    py, cli_main = sys.executable, [sys.executable, "-m", "hybridpose_cli.main"]
    configs = SMOKE_CONFIGS if args.smoke else (parse_configs(args.configs) if args.configs else PREDICT_CONFIGS)
    workers = sorted({w for _, w in configs if w} | {1, 2}) if not args.smoke else [1]
    jobs: dict[str, list[str]] = {"yardstick": [py, str(_common.REPO / "benchmarks" / "bench_yardstick.py"), str(photos)]}
    for kind in ("pose", "ort", "both"):
        for w in workers if kind != "ort" else [0]:
            jobs[f"bare {kind} {w}"] = [py, __file__, "--bare", kind, "--bare-workers", str(w), "--data", str(photos),
                                        "--bundle", str(bundle), "--bare-crops", str(tmp / "crops.npy")]
    for engine, w in configs:
        model = bundle if engine == "onnxruntime" else Path(args.model)
        choice = [] if engine == "default" else ["--engine", engine]
        jobs[f"predict {engine} {w}"] = [*cli_main, "predict", str(photos), "--model", str(model), *choice,
                                         "--workers", str(w), "--batch-size", str(args.batch_size),
                                         "--out", str(tmp / f"pred-{engine}-{w}.csv"), "--cache", "CACHE"]
    walls: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(args.repeat):
        order = list(jobs) if r % 2 == 0 else list(reversed(jobs))  # alternate: drifts in the load hit all alike
        for name in order:
            argv = [str(tmp / f"cache-{r}-{name.replace(' ', '-')}") if a == "CACHE" else a for a in jobs[name]]
            walls[name].append(run_process(argv, name))
            print(f"  round {r + 1}: {name:24s} {walls[name][-1]:7.2f} s", flush=True)
    med = {k: float(np.median(v)) for k, v in walls.items()}
    n = len(paths)
    yard = med["yardstick"]
    rows = [["yardstick: MediaPipe + k-NN, one process", med["yardstick"], n / yard, 1.0, None]]
    for w in workers:
        rows.append([f"bare: decode + MediaPipe alone, {w} process(es)", med[f"bare pose {w}"], n / med[f"bare pose {w}"], None, None])
    rows.append(["bare: ONNX Runtime forward alone (all cores)", med["bare ort 0"], n / med["bare ort 0"], None, None])
    for w in workers:
        rows.append([f"bare: both concurrently, {w} pose process(es)", med[f"bare both {w}"], n / med[f"bare both {w}"], None, None])
    goals = {}
    for engine, w in configs:
        wall = med[f"predict {engine} {w}"]
        both = med.get(f"bare both {max(w, 1)}")
        what = "--model RUN (default engine)" if engine == "default" else f"--engine {engine}"
        rows.append([f"predict {what} --workers {w}", wall, n / wall, wall / yard, both / wall if both else None])
        goals[f"{engine} {w}"] = {"wall_over_yardstick": wall / yard, "e2e_over_bare_concurrent": both / wall if both else None}
    _common.print_table(f"Whole processes on {n} photos of {photos} (cold pose cache; median of {args.repeat} "
                        "alternating rounds)", ["process", "wall s", "photos/s", "x yardstick", "bare both / this"], rows)
    reference = labels_of(tmp / f"pred-{configs[0][0]}-{configs[0][1]}.csv", "class")
    same = {f"{e} {w}": labels_of(tmp / f"pred-{e}-{w}.csv", "class") == reference for e, w in configs}
    best = min(goals, key=lambda k: goals[k]["wall_over_yardstick"])
    default = min((k for k in goals if k.startswith("default")), key=lambda k: goals[k]["wall_over_yardstick"])
    _common.print_table("Goals (the fastest predict configuration)", ["ratio", "value", "goal", ""], [
        [f"predict {best}: wall / yardstick wall", round(goals[best]["wall_over_yardstick"], 3), "<= 1.2",
         "met" if goals[best]["wall_over_yardstick"] <= 1.2 else "NOT met"],
        [f"predict --model RUN ({default}): wall / yardstick wall", round(goals[default]["wall_over_yardstick"], 3),
         "<= 1.1", "met" if goals[default]["wall_over_yardstick"] <= 1.1 else "NOT met"],
        _common.goal_line(f"predict {best}: bare concurrent wall / its wall",
                          goals[best]["e2e_over_bare_concurrent"] or float("nan"), 0.85)])
    print(f"labels identical to predict {configs[0][0]} --workers {configs[0][1]}: {same}")
    if args.smoke:
        _common.smoke_check(all(same.values()), f"labels differ between predict configurations: {same}")
    return {"benchmark": "predict", "mode": "cli", "model": str(args.model), "bundle": str(bundle), "data": str(photos),
            "n_photos": n, "repeat": args.repeat, "walls": walls, "median_walls": med, "goals": goals,
            "labels_identical": same, "machine": _common.machine_info()}


def bare(args) -> None:
    """One whole process of bare parts (--bare pose|ort|both): timed from outside by ``cli``."""
    import multiprocessing as mp

    import numpy as np

    from hybridpose.data.datasets import list_images
    from hybridpose.engines.ort import open_session

    paths = [str(p) for p in list_images(Path(args.data))]
    w = args.bare_workers
    pool = mp.get_context("fork").Pool(w, initializer=_bare_init) if args.bare in ("pose", "both") else None
    pending = pool.map_async(_bare_pose, paths, chunksize=4) if pool else None
    if args.bare in ("ort", "both"):
        crops = np.load(args.bare_crops)
        session = open_session(Path(args.bundle) / "image_model.onnx", max(1, (os.cpu_count() or 1) - w), spin=w == 0)
        for i in range(0, len(crops), 32):
            session.run(None, {"crops": crops[i : i + 32]})
    if pool:
        pending.get()
        pool.close()
        pool.join()


_BARE: dict = {}


def _bare_init() -> None:
    _BARE["pose"] = BarePose.__new__(BarePose)
    import mediapipe

    _BARE["pose"].pose = mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1)


def _bare_pose(path: str) -> bool:
    return _BARE["pose"].pose.process(BarePose.load(path)).pose_landmarks is not None


def fit_smoke_run(tmp: Path, data: Path) -> Path:
    """A tiny run fitted on the spot (3 photos per class, preset tiny, 2 folds), for --smoke without --model."""
    subset = _common.subset_folder(data, 3, tmp / "fit-data")
    t0 = time.perf_counter()
    # another process: this one must not run MediaPipe before predict forks its workers
    run_process([sys.executable, "-m", "hybridpose_cli.main", "fit", str(subset), "--out", str(tmp / "run"), "--folds",
                 "2", "--preset", "tiny", "--cache", str(tmp / "fit-cache")], "fitting the smoke run")
    print(f"smoke: fitted a tiny run (preset tiny, 2 folds, {sum(1 for _ in subset.glob('*/*'))} photos) in "
          f"{time.perf_counter() - t0:.0f} s (not measured)\n")
    return tmp / "run"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a run folder made by `hybridpose fit` (required, except with --smoke)")
    ap.add_argument("--data", help=f"image folder (default {_common.DEFAULT_DATA})")
    ap.add_argument("--n", type=int, default=128, help="photos for the speed test (default 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3,
                    help="speed mode: repeat R times (fresh pose cache each), keep each chunk's fastest (default 3)")
    ap.add_argument("--memory", type=int, nargs="?", const=2000, default=None, metavar="M",
                    help="memory mode: predict a folder of M photo copies (default 2000)")
    ap.add_argument("--copies", choices=["link", "distinct"], default="link",
                    help="memory mode: links to the data's photos (pose cache hits) or distinct copies")
    ap.add_argument("--cli", action="store_true",
                    help="whole-process mode: `hybridpose predict` (torch/onnxruntime, 0-2 workers) against the "
                         "MediaPipe + k-NN yardstick and the bare parts run concurrently, on every photo of --data")
    ap.add_argument("--configs", help="--cli: the predict configurations to time, ENGINE:WORKERS,... (default "
                    + ",".join(f"{e}:{w}" for e, w in PREDICT_CONFIGS) + ")")
    ap.add_argument("--bundle", help="--cli: an exported bundle of --model (default: exported on the spot, not timed)")
    ap.add_argument("--workers", type=int, default=0, help="memory mode: predict's --workers (default 0)")
    ap.add_argument("--engine", default=None, help="memory mode: predict's --engine (default: the model's)")
    ap.add_argument("--bare", choices=["pose", "ort", "both"], help=argparse.SUPPRESS)  # one process of --cli
    ap.add_argument("--bare-workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--bare-crops", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "a tiny run fitted on the spot unless --model; speed on 8 photos, memory on 24")
    args = ap.parse_args(argv)
    if args.bare:
        os.environ.setdefault("GLOG_minloglevel", "2")
        bare(args)
        return {}
    if not args.model and not args.smoke:
        ap.error("--model RUN is required (or --smoke, which fits a tiny run on the spot)")
    tmpdir = _common.setup_env()
    tmp = Path(tmpdir.name)
    _common.apply_smoke(args, n=8, repeat=1, batch_size=4)
    data = _common.resolve_data(args.data, args.smoke)
    if args.smoke and not args.model:
        args.model = fit_smoke_run(tmp, data)
    busy_start = _common.cpu_busy_share()
    print(_common.busy_warning("at start", busy_start) + "\n")
    if args.smoke and args.cli:
        payload = cli(args, tmp, data)
    elif args.smoke:  # both in-process modes: each is a code path that must keep working
        args.memory, args.workers = 24, 1  # memory first: workers are forked only before MediaPipe ran here
        payload = {"benchmark": "predict", "mode": "smoke", "memory": memory(args, tmp, data)}
        print()
        payload["speed"] = speed(args, tmp, data)
    elif args.cli:
        payload = cli(args, tmp, data)
    else:
        payload = memory(args, tmp, data) if args.memory else speed(args, tmp, data)
    print(_common.busy_warning("at end"))
    payload["cpu_busy_share_at_start"] = busy_start
    return _common.finish(args, payload)


if __name__ == "__main__":
    main()
