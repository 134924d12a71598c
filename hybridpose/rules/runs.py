"""`calibrate` on a run: its out-of-fold table and statistics in, rules.yaml, calibration.csv and the table's
``rules_*`` columns out (the search itself is calibrate.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import atomic
from ..defaults import DEFAULTS
from ..outputs import check_writable
from ..run.folder import RunFolder
from ..run.oof import load_oof, run_features
from ..run.predtable import read_probs, rules_column, true_column
from ..tracking import Tracker, tracking_uri
from .calibrate import calibrate_rules, crossval_rules, select_statistics
from .io import backup_if_edited, write_rules

# Not searched unless named: where in the frame a clip happened is where the camera stood, not the gesture (and the
# frame's size is not known everywhere a clip's statistics are computed).
DEFAULT_EXCLUDE = ("*_frame_*",)


def calibrate(run: str | Path, *, out: str | Path | None = None, dry_run: bool = False, min_gain: float = DEFAULTS.min_gain,
              min_fired: int = DEFAULTS.min_fired, alpha: float = DEFAULTS.alpha,
              statistics: list[str] | None = None, track: str | None = None) -> dict:
    """Find rules for confused sibling pairs from the run's out-of-fold predictions; see rules/calibrate.py.

    ``statistics``: the names (globs allowed) of the statistics to consider; the multiple-testing bar then counts
    only those. Default: every statistic of the run but ``DEFAULT_EXCLUDE``.

    A rules file about to be replaced that was edited by hand is first copied to ``NAME.bak``
    (``.bak1``, ... if taken); ``result["backups"]`` lists the copies made.

    ``track``: an MLflow tracking URI (default ``$HYBRIDPOSE_TRACKING_URI``; docs/TRACKING.md) that gets the
    outcome and the rules (not with ``dry_run``); `fit --track` again on the calibrated run logs it as a model
    with its rules.
    """
    tracker = Tracker(None if dry_run else tracking_uri(track), f"calibrate {Path(run).name}")  # before any work
    with tracker:
        result = _calibrate(Path(run), out, dry_run, min_gain, min_fired, alpha, statistics)
        if tracker.enabled:
            _track(tracker, RunFolder(run), result)
    return result


def _track(tracker: Tracker, folder: RunFolder, result: dict) -> None:
    from ..tracking.runs import log_calibration, run_tags

    tracker.set_tags(run_tags(folder, folder.read_config(), "calibrate"))
    log_calibration(tracker, folder, result)
    for path in (folder.rules, folder.calibration):
        tracker.artifact(path)
    tracker.say_where()
    if tracker.enabled:
        result["tracking"] = {"uri": tracker.uri, "run_id": tracker.run_id}


def _calibrate(run: Path, out, dry_run: bool, min_gain: float, min_fired: int, alpha: float,
               statistics: list[str] | None) -> dict:
    folder = RunFolder(run)
    oof, h, _ = load_oof(run)
    if not dry_run:  # before any work: nothing in the run is rewritten when an output cannot be
        check_writable(folder.root, "folder", what="run folder", fix="copy the run to a folder you can write to")
        if out:
            check_writable(_rules_file(Path(out)), "file")
    feats = run_features(run, oof)
    names = select_statistics(list(feats.columns), statistics, DEFAULT_EXCLUDE, f"the run {folder.root}")
    feats = feats[names]
    leaves, level = h.leaves, h.leaf_level
    probs = read_probs(oof, "fused", level, leaves)
    y = list(oof[true_column(level)].astype(str))
    kw = dict(min_gain=min_gain, min_fired=min_fired, alpha=alpha)
    ruleset, table = calibrate_rules(feats, y, probs, leaves, h, **kw)
    ruleset.meta.update({"source_run": str(run), "photos": len(oof),
                         "statistics": ",".join(statistics) if statistics else "all but " + ",".join(DEFAULT_EXCLUDE)})
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
