"""The jobs behind `calibrate`, `predict` and `evaluate`, callable from Python."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .branches import DEFAULT_BRANCHES
from .data.datasets import load_dataset
from .data.hierarchy import Hierarchy
from .errors import DatasetError, RunError
from .outputs import check_writable
from .pose.frontend import keypoints_array
from .run.folder import RunFolder
from .run.predtable import missing_columns, read_probs, read_table, rules_column, true_column
from .skeletons import get_skeleton
from .rules import calibrate_rules, crossval_rules, write_rules
from .rules.io import backup_if_edited
from .defaults import DEFAULTS


def load_oof(run: Path) -> tuple[pd.DataFrame, Hierarchy, dict]:
    folder = RunFolder(run)
    config = folder.read_config()
    from .engines import is_bundle

    if is_bundle(folder):
        raise RunError(f"{folder.root}: an exported bundle holds no out-of-fold predictions; evaluate the run it "
                       f"came from, or a labelled set with `hybridpose evaluate DATA --model {folder.root}`.")
    path = folder.require(folder.oof)
    h = Hierarchy.from_dict(config["hierarchy"])
    fix = f"run `{folder.fit_command(config)}` again (it rewrites the table)"
    frame = read_table(path, fix)
    missing = missing_columns(frame, h, [*config.get("branches", DEFAULT_BRANCHES), "fused"])
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise RunError(f"{path}: damaged (no column {missing[0]!r}{more}: its header is cut short); {fix}.")
    source, expected = _scored(folder, config, fix)
    if len(frame) != expected:
        raise RunError(f"{path}: damaged ({len(frame)} rows where {source} lists {expected}); {fix}.")
    return frame, h, config


def _scored(folder: RunFolder, config: dict, fix: str) -> tuple[Path, int]:
    """The table listing what the out-of-fold table scores, and how many rows it has: every photo of folds.csv,
    or the clips of clips.csv that were read and have a fold."""
    if config.get("clips"):
        clips = read_table(folder.require(folder.clips), fix)
        return folder.clips, int(((clips["status"] == "ok") & (clips["fold"] > 0)).sum())
    return folder.folds, len(read_table(folder.require(folder.folds), fix))


def run_features(run: Path, oof: pd.DataFrame) -> pd.DataFrame:
    folder = RunFolder(run)
    skeleton = get_skeleton(folder.read_config().get("skeleton"))
    if folder.read_config().get("clips"):  # a clip run: the clips' temporal statistics (temporal.py)
        stats = pd.read_csv(folder.require(folder.clip_statistics), keep_default_na=False, na_values=[""])
        return stats.set_index("clip").loc[list(oof["path"])].reset_index(drop=True)
    poses = pd.read_csv(folder.require(folder.poses), keep_default_na=False, na_values=[""])
    rows = pd.Index(poses["path"]).get_indexer(oof["path"])
    if (rows < 0).any():
        raise RunError(f"{folder.poses}: does not cover every photo of oof_predictions.csv; run `{folder.fit_command()}` again.")
    poses = poses.iloc[rows].reset_index(drop=True)
    return skeleton.features(keypoints_array(poses, skeleton))


def calibrate(run: str | Path, *, out: str | Path | None = None, dry_run: bool = False, min_gain: float = DEFAULTS.min_gain,
              min_fired: int = DEFAULTS.min_fired, alpha: float = DEFAULTS.alpha) -> dict:
    """Find rules for confused sibling pairs from the run's out-of-fold predictions; see rules/calibrate.py.

    A rules file about to be replaced that was edited by hand is first copied to ``NAME.bak``
    (``.bak1``, ... if taken); ``result["backups"]`` lists the copies made.
    """
    run = Path(run)
    folder = RunFolder(run)
    oof, h, _ = load_oof(run)
    if not dry_run:  # before any work: nothing in the run is rewritten when an output cannot be
        check_writable(folder.root, "folder", what="run folder", fix="copy the run to a folder you can write to")
        if out:
            check_writable(_rules_file(Path(out)), "file")
    feats = run_features(run, oof)
    leaves, level = h.leaves, h.leaf_level
    probs = read_probs(oof, "fused", level, leaves)
    y = list(oof[true_column(level)].astype(str))
    kw = dict(min_gain=min_gain, min_fired=min_fired, alpha=alpha)
    ruleset, table = calibrate_rules(feats, y, probs, leaves, h, **kw)
    ruleset.meta.update({"source_run": str(run), "photos": len(oof)})
    refined, fired = crossval_rules(feats, y, probs, leaves, h, oof["fold"].to_numpy(), **kw)
    before = float(np.mean(np.array(leaves)[probs.argmax(1)] == np.array(y)))
    after = float(np.mean(np.array(refined) == np.array(y)))
    result = {"rules": ruleset, "table": table, "cv_before": before, "cv_after": after,
              "cv_fired": int(sum(bool(f) for f in fired)), "written": [], "backups": []}
    if dry_run:
        return result
    for lv in h.levels:
        oof[rules_column(lv)] = [h.ancestor(leaf, lv) for leaf in refined]
    oof["rule"] = fired
    atomic.write_csv(folder.oof, oof)
    atomic.write_csv(folder.calibration, table)
    targets = [folder.rules] + ([_rules_file(Path(out))] if out else [])
    for t in targets:
        backup = backup_if_edited(t)
        if backup is not None:
            result["backups"].append(str(backup))
        write_rules(ruleset, t)
    result["written"] = [str(t) for t in targets] + [str(folder.calibration)]
    return result


def _rules_file(out: Path) -> Path:
    """``--out`` names the rules file itself (.yaml/.yml) or the folder to write rules.yaml into."""
    return out if out.suffix in (".yaml", ".yml") else out / "rules.yaml"


def _skeleton_note(config: dict) -> str:
    sk = get_skeleton(config.get("skeleton"))
    source = (config.get("keypoints") or {}).get("file")
    return f"{sk.name} ({sk.description})" + (f", keypoints read from {source}" if source else "")


def evaluate(target: str | Path, *, model: str | Path | None = None, out: str | Path | None = None,
             data: str | Path | None = None, images: str | Path | None = None, show_progress: bool = True) -> dict:
    """Metrics, plots, label review and report.html for a run's out-of-fold predictions (``evaluate RUN``),
    a labelled data set with ``model``, or a predictions CSV with its labelled ``data``."""
    from .evaluation.metrics import evaluate_frame
    from .evaluation.report import write_report
    from .evaluation.review import write_review

    target = Path(target)
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
        frame, h = _frame_from_dataset(target, Path(model), images, show_progress)
        title = f"Evaluation of {model} on {target}"
    summary = evaluate_frame(frame, h, out_dir, title=title)
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
    from .data.images import IMAGE_EXTENSIONS

    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))


def _frame_from_dataset(data: Path, run: Path, images, show_progress: bool) -> tuple[pd.DataFrame, Hierarchy]:
    from .inference.classifier import HybridPoseClassifier

    if RunFolder(run).read_config().get("clips"):  # a clip run: one row per clip (docs/CLIPS.md)
        from .inference.clips import evaluation_frame

        if images is not None:
            raise DatasetError(f"--images {images}: a clip run reads the clips of {data} itself; leave --images out.")
        return evaluation_frame(data, run, show_progress=show_progress)
    ds = load_dataset(data, images=images)
    clf = HybridPoseClassifier.load(run)
    unknown = sorted(set(ds.labels) - set(clf.hierarchy.leaves))
    if unknown:
        raise DatasetError(f"{data}: classes {unknown} are not classes of the model {run}.")
    h = clf.hierarchy
    frame = pd.concat(list(clf.iter_predict(ds.paths, show_progress=show_progress, detailed=True)), ignore_index=True)
    for lv in h.levels:
        frame[true_column(lv)] = ds.level_labels(lv)
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
