"""What every step of `fit` shares, photos and clips alike: the prepared run folder as the fold and finish
steps read it back, the run's config.json and its id, and fresh branches."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .. import atomic
from ..branches import DEFAULT_BRANCHES, branch_class
from ..data.hierarchy import Hierarchy
from ..errors import RunError
from ..progress import log
from ..run.folder import RUN_FORMAT, RunFolder
from ..skeletons import Skeleton
from .config import TrainConfig
from .stages import Labels

STAGES = (1, 2, 3)


def bank_size(cfg: TrainConfig) -> int:
    """Cache resolution so that the evaluation framing is not upsampled."""
    return int(np.ceil(cfg.input_size * (1 + 2 * cfg.train_margin[1]) / (1 + 2 * cfg.eval_margin) / 8) * 8)


@dataclass
class Prepared:
    """What the fold and finish steps read back from a prepared run folder."""
    run: RunFolder
    config: dict
    cfg: TrainConfig
    hierarchy: Hierarchy
    skeleton: Skeleton
    flip_pairs: dict[str, str]
    folds: pd.DataFrame   # path, label, group, fold
    poses: pd.DataFrame

    @property
    def k(self) -> int:
        return int(self.config["folds"])

    @property
    def fold_of(self) -> np.ndarray:
        return self.folds["fold"].to_numpy()

    @property
    def image_rows(self) -> np.ndarray:
        """Rows the image branch trains on and predicts out of fold: all, but a clip run's chosen frames."""
        if "image" not in self.folds:
            return np.ones(len(self.folds), dtype=bool)
        return self.folds["image"].to_numpy(dtype=bool)

    @property
    def labels(self) -> Labels:
        h = self.hierarchy
        index = {c: i for i, c in enumerate(h.leaves)}
        return Labels(np.array([index[y] for y in self.folds["label"]]), {lv: h.leaf_to_level(lv).argmax(1) for lv in h.levels})

    def level_labels(self, level: str) -> list[str]:
        return [self.hierarchy.ancestor(y, level) for y in self.folds["label"]]

    def flip_map(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.hierarchy.leaves)}
        return np.array([index[self.flip_pairs.get(c, c)] for c in self.hierarchy.leaves])


def config_dict(ds, cfg: TrainConfig, k: int, data, sk: Skeleton) -> dict:
    """config.json of a run on the data set ``ds`` (photos or clips: a clip run adds its own keys)."""
    return {"format": RUN_FORMAT, "version": 1, "data": str(data), "n_images": len(ds), "folds": k,
            "skeleton": sk.to_config(), "branches": list(DEFAULT_BRANCHES),
            "train": cfg.to_dict(), "hierarchy": ds.hierarchy.to_dict(), "flip_pairs": ds.flip_pairs}


def run_id(config: dict) -> str:
    """The hash of every setting that makes a run what it is (not where the data lie, nor the device)."""
    ident = {k: v for k, v in config.items() if k not in ("data", "run_id")}
    ident["train"] = {k: v for k, v in config["train"].items() if k not in ("device", "num_threads")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_with(run: RunFolder, config: dict) -> bool:
    """``run`` was finished (``summary.json``, written last) with the settings of ``config``."""
    if not all(p.exists() for p in (run.summary, run.config, run.poses, run.folds)):
        return False
    try:
        old = atomic.read_json(run.config)
    except ValueError:
        return False  # write_config says it is damaged
    return isinstance(old, dict) and old.get("format") == RUN_FORMAT and old.get("run_id") == run_id(config)


def write_config(run: RunFolder, config: dict) -> dict:
    """config.json with its run id; a RunError where the folder holds a trained run with other settings."""
    config["run_id"] = run_id(config)
    if run.config.exists():
        try:
            old = atomic.read_json(run.config)
        except ValueError:
            raise RunError(f"{run.config}: damaged; delete the run directory or use another --out.") from None
        if old.get("format") != RUN_FORMAT:
            raise RunError(f"{run.config}: not a hybridpose run; use another --out.")
        if old.get("run_id") != config["run_id"]:
            if any(run.root.glob("fold_*/stage*.pt")):
                raise RunError(
                    f"{run.root} holds a run with other settings (data, classes, folds or training config differ); "
                    "use another --out, or delete it to start over."
                )
            log(f"[yellow]{run.root}: no stage was trained with its earlier settings; starting over with these.")
            for stale in (run.folds, *run.root.glob("crops_*.npz")):
                stale.unlink(missing_ok=True)
    atomic.write_json(run.config, config)
    return config


def top1(frame: pd.DataFrame, h: Hierarchy) -> dict:
    """Out-of-fold top-1 of every branch of the table, per level (an abstention counts as wrong)."""
    from ..run.predtable import branch_names, pred_column, true_column

    return {name: {lv: round(float((frame[pred_column(name, lv)] == frame[true_column(lv)]).mean()), 4)
                   for lv in h.levels} for name in branch_names(frame)}


def chance_level(labels: Sequence) -> float:
    """The accuracy of always answering the most common class."""
    counts = pd.Series(np.asarray(labels)).value_counts()
    return float(counts.iloc[0] / counts.sum()) if len(counts) else 0.0


def warn_if_chance(what: str, accuracy: float, chance: float, margin: float = 0.05) -> bool:
    """One plain warning line when a branch does no better than always answering the commonest class."""
    if not np.isfinite(accuracy) or accuracy > chance + margin:
        return False
    log(f"[yellow]{what}: accuracy {accuracy:.3f}, no better than chance ({chance:.3f}, always the commonest class): "
        "this branch cannot tell these classes apart; the fusion gives it little or no weight.")
    return True


def warn_branches_at_chance(oof_top1: dict, labels: Sequence, leaf_level: str) -> list[str]:
    """``warn_if_chance`` for every branch's out-of-fold top-1 at the leaf level; the branches it warned of."""
    chance = chance_level(labels)
    return [name for name, acc in oof_top1.items() if name != "fused"
            and warn_if_chance(f"the {name} branch out of fold ({leaf_level})", float(acc.get(leaf_level, np.nan)), chance)]


def new_branch(p: Prepared, name: str):
    """A fresh, unfitted branch with the run's flip pairs, seed and skeleton."""
    return branch_class(name)(flip_pairs=p.flip_pairs, seed=p.cfg.seed, skeleton=p.skeleton.name)


def cam_inside(p: Prepared) -> dict[str, float]:
    """Per stage, the share of CAM energy on the keypoint body region of out-of-fold photos, over the folds."""
    cam: dict[str, list] = {}
    for k in range(1, p.k + 1):
        for s, v in atomic.read_json(p.run.fold_done(k))["cam_inside"].items():
            cam.setdefault(f"stage{s}", []).append(v)
    return {s: round(float(np.nanmean(v)), 4) for s, v in cam.items()}
