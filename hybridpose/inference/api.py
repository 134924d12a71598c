"""``predict()``: the one entry for every input kind and run kind, the CLI's and the library's.

Photos (a file or a folder) go through the photo classifier, locally or over Ray; a clip run's inputs
(videos, frame folders, photos as one-frame clips) through the clip predictor; ``camera`` runs the live
loop. What is wrong with the options is said before any work starts.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..defaults import DEFAULTS
from ..errors import ConfigError
from ..outputs import check_writable
from ..run.folder import RunFolder

PREDICTIONS_FILE = {"csv": "predictions.csv", "json": "predictions.jsonl"}


def predict(inputs: str | Path | None, run: str | Path, out: str | Path | None = None, *,
            rules: str | Path | None = None, no_rules: bool = False, fmt: str = "csv",
            batch_size: int = DEFAULTS.batch_size, cache_dir: str | Path | None = None, partial: bool = False,
            engine: str | None = None, workers: int | None = DEFAULTS.predict_workers, executor: str = "local",
            address: str | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
            per_frame: str | Path | None = None, annotate: str | Path | None = None, fps: float | None = None,
            frames: int | None = None, camera: int | str | None = None, max_frames: int | None = None,
            show: bool = True, on_frame: Callable[[dict], None] | None = None,
            keypoints: str | Path | None = None, keypoint_units: str = "pixels", show_progress: bool = True,
            max_people: int | None = None, tracker: str | None = None, realtime: bool = True,
            second_look: bool | None = None) -> dict:
    """Label ``inputs`` with the run (or bundle) ``run``; the result's ``kind`` says which path it took
    (``photos``, ``ray``, ``clips`` or ``camera``) and the rest what was written.

    ``workers``: local processes that decode, pose and crop (None: one per CPU core; 0: in-process), or with
    ``executor="ray"`` the model actors. Clip runs: ``per_frame`` (the frame table), ``annotate`` (an .mp4),
    ``fps`` / ``frames`` (sampling); ``camera`` (N or a video file standing in for one) runs live, calling
    ``on_frame`` with every frame's label (``realtime``: a file is played at its own frame rate and the frames
    the loop has no time for are dropped, as from a camera; False: every frame of the file). Photos: a row per person found, up to ``max_people`` (default
    ``DEFAULTS.max_people``). Clips and the camera: with ``max_people`` > 1 (default 1: one person per clip, the
    output of before) every person is tracked (``tracker``, default ``pose.trackers.DEFAULT_TRACKER``) and
    labelled as a clip of its own (a row per track). ``second_look``: a photo where nobody (no hand) is found
    gets the pose model's second look (None: as the run was fitted); clips have their own (the run's ``retry``)."""
    executor = getattr(executor, "value", executor)
    if tracker is not None:
        from ..pose.trackers import tracker_class

        tracker_class(tracker)  # an unknown tracker, or one whose library is missing, before any work
    clip = bool(camera is not None or per_frame or annotate or fps or frames or RunFolder(run).is_clip_run())
    if max_people is None:
        max_people = 1 if clip else DEFAULTS.max_people
    if second_look is not None and (clip or executor == "ray"):
        raise ConfigError("--second-look / --no-second-look is for photos predicted here: clips have their own "
                          "(the run's retry), and Ray's actors follow the run's choice; leave it out.")
    _check(inputs, rules, no_rules, camera, clip, executor, fmt, **{"--out": out, "--per-frame": per_frame,
                                                                   "--annotate": annotate})
    if camera is not None:
        return _camera(run, camera, rules, no_rules, cache_dir, partial, engine, _sampling(fps, frames), max_frames,
                       show, on_frame, max_people, tracker, realtime)
    if clip:
        return _clips(inputs, run, Path(out or PREDICTIONS_FILE["csv"]), rules, no_rules, cache_dir, partial, engine,
                      per_frame, annotate, _sampling(fps, frames), show_progress, max_people, tracker)
    if executor == "ray":
        from ..executors.ray import predict_inputs

        res = predict_inputs(inputs, run, out or Path("predictions"), address=address, workers=max(1, workers or 1),
                             cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, rules=rules,
                             no_rules=no_rules, batch_size=batch_size, cache_dir=cache_dir, partial=partial,
                             engine=engine, max_people=max_people)
        return {"kind": "ray", **res}
    from .photos import predict_photos

    res = predict_photos(inputs, run, Path(out or PREDICTIONS_FILE.get(fmt, "predictions.csv")), rules=rules,
                         no_rules=no_rules, fmt=fmt, batch_size=batch_size, show_progress=show_progress,
                         cache_dir=cache_dir, partial=partial, engine=engine, workers=workers, keypoints=keypoints,
                         keypoint_units=keypoint_units, max_people=max_people, second_look=second_look)
    return {"kind": "photos", **res}


def _check(inputs, rules, no_rules: bool, camera, clip: bool, executor: str, fmt: str, **outputs) -> None:
    """A ConfigError, before any work, for options that cannot go together."""
    if rules is not None and no_rules:
        raise ConfigError("give --rules FILE or --no-rules, not both.")
    if camera is not None:
        _camera_alone(camera, inputs, **outputs)
    if clip and executor == "ray":
        raise ConfigError("clips and --camera are predicted locally; leave out --executor ray.")
    if camera is None and inputs is None:
        raise ConfigError("give an image or a folder (or --camera N)." if not clip else
                          "give a video, a frame folder or a folder of clips (or --camera N).")
    if executor == "ray" and fmt != "csv":
        raise ConfigError("--executor ray writes Parquet shards and a CSV; leave out --format.")


def _camera_alone(camera, inputs, **outputs) -> None:
    """--camera reads the camera only and writes no file: an input or an output given with it would be ignored."""
    if inputs is not None:
        raise ConfigError(f"--camera {camera} runs live on the camera and would ignore {inputs}; give {inputs} "
                          "to predict it, or --camera alone.")
    given = [name for name, path in outputs.items() if path is not None]
    if given:
        raise ConfigError(f"--camera {camera} prints its labels and writes no file; leave out {', '.join(given)}.")


def _sampling(fps: float | None, frames: int | None):
    from ..data.video import Sampling

    return Sampling(fps=fps or DEFAULTS.fps, n=frames or 0) if (fps or frames) else None


def _clips(inputs, run, out: Path, rules, no_rules, cache_dir, partial, engine, per_frame, annotate, sampling,
           show_progress, max_people: int = 1, tracker: str | None = None) -> dict:
    for path, what in ((out, "--out"), (per_frame, "--per-frame"), (annotate, "--annotate")):
        if path is not None:
            check_writable(Path(path), "file", what)
    from .clips import predict_clips

    res = predict_clips(inputs, run, out, rules=rules, no_rules=no_rules, per_frame=per_frame, annotate=annotate,
                        sampling=sampling, cache_dir=cache_dir, partial=partial, show_progress=show_progress,
                        engine=engine, max_people=max_people, tracker=tracker)
    return {"kind": "clips", **res}


def _camera(run, camera, rules, no_rules, cache_dir, partial, engine, sampling, max_frames, show, on_frame,
            max_people: int = 1, tracker: str | None = None, realtime: bool = True) -> dict:
    from .clips import ClipPredictor
    from .live import live

    pred = ClipPredictor(run, rules=rules, use_rules=not no_rules, sampling=sampling, cache_dir=cache_dir,
                         partial=partial, engine=engine, max_people=max_people, tracker=tracker)
    source = int(camera) if str(camera).isdigit() else str(camera)
    n, last, start = 0, None, time.perf_counter()
    for last in live(pred, source, show=show, max_frames=max_frames, realtime=realtime):
        n += 1
        if on_frame is not None:
            on_frame(last)
    seconds = time.perf_counter() - start
    return {"kind": "camera", "camera": str(camera), "frames": n, "last": last,
            "dropped": last["dropped"] if last else 0, "fps": n / seconds if n and seconds > 0 else 0.0}
