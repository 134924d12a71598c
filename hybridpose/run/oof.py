"""A finished run's out-of-fold table and the statistics of its samples, as `calibrate` and `evaluate` read them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..branches import DEFAULT_BRANCHES
from ..data.hierarchy import Hierarchy
from ..engines import is_bundle
from ..errors import RunError
from ..pose.frontend import keypoints_array
from ..pose.temporal import clip_table, statistic_names
from ..skeletons import Skeleton, get_skeleton
from .folder import RunFolder
from .predtable import missing_columns, read_table


def load_oof(run: Path) -> tuple[pd.DataFrame, Hierarchy, dict]:
    """A run's out-of-fold table, checked whole (every column of its branches, a row per scored sample), its
    hierarchy and config; a RunError saying to re-run fit when it is damaged."""
    folder = RunFolder(run)
    config = folder.read_config()
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
    if folder.is_clip_run(config):
        clips = read_table(folder.require(folder.clips), fix)
        return folder.clips, int(((clips["status"] == "ok") & (clips["fold"] > 0)).sum())
    return folder.folds, len(read_table(folder.require(folder.folds), fix))


def run_features(run: Path, oof: pd.DataFrame) -> pd.DataFrame:
    """The statistics rules read, a row per row of ``oof``: keypoint features (photos) or clip statistics."""
    folder = RunFolder(run)
    config = folder.read_config()
    skeleton = get_skeleton(config.get("skeleton"))
    if folder.is_clip_run(config):  # a clip run: the clips' temporal statistics (pose/temporal.py)
        stats = pd.read_csv(folder.require(folder.clip_statistics), keep_default_na=False, na_values=[""])
        stats = _current_statistics(folder, skeleton, stats)
        return stats.set_index("clip").loc[list(oof["path"])].reset_index(drop=True)
    poses = pd.read_csv(folder.require(folder.poses), keep_default_na=False, na_values=[""])
    rows = pd.Index(poses["path"]).get_indexer(oof["path"])
    if (rows < 0).any():
        raise RunError(f"{folder.poses}: does not cover every photo of oof_predictions.csv; run `{folder.fit_command(config)}` again.")
    poses = poses.iloc[rows].reset_index(drop=True)
    return skeleton.features(keypoints_array(poses, skeleton))


def _current_statistics(folder: RunFolder, skeleton: Skeleton, stats: pd.DataFrame) -> pd.DataFrame:
    """A clip run's statistics with every statistic of today's ``temporal.py``: a run written before some of them
    existed has them computed again from its poses and frames (same frames, same keypoints), with the frames' size."""
    if set(statistic_names(skeleton)) <= set(stats.columns) or not (folder.poses.is_file() and folder.clip_frames.is_file()):
        return stats
    frames = pd.read_csv(folder.clip_frames, keep_default_na=False, na_values=[""])
    poses = pd.read_csv(folder.poses, keep_default_na=False, na_values=[""])
    rows = pd.Index(poses["path"]).get_indexer(frames["path"])
    if (rows < 0).any():
        return stats
    poses = poses.iloc[rows].reset_index(drop=True)
    table = clip_table(keypoints_array(poses, skeleton), frames["time"], frames["clip"], skeleton, list(stats["clip"]),
                       sizes=poses[["width", "height"]].to_numpy(dtype=float))
    return pd.concat([stats[["clip"]].reset_index(drop=True), table], axis=1)
