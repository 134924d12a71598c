"""A full bundle against its int8 version (`hybridpose export --int8`), photo by photo on a labelled folder.

    .venv/bin/python benchmarks/bench_int8.py --model RUN [--data DIR] [--n N] [--repeat 3] [--cli] [--json PATH]
    .venv/bin/python benchmarks/bench_int8.py --full BUNDLE --int8 BUNDLE8 ...
    .venv/bin/python benchmarks/bench_int8.py --smoke

With ``--model`` both bundles are exported on the spot (timed for information only). MediaPipe runs once per
photo (one process, the poses and crops then shared), so the two bundles see exactly the same crops:

* accuracy: top-1 of the whole hybrid (fusion and rules, predictions.csv's ``class``) and of the image branch
  alone, for each bundle; the discordant pairs b (full right, int8 wrong) and c (full wrong, int8 right) and
  McNemar's exact two-sided p-value; how many labels differ; the largest probability difference;
* speed of the networks: the image graph's forward over all crops (batches of 32), wall and CPU seconds,
  the two bundles interleaved over ``--repeat`` rounds (median reported);
* ``--cli``: whole processes, `hybridpose predict DATA --model B` for each bundle and the MediaPipe + k-NN
  yardstick (bench_yardstick.py), each with a cold pose cache, rounds interleaved, wall and CPU (user + system
  of the child) medians, and each as a ratio to the yardstick.

--smoke: a tiny run fitted on the spot on data/sample (3 photos per class), 8 photos; numbers meaningless.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

REPO = _common.REPO


def labelled(data: Path, n: int | None) -> tuple[list[str], list[str]]:
    from hybridpose.data.datasets import list_images

    paths = [str(p) for p in _common.spread(list_images(data), n)]
    return paths, [Path(p).relative_to(data).parts[0] for p in paths]


def exports(run: Path, tmp: Path) -> tuple[Path, Path, dict]:
    from hybridpose.export import export

    times = {}
    for name, int8 in (("full", False), ("int8", True)):
        t0 = time.perf_counter()
        export(run, tmp / name, int8=int8)
        times[name] = round(time.perf_counter() - t0, 1)
    print(f"exported both bundles of {run} (s, not measured): {times}\n")
    return tmp / "full", tmp / "int8", times


def accuracy(full: Path, int8: Path, paths: list[str], truth: list[str], cache: Path) -> dict:
    import numpy as np

    from hybridpose.export import max_difference, mcnemar
    from hybridpose.inference.classifier import HybridPoseClassifier

    a = HybridPoseClassifier.load(full)
    b = HybridPoseClassifier.load(int8)
    a.cache_dir = b.cache_dir = str(cache)
    t0 = time.perf_counter()
    poses, crops = a.poses_and_crops(paths)  # MediaPipe once; both bundles get these crops
    print(f"poses and crops of {len(paths)} photos: {time.perf_counter() - t0:.0f} s (once, not compared)\n")
    out, batches = {}, {}
    for name, clf in (("full", a), ("int8", b)):
        batches[name] = batch = clf.batch_from(poses, crops)
        leaves = clf.hierarchy.leaves
        image = [leaves[i] for i in batch.image[clf.hierarchy.leaf_level].argmax(1)]
        out[name] = {"hybrid": np.array(batch.leaf) == np.array(truth), "image": np.array(image) == np.array(truth),
                     "labels": list(batch.leaf)}
    rows, result = [], {"photos": len(paths), "with_person": int((poses["status"] == "ok").sum())}
    for what in ("hybrid", "image"):
        ra, rb = out["full"][what], out["int8"][what]
        disc_b, disc_c = int((ra & ~rb).sum()), int((~ra & rb).sum())
        p = mcnemar(disc_b, disc_c)
        result[what] = {"top1_full": float(ra.mean()), "top1_int8": float(rb.mean()),
                        "change_points": round(100 * float(rb.mean() - ra.mean()), 2), "b": disc_b, "c": disc_c,
                        "mcnemar_p": p}
        rows.append([what, 100 * ra.mean(), 100 * rb.mean(), 100 * (rb.mean() - ra.mean()), disc_b, disc_c, p])
    result["labels_differ"] = int(sum(x != y for x, y in zip(out["full"]["labels"], out["int8"]["labels"])))
    result["max_image_prob_difference"] = max_difference(batches["full"].image, batches["int8"].image)
    result["max_fused_prob_difference"] = max_difference(batches["full"].fused, batches["int8"].fused)
    _common.print_table("top-1 (%), paired photo by photo (b: full right, int8 wrong; c: the other way)",
                        ["prediction", "full", "int8", "change", "b", "c", "McNemar p"], rows)
    print(f"final labels that differ: {result['labels_differ']} of {len(paths)}; largest image-branch probability "
          f"difference per level: {result['max_image_prob_difference']}\n")
    result["crops"] = crops
    return result


def forward_speed(full: Path, int8: Path, crops, repeat: int, threads: int) -> dict:
    from hybridpose.engines.ort import open_session

    sessions = {name: open_session(b / "image_model.onnx", threads) for name, b in (("full", full), ("int8", int8))}
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in sessions}
    for r in range(repeat):
        for name in (("full", "int8") if r % 2 == 0 else ("int8", "full")):
            s = sessions[name]
            s.run(None, {"crops": crops[:2]})  # warm
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(crops), 32):
                s.run(None, {"crops": crops[i:i + 32]})
            times[name]["wall"].append(time.perf_counter() - w0)
            times[name]["cpu"].append(time.process_time() - c0)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    rows = [[n, med[n]["wall"], med[n]["cpu"], 1000 * med[n]["wall"] / len(crops)] for n in med]
    rows.append(["int8 / full", med["int8"]["wall"] / med["full"]["wall"], med["int8"]["cpu"] / med["full"]["cpu"], None])
    _common.print_table(f"image graph forward, {len(crops)} crops, {threads or 'all'} threads (median of {repeat})",
                        ["graph", "wall s", "cpu s", "ms/photo"], rows)
    return {"median": med, "runs": times, "threads": threads}


def cli(full: Path, int8: Path, data: Path, repeat: int, tmp: Path) -> dict:
    commands = {
        "yardstick": [sys.executable, str(REPO / "benchmarks" / "bench_yardstick.py"), str(data)],
        "full": [sys.executable, "-m", "hybridpose_cli.main", "predict", str(data), "--model", str(full)],
        "int8": [sys.executable, "-m", "hybridpose_cli.main", "predict", str(data), "--model", str(int8)],
    }
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in commands}
    for r in range(repeat):
        order = list(commands) if r % 2 == 0 else list(commands)[::-1]
        for name in order:
            argv = list(commands[name])
            if name != "yardstick":
                argv += ["--out", str(tmp / f"{name}{r}.csv"), "--cache", tempfile.mkdtemp(dir=tmp)]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    y = med["yardstick"]
    rows = [[n, m["wall"], m["cpu"], m["wall"] / y["wall"], m["cpu"] / y["cpu"]] for n, m in med.items()]
    _common.print_table(f"whole processes on {data} (median of {repeat}, cold pose caches)",
                        ["process", "wall s", "cpu s", "wall / yardstick", "cpu / yardstick"], rows)
    return {"median": med, "runs": times}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a run folder: both bundles exported from it on the spot")
    ap.add_argument("--full", help="a float bundle (`hybridpose export RUN`)")
    ap.add_argument("--int8", help="its int8 version (`hybridpose export RUN --int8`)")
    ap.add_argument("--data", help=f"labelled class-folder tree (default {_common.DEFAULT_DATA})")
    ap.add_argument("--n", type=int, default=None, help="photos, spread over the classes (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads for the forward timing (0: all)")
    ap.add_argument("--cli", action="store_true", help="also time whole predict processes against the yardstick")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "a tiny run on 3 photos per class of data/sample, 8 photos")
    args = ap.parse_args(argv)
    _common.apply_smoke(args, n=8, repeat=1)
    keep = _common.setup_env()
    tmp = Path(keep.name)
    data = _common.resolve_data(args.data, args.smoke)
    times = None
    if args.full and args.int8:
        full, int8 = Path(args.full), Path(args.int8)
    else:
        run = Path(args.model) if args.model else None
        if run is None and not args.smoke:
            sys.exit("give --model RUN, or --full BUNDLE --int8 BUNDLE8 (or --smoke)")
        if run is None:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from bench_predict import fit_smoke_run

            run = fit_smoke_run(tmp, data)
        full, int8, times = exports(run, tmp)
    paths, truth = labelled(data, args.n)
    print(_common.busy_warning("at start") + "\n")
    acc = accuracy(full, int8, paths, truth, tmp / "cache")
    crops = acc.pop("crops")
    speed = forward_speed(full, int8, crops, args.repeat, args.threads)
    payload = {"machine": _common.machine_info(), "data": str(data), "full": str(full), "int8": str(int8),
               "export_s": times, "accuracy": acc, "forward": speed}
    if args.cli:
        payload["cli"] = cli(full, int8, data if args.n is None else _subset(data, paths, tmp), args.repeat, tmp)
    print(_common.busy_warning("at end") + "\n")
    if args.smoke:
        _common.smoke_check(acc["photos"] == len(paths) and 0 <= acc["hybrid"]["mcnemar_p"] <= 1, "accuracy table")
        _common.smoke_check(all(v["wall"] > 0 for v in speed["median"].values()), "forward timing")
    return _common.finish(args, payload)


def _subset(data: Path, paths: list[str], tmp: Path) -> Path:
    """The ``--n`` photos as a class-folder tree of links, for the whole-process runs."""
    out = tmp / "subset"
    for p in paths:
        dest = out / Path(p).relative_to(data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.symlink(Path(p).resolve(), dest)
    return out


if __name__ == "__main__":
    main()
