"""Scale-out on Ray: photos/s of `predict --executor ray` and folds/s of `fit --executor ray`, with
1 and with 2 workers, as ratios to one worker (goal: at least 1.7x on 2 workers where the work allows).

    .venv/bin/python benchmarks/bench_scale.py [--data DIR] [--model RUN] [--n 256] [--folds 4] [--preset tiny]
                                               [--workers 1,2] [--repeat 2] [--json PATH]
    .venv/bin/python benchmarks/bench_scale.py --smoke      # seconds-long check that it runs

One local Ray instance with as many CPUs as the most workers asked for (started before any clock).
Every worker is given one CPU and one PyTorch thread, whatever the number of workers, so that only
the number of workers changes between measurements:
  predict  `hybridpose.executors.ray.predict` on N photos (spread over the class folders) with W model
           actors (`--workers W`, one CPU each), a fresh, empty pose cache each time so MediaPipe runs on
           every photo. Timed: the whole call (Ray Data plan, actors starting and loading the run, every
           batch, the Parquet shards and merged CSV written by this process), best of --repeat; the actor
           start (seconds) is in every measurement; "steady" removes it: the same on the first N/4
           photos, and photos/s = (N - N/4) / (seconds for N - seconds for N/4).
           photos/s = N / seconds.
  fit      `hybridpose.train.fit.train_folds` on a copy of a prepared run with its F folds' results
           removed, on the ray executor with W folds at a time (`cpus_per_fold` chosen so that W fit in
           the Ray instance; one PyTorch thread each). Timed: all F folds. folds/min = F / minutes.
  ratio    throughput with W workers / throughput with 1.
Before any clock: `max(W)` Ray workers are started with the libraries imported (fold tasks reuse them),
one untimed predict and one untimed round of folds run, so that no measurement pays for a cold start
the others skip.
The run is --model RUN, or (without it) fitted here first, untimed: --preset (default tiny), --folds folds, on
--per-class photos of each class of --data. Its fold settings (backbone, epochs, input size) are the
work that is timed in `fit`; pass --model for a realistic fold (e.g. a quick-preset run).

--smoke: data/sample with 3 photos per class, a 32-px timm test network, 1 epoch per stage, 2 folds,
8 photos predicted, workers 1,2, one repeat; checks a row per photo and every fold finished.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="image folder (default ../shared/data/yoga8)")
    ap.add_argument("--model", default=None, help="a finished run (default: fit a tiny one here, untimed)")
    ap.add_argument("--n", type=int, default=256, help="photos predicted")
    ap.add_argument("--folds", type=int, default=4, help="folds of the run fitted here (without --model)")
    ap.add_argument("--per-class", type=int, default=12, help="photos per class of the run fitted here")
    ap.add_argument("--preset", default="tiny", help="preset of the run fitted here (its folds are the timed work)")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated (the first is the baseline)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    _common.add_smoke_arg(ap, "predict and fit on Ray with 1 and 2 workers")
    args = ap.parse_args()
    _common.apply_smoke(args, n=8, folds=2, per_class=3, workers="1,2", repeat=1)
    tmp = _common.setup_env()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    workers = [int(w) for w in args.workers.split(",")]
    data = _common.resolve_data(args.data, args.smoke)
    work = Path(tmp.name)

    import ray

    from hybridpose.data.datasets import list_images

    run = Path(args.model) if args.model else fit_run(data, work, args)
    photos = _common.spread(sorted(list_images(data)), args.n)
    ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        warm_up(max(workers), run, photos[:2], work)
        results = {"predict": measure_predict(run, photos, workers, work, args),
                   "fit": measure_fit(run, workers, work, args)}
    finally:
        ray.shutdown()
    report(results, workers, len(photos))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results,
                                               "machine": _common.machine_info()}, indent=2))
    if args.smoke:
        _common.smoke_footer()


def fit_run(data: Path, work: Path, args) -> Path:
    from hybridpose.train.config import StageConfig
    from hybridpose.train.fit import fit

    subset = _common.subset_folder(data, args.per_class, work / "subset")
    run = work / "run"
    extra = {}
    if args.smoke:
        extra = dict(backbone="test_efficientnet", input_size=32, stage1=StageConfig(1, 1e-3))
    print(f"fitting a run to time (untimed): {args.per_class} photos per class, {args.folds} folds ...", flush=True)
    fit(subset, run, folds=args.folds, preset=args.preset, show_progress=False, cache_dir=work / "fit-cache", **extra)
    return run


def _import_training(_: int) -> int:
    import hybridpose.train.fit  # noqa: F401  (torch, timm, mediapipe: seconds in a fresh worker)

    time.sleep(1)  # keep this worker busy so that the next warm-up task starts another one
    return os.getpid()


def warm_up(most: int, run: Path, photos: list, work: Path) -> None:
    """Untimed: start `most` Ray workers with the libraries imported (fold tasks reuse them), and one
    predict (files in the page cache), so no measurement pays for a cold start the others skip."""
    from hybridpose.executors import get_executor
    from hybridpose.executors.ray import predict

    pids = {pid for _, pid in get_executor("ray").map(_import_training, list(range(most)), show_progress=False)}
    _fit_once(run, most, most, work, "warm")  # every worker's first fold pays one-off costs (first model, first ops)
    predict([str(p) for p in photos], run, work / "warm", workers=most, threads=1, cache_dir=work / "warm-cache",
            show_progress=False)
    shutil.rmtree(work / "warm")
    print(f"warm-up: {len(pids)} Ray worker(s) started with the libraries imported", flush=True)


def measure_predict(run: Path, photos: list, workers: list[int], work: Path, args) -> dict:
    out = {}
    head = photos[: max(1, len(photos) // 4)]
    for w in workers:
        full = min(_predict_once(run, photos, w, work, f"{w}_{r}") for r in range(args.repeat))
        short = min(_predict_once(run, head, w, work, f"{w}_{r}_short") for r in range(args.repeat))
        steady = (len(photos) - len(head)) / (full - short) if full > short else float("nan")
        out[w] = {"seconds": full, "photos_per_s": len(photos) / full, "seconds_quarter": short,
                  "steady_photos_per_s": steady}
        print(f"predict, {w} worker(s): {len(photos) / full:.2f} photos/s end to end, {steady:.2f} steady", flush=True)
    return out


def _predict_once(run: Path, photos: list, w: int, work: Path, tag: str) -> float:
    import pandas as pd

    from hybridpose.executors.ray import predict

    target = work / f"pred_{tag}"
    t0 = time.perf_counter()
    res = predict([str(p) for p in photos], run, target, workers=w, cpus_per_worker=1, threads=1,
                  cache_dir=work / f"cache_{tag}", show_progress=False)
    seconds = time.perf_counter() - t0
    frame = pd.read_csv(target / "predictions.csv")
    _common.smoke_check(list(frame["path"]) == [str(p) for p in photos] and frame["status"].notna().all(),
                        f"predict with {w} worker(s): a row with a status for every photo, in order")
    _common.smoke_check(res["images"] == len(photos), "predict counted every photo")
    shutil.rmtree(target)
    return seconds


def measure_fit(run: Path, workers: list[int], work: Path, args) -> dict:
    from hybridpose.run.folder import RunFolder

    most = max(workers)
    k = int(RunFolder(run).read_config()["folds"])
    out = {}
    for w in workers:
        seconds = min(_fit_once(run, w, most, work, f"{w}_{r}") for r in range(args.repeat))
        out[w] = {"folds": k, "seconds": seconds, "folds_per_min": 60 * k / seconds}
        print(f"fit, {w} fold(s) at a time: {60 * k / seconds:.2f} folds/min", flush=True)
    return out


def _fit_once(run: Path, w: int, most: int, work: Path, tag: str) -> float:
    """Seconds to train every fold of a copy of ``run`` (its folds removed), ``w`` folds at a time."""
    from hybridpose.executors import Resources, get_executor
    from hybridpose.run.folder import RunFolder
    from hybridpose.train.fit import train_folds

    k = int(RunFolder(run).read_config()["folds"])
    copy = work / f"fit_{tag}"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("fold_*", "oof_predictions.csv", "summary.json"))
    one_thread(copy)
    t0 = time.perf_counter()
    done = train_folds(copy, get_executor("ray"), resources=Resources(cpus=most / w), retries=0, show_progress=False)
    seconds = time.perf_counter() - t0
    _common.smoke_check(sorted(done) == list(range(1, k + 1)) and all(
        RunFolder(copy).fold_done(i).exists() for i in range(1, k + 1)), f"fit with {w} worker(s): every fold finished")
    shutil.rmtree(copy)
    return seconds


def one_thread(run: Path) -> None:
    """One PyTorch thread per fold (num_threads is not part of the run's identity, so the run resumes)."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["num_threads"] = 1
    (run / "config.json").write_text(json.dumps(cfg))


def report(results: dict, workers: list[int], n: int) -> None:
    base = workers[0]
    print(f"\n{'what':<16}{'workers':>8}{'throughput':>22}{'ratio to ' + str(base):>14}")
    for key, label in (("photos_per_s", "predict"), ("steady_photos_per_s", "predict steady")):
        for w in workers:
            v = results["predict"][w][key]
            print(f"{label:<16}{w:>8}{v:>14.2f} photo/s{v / results['predict'][base][key]:>14.2f}")
    for w in workers:
        f = results["fit"][w]
        print(f"{'fit':<16}{w:>8}{f['folds_per_min']:>15.2f} fold/min{f['folds_per_min'] / results['fit'][base]['folds_per_min']:>13.2f}")
    print(f"(predict: {n} photos; fit: {results['fit'][base]['folds']} folds; goal: ratio >= 1.7 with 2 workers)")


if __name__ == "__main__":
    main()
