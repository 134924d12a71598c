"""Photos through a finished run: every image under a path labelled, streamed batch by batch into one
CSV or JSON-lines file, atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import atomic
from ..data.sources import open_inputs
from ..defaults import DEFAULTS
from ..outputs import OutputError, check_writable
from ..pose.keypoint_file import keypoint_source
from ..run.folder import RunFolder
from ..skeletons import get_skeleton


def predict_photos(inputs: str | Path, run: str | Path, out: str | Path, *, rules: str | Path | None = None,
            no_rules: bool = False, fmt: str = "csv", batch_size: int = DEFAULTS.batch_size, show_progress: bool = True,
            cache_dir: str | Path | None = None, partial: bool = False, engine: str | None = None,
            workers: int | None = DEFAULTS.predict_workers, keypoints: str | Path | None = None, keypoint_units: str = "pixels",
            max_people: int = DEFAULTS.max_people, second_look: bool | None = None) -> dict:
    """Stream predictions for every image under ``inputs`` into ``out`` (CSV or JSON lines), atomically.

    ``engine``: what runs the image networks (hybridpose.engines; default torch for a run, onnxruntime for an
    exported bundle); ``workers``: processes that decode, pose and crop while this one runs the networks (None: one
    per CPU core); with ``keypoints``, the keypoints come from that file instead of the run's pose model (and
    photos are read in this process: no pose model to spread); ``max_people``: a row per person found, up to that
    many (1: the skeleton's single-person model, one row per photo); ``second_look``: a photo where nobody (no
    hand) is found gets the pose model's second look (None: as the run was fitted, its config's ``second_look``)."""
    inputs, out = Path(inputs), Path(out)
    if max_people < 1:
        raise OutputError(f"--max-people {max_people}: give 1 or more.")
    if fmt not in ("csv", "json"):
        raise OutputError(f"--format {fmt!r}: choose one of csv, json.")
    check_writable(out, "file", file_name="predictions.jsonl" if fmt == "json" else "predictions.csv")
    paths = [e.path for e in open_inputs(inputs)]
    config = RunFolder(run).read_config()
    second_look = bool(config.get("second_look")) if second_look is None else second_look
    skeleton = get_skeleton(config.get("skeleton"))
    source = keypoint_source(keypoints, skeleton, keypoint_units, paths, inputs)  # checked before any work
    workers = 0 if source is not None else (os.cpu_count() or 1) if workers is None else workers
    cache_dir = Path(cache_dir) if cache_dir else None
    if workers > 0 and paths:  # the workers start posing while this process loads the networks (below)
        _start_posing(paths, workers, skeleton, config, batch_size, cache_dir, max_people, second_look)
    from .classifier import HybridPoseClassifier
    from .pipeline import network_threads

    clf = HybridPoseClassifier.load(run, rules=rules, use_rules=not no_rules, partial=partial, engine=engine,
                                    threads=network_threads(workers) if workers > 0 else 0)
    clf.cache_dir = cache_dir
    clf.keypoint_source = source
    clf.max_people, clf.second_look = max_people, second_look
    counts: dict[str, int] = {}
    rows = 0
    with atomic.atomic_open(out, "w", encoding="utf-8", newline="") as fh:
        for i, frame in enumerate(clf.iter_predict(paths, batch_size, show_progress, workers=workers)):
            rows += len(frame)
            for s, n in frame["status"].value_counts().items():
                counts[s] = counts.get(s, 0) + int(n)
            if fmt == "json":
                for rec in frame.to_dict(orient="records"):
                    fh.write(json.dumps({k: _plain(v) for k, v in rec.items()}) + "\n")
            else:
                frame.to_csv(fh, header=(i == 0), index=False)
    return {"images": len(paths), "rows": rows, "status": counts, "out": str(out), "missing_folds": clf.missing_folds,
            "rules": str(clf.rules.path) if clf.rules is not None and clf.rules.path else None}


def _start_posing(paths: list, workers: int, skeleton, config: dict, batch_size: int, cache_dir: Path | None,
                  max_people: int, second_look: bool) -> None:
    """Fork the pose workers and hand them the first photos before PyTorch or the networks load; the
    classifier takes the stream if its networks crop the same way (the run's recorded input size and margin)."""
    from ..pose.frontend import estimator_class
    from .pipeline import Producer, prestart

    estimator, train = estimator_class(skeleton, max_people, second_look), config.get("train") or {}
    spec = None
    if "input_size" in train and "eval_margin" in train:  # the stream the classifier's Producer will ask for
        producer = Producer(estimator, int(train["input_size"]), float(train["eval_margin"]), skeleton.n, workers,
                            cache_dir, max_people)
        spec = producer.spec(paths, batch_size)
    prestart(workers, estimator, spec)


def _plain(v):
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v
