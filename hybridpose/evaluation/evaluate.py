"""`evaluate`: metrics, plots, label review and report.html for a run's out-of-fold predictions, a labelled data
set through a run, or a predictions CSV with its labelled data."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .. import atomic
from ..data.datasets import load_dataset
from ..data.hierarchy import Hierarchy
from ..defaults import DEFAULTS
from ..errors import DatasetError
from ..outputs import check_writable
from ..run.folder import RunFolder
from ..run.oof import load_oof
from ..run.predtable import pred_column, read_table, rules_column, true_column
from ..skeletons import get_skeleton
from ..tracking import Tracker, tracking_uri


def _skeleton_note(config: dict) -> str:
    sk = get_skeleton(config.get("skeleton"))
    source = (config.get("keypoints") or {}).get("file")
    return f"{sk.name} ({sk.description})" + (f", keypoints read from {source}" if source else "")


def evaluate(target: str | Path, *, model: str | Path | None = None, out: str | Path | None = None,
             data: str | Path | None = None, images: str | Path | None = None, show_progress: bool = True,
             track: str | None = None, max_people: int = DEFAULTS.max_people, person: str | None = None) -> dict:
    """Metrics, plots, label review and report.html for a run's out-of-fold predictions (``evaluate RUN``),
    a labelled data set with ``model``, or a predictions CSV with its labelled ``data``. ``track``: an MLflow
    tracking URI (default ``$HYBRIDPOSE_TRACKING_URI``) that gets the figures and files (docs/TRACKING.md).
    Several people in a labelled photo (a data set predicted with ``max_people`` > 1, or a predictions CSV with
    a row per person): the row scored is the ``person`` one (``largest`` or ``center``; default: the run's
    ``fit --person``, else largest), the others go to other_people.csv."""
    from ..pose.frontend import PERSON_CHOICES

    target = Path(target)
    if max_people < 1:
        raise DatasetError(f"--max-people {max_people}: give 1 or more.")
    if person is not None and person not in PERSON_CHOICES:
        raise DatasetError(f"--person {person}: choose one of {', '.join(PERSON_CHOICES)}.")
    tracker = Tracker(tracking_uri(track), f"evaluate {target.name}")  # before any work
    with tracker:
        summary = _evaluate(target, model, out, data, images, show_progress, max_people, person)
        if tracker.enabled:
            _track(tracker, target, model, summary)
    return summary


def _track(tracker: Tracker, target: Path, model, summary: dict) -> None:
    from ..tracking.runs import log_evaluation

    run = RunFolder(model if model is not None else target)
    tags = {"hybridpose.command": "evaluate", "hybridpose.target": str(target.resolve())}
    if run.is_run():
        tags.update({"hybridpose.run_id": str(run.read_config().get("run_id", "")),
                     "hybridpose.run_dir": str(run.root.resolve())})
    tracker.set_tags(tags)
    log_evaluation(tracker, summary, Path(summary["out"]))
    tracker.say_where()
    if tracker.enabled:
        summary["tracking"] = {"uri": tracker.uri, "run_id": tracker.run_id}


def _evaluate(target: Path, model, out, data, images, show_progress: bool, max_people: int = DEFAULTS.max_people,
              person: str | None = None) -> dict:
    from .metrics import evaluate_frame
    from .people import one_row_per_photo, oof_people, people_bands, several_rows, write_others
    from .report import write_report
    from .review import write_review

    folds = None
    of_run = RunFolder(target).is_run() and model is None
    if of_run and (data is not None or images is not None):
        raise DatasetError(f"{target} is a run: `evaluate RUN` scores its out-of-fold predictions and uses no "
                           f"--data/--images; to score it on a labelled set, run `hybridpose evaluate DATA --model {target}`.")
    if of_run:
        out_dir = Path(out or target / "evaluation")
    elif target.suffix == ".csv":
        out_dir = Path(out or target.with_suffix(""))
    elif model is None:
        raise DatasetError(_what_to_evaluate(target))
    else:
        out_dir = Path(out or Path(model) / f"evaluation_{target.name}")
    check_writable(out_dir, "folder")  # before any work
    if of_run:
        frame, h, _ = load_oof(target)
        title = f"Out-of-fold evaluation of {target}"
        folds = pd.read_csv(RunFolder(target).folds) if RunFolder(target).folds.exists() else None
    elif target.suffix == ".csv":
        frame, h = _frame_from_predictions(target, data, images)
        title = f"Evaluation of {target}"
    else:
        frame, h = _frame_from_dataset(target, Path(model), images, show_progress, max_people)
        title = f"Evaluation of {model} on {target}"
    if of_run and RunFolder(target).is_clip_run() and "found" not in frame:
        frame = _with_found(target, frame)
    others = None
    if several_rows(frame):  # the label belongs to one person of the photo: that row is scored
        frame, others = one_row_per_photo(frame, person or _run_person(model))
    elif of_run:
        frame = oof_people(frame, RunFolder(target).poses)
    summary = evaluate_frame(frame, h, out_dir, title=title)
    if "people" in frame:
        summary["people"] = people_bands(frame, h)
        summary["person_scored"] = person or _run_person(target if of_run else model)
    if others is not None:
        summary["other_people"] = int((others["status"] == "ok").sum())
        written = write_others(others, h, out_dir)
        if written:
            summary["files"].append(written)
    if "found" in frame:
        summary["found"] = found_bands(frame, h)
    run_dir = target if of_run else (Path(model) if model is not None else None)
    if run_dir is not None:  # the report says which keypoints the run used
        summary["skeleton"] = _skeleton_note(RunFolder(run_dir).read_config())
    if folds is not None and RunFolder(target).curves.exists():
        import shutil

        shutil.copyfile(RunFolder(target).curves, out_dir / "training_curves.png")
    summary["review"] = write_review(frame, folds, h, out_dir)
    summary["report"] = str(write_report(out_dir, summary, title=title))
    atomic.write_csv(out_dir / "predictions_evaluated.csv", frame)
    summary["out"] = str(out_dir)
    return summary


FOUND_BANDS = ((0.0, 0.0, "no frame"), (0.0, 0.5, "under half"), (0.5, 0.9, "half to 90 %"), (0.9, 1.0, "90 % or more"))


def _with_found(run: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The clip rows of a clip run's out-of-fold table with ``found``, the share of their frames with a skeleton."""
    stats = pd.read_csv(RunFolder(run).clip_statistics, usecols=["clip", "found"]) \
        if RunFolder(run).clip_statistics.is_file() else None
    if stats is None:
        return frame
    return frame.assign(found=frame["path"].map(dict(zip(stats["clip"], stats["found"]))))


def found_bands(frame: pd.DataFrame, h: Hierarchy) -> list[dict]:
    """Clips by the share of their frames with a skeleton: how many, and the final prediction's top-1 in each band."""
    leaf = h.leaf_level
    final = frame[rules_column(leaf)] if rules_column(leaf) in frame else frame.get(pred_column("fused", leaf), frame.get(leaf))
    found = pd.to_numeric(frame["found"], errors="coerce").fillna(0.0)
    right = (final.astype(str) == frame[true_column(leaf)].astype(str)) if final is not None else None
    rows = []
    for lo, hi, name in FOUND_BANDS:
        if hi == 0:
            band = found == 0
        elif lo == 0:
            band = (found > 0) & (found < hi)
        else:
            band = (found >= lo) & ((found < hi) | (hi == 1))
        n = int(band.sum())
        top1 = float(right[band].mean()) if right is not None and n else None
        rows.append({"frames with a skeleton": name, "clips": n, "top-1 %": None if top1 is None else round(100 * top1, 1)})
    return rows


def _what_to_evaluate(target: Path) -> str:
    """The error for ``evaluate TARGET`` without --model when TARGET is not a run."""
    if not target.exists():
        return (f"{target}: no such file or folder; give a run directory (the --out of `hybridpose fit`), "
                "a labelled data set with --model RUN, or a predictions CSV with --data FOLDER.")
    if target.is_dir() and not any(_holds_photos(d) for d in target.iterdir() if d.is_dir()):
        return (f"{target}: not a run directory (no config.json) and not a labelled data set (no class sub-folders "
                "with photos); give the --out folder of `hybridpose fit`, or a labelled folder with --model RUN.")
    return f"{target}: to evaluate a data set, give the model: --model RUN."


def _holds_photos(folder: Path) -> bool:
    from ..data.images import IMAGE_EXTENSIONS

    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))


def _run_person(run) -> str:
    """Whose row a labelled photo's label belongs to: the run's ``fit --person`` choice, else the default."""
    if run is None or not RunFolder(run).is_run():
        return DEFAULTS.person
    return (RunFolder(run).read_config().get("people") or {}).get("person", DEFAULTS.person)


def _frame_from_dataset(data: Path, run: Path, images, show_progress: bool,
                        max_people: int = DEFAULTS.max_people) -> tuple[pd.DataFrame, Hierarchy]:
    from ..inference.classifier import HybridPoseClassifier

    if RunFolder(run).is_clip_run():  # a clip run: one row per clip (docs/CLIPS.md)
        from ..inference.clips import evaluation_frame

        if images is not None:
            raise DatasetError(f"--images {images}: a clip run reads the clips of {data} itself; leave --images out.")
        return evaluation_frame(data, run, show_progress=show_progress)
    ds = load_dataset(data, images=images)
    clf = HybridPoseClassifier.load(run)
    unknown = sorted(set(ds.labels) - set(clf.hierarchy.leaves))
    if unknown:
        raise DatasetError(f"{data}: classes {unknown} are not classes of the model {run}.")
    h = clf.hierarchy
    from ..pose.frontend import estimator_class

    several = max_people > 1 and estimator_class(clf.skeleton, max_people) is not estimator_class(clf.skeleton)
    clf.max_people = max_people if several else None  # as predict: a row per person, one of them scored
    frame = pd.concat(list(clf.iter_predict(ds.paths, show_progress=show_progress, detailed=True)), ignore_index=True)
    truth = dict(zip(map(str, ds.paths), ds.labels))
    leaf = frame["path"].map(truth)  # by path: a photo with several people has several rows
    for lv in h.levels:  # the run's hierarchy (the folder may hold no hierarchy.csv of its own)
        frame[true_column(lv)] = [h.ancestor(y, lv) for y in leaf]
    return frame, h


def _frame_from_predictions(path: Path, data, images) -> tuple[pd.DataFrame, Hierarchy]:
    if data is None:
        raise DatasetError(f"{path}: to evaluate a predictions file, give the labelled data: --data FOLDER.")
    ds = load_dataset(data, images=images)
    fix = "give the CSV that `hybridpose predict` wrote"
    preds = read_table(path, fix, DatasetError)
    if "path" not in preds:
        raise DatasetError(f"{path}: no column 'path'; {fix}.")
    truth = {os.path.abspath(p): y for p, y in zip(ds.paths, ds.labels)}
    preds["_true"] = [truth.get(os.path.abspath(p)) for p in preds["path"]]
    missing = preds["_true"].isna().sum()
    if missing == len(preds):
        raise DatasetError(f"{path}: none of its paths lies in {data}; predict on that folder first.")
    preds = preds[preds["_true"].notna()].reset_index(drop=True)
    h = ds.hierarchy
    for lv in h.levels:
        if lv not in preds:
            raise DatasetError(f"{path}: no column {lv!r}; was it written by `hybridpose predict` for this hierarchy?")
        preds[true_column(lv)] = [h.ancestor(y, lv) for y in preds["_true"]]
        preds[rules_column(lv)] = preds[lv]
    return preds.drop(columns=["_true"]), h
