"""What of a run folder goes to its MLflow run (docs/TRACKING.md): the resolved settings as parameters, every
fold's and stage's epochs, the out-of-fold figures per branch and level, the calibration and the files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..run.folder import RunFolder
from . import EPOCH_KEYS, Tracker, epoch_metrics

# config.json's entries left out of the parameters (config.json itself is an artifact): the class tree is
# logged as its levels and class count, not a parameter per class
LEFT_OUT = ("format", "hierarchy")


def config_params(config: dict) -> dict:
    """config.json as parameters: the training settings (``train.stage1.lr``, ...), folds, skeleton, branches,
    the hierarchy's levels and class count."""
    h = config.get("hierarchy") or {}
    return {**{k: v for k, v in config.items() if k not in LEFT_OUT},
            "hierarchy.levels": h.get("levels"), "hierarchy.classes": len(h.get("ancestors") or {})}


def run_tags(run: RunFolder, config: dict, command: str) -> dict[str, str]:
    return {"hybridpose.command": command, "hybridpose.run_id": str(config.get("run_id", "")),
            "hybridpose.run_dir": str(run.root.resolve())}


def log_fit(tracker: Tracker, run: RunFolder, summary: dict) -> None:
    """A finished run: epochs not logged as they ran (folds trained elsewhere or before), out-of-fold figures,
    calibration, artifacts."""
    if not tracker.enabled:
        return
    log_curves(tracker, run)
    tracker.metrics(oof_metrics(summary))
    log_calibration(tracker, run)
    for path in (run.summary, run.config, run.curves, run.fusion, run.left_out, run.rules, run.calibration):
        tracker.artifact(path)
    for metrics in sorted(run.root.glob("fold_*/metrics.csv")):
        tracker.artifact(metrics, f"curves/{metrics.parent.name}")
    tracker.artifact(run.evaluation / "report.html", "evaluation")


def log_curves(tracker: Tracker, run: RunFolder) -> None:
    """Every fold's metrics.csv rows whose (fold, stage) the tracker has not logged yet."""
    for path in sorted(run.root.glob("fold_*/metrics.csv")):
        for row in pd.read_csv(path).to_dict("records"):
            if (int(row["fold"]), int(row["stage"])) not in tracker.logged_curves:
                tracker.metrics(epoch_metrics(row), step=int(row["epoch"]))
    tracker.logged_curves.update(_stages(run))


def _stages(run: RunFolder) -> set[tuple[int, int]]:
    out = set()
    for path in run.root.glob("fold_*/metrics.csv"):
        frame = pd.read_csv(path, usecols=list(EPOCH_KEYS[:2]))
        out |= set(map(tuple, frame.astype(int).to_numpy().tolist()))
    return out


def oof_metrics(summary: dict) -> dict[str, float]:
    """summary.json's figures: ``oof/<branch>/<level>/top1``, ``oof/cam_inside/<stage>``, photos, seconds."""
    out = {f"oof/{branch}/{level}/top1": v for branch, levels in (summary.get("oof_top1") or {}).items()
           for level, v in levels.items()}
    out.update({f"oof/cam_inside/{stage}": v for stage, v in (summary.get("cam_inside_oof") or {}).items()})
    fusion = summary.get("fusion") or {}
    out.update({f"fusion/oof_leaf_log_loss/{k}": v for k, v in (fusion.get("oof_leaf_log_loss") or {}).items()})
    for key in ("n_images", "n_clips", "seconds", "several_people"):
        if key in summary:
            out[key] = summary[key]
    return out


def log_calibration(tracker: Tracker, run: RunFolder, result: dict | None = None) -> None:
    """The calibration's outcome when the run has one: pairs looked at, rules kept, and (``result``: calibrate's
    return value) the cross-fitted leaf top-1 before and after the rules."""
    if run.calibration.exists():
        table = pd.read_csv(run.calibration)
        kept = int(table["kept"].astype(bool).sum()) if "kept" in table else 0
        tracker.metrics({"calibration/pairs": len(table), "calibration/rules": kept})
    if result is not None:
        tracker.metrics({f"calibration/{k}": result[k] for k in ("cv_before", "cv_after", "cv_fired")})


def log_evaluation(tracker: Tracker, summary: dict, out_dir: Path) -> None:
    """evaluate's figures (``<branch>/<level>/top1``, ``top1_all``, ``top5``, ``macro_f1``) and its output files."""
    values = {}
    for row in summary.get("metrics", []):
        for key in ("top1", "top1_all", "top5", "macro_f1", "n", "n_abstained"):
            if key in row:
                values[f"{row['branch']}/{row['level']}/{key}"] = row[key]
    tracker.metrics(values)
    tracker.artifact(out_dir)
