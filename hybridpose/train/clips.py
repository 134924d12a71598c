"""`fit` on clips: a video or a folder of frames is one sample.

``prepare_clips`` turns every clip into its sampled frames (files in the frame cache), which the fold
runner trains the image branch on exactly as on photos; the frames of one clip share its fold (and its
group: ``--groups`` can join clips of one subject or session). ``finish_clips`` then works per clip:
the image branch's out-of-fold frame probabilities averaged over the clip, the clip keypoint branch on
the clip's temporal statistics (``temporal.py``), the fusion, and ``oof_predictions.csv`` (one row per clip).

Classes with a single clip (or single group) cannot be scored out of fold: such a clip is kept in the
training side of every fold (fold 0 in ``clips.csv``/``folds.csv``), never predicted out of fold, and
named in the summary's notes. Classes with fewer clips than folds but at least two are scored; they
simply do not appear in every fold.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..branches import branch_class
from ..data.clips import ClipDataset, FrameCache, clip_frames, load_clip_dataset, pick_frames
from ..data.hierarchy import read_table
from ..data.video import Sampling
from ..errors import DatasetError
from ..fusion import select
from ..pose.frontend import extract, keypoints_array
from ..pose.temporal import clip_table
from ..progress import log, progress_bar
from ..run.folder import RunFolder
from ..run.predtable import table as prediction_table
from .data import build_crop_bank
from .prepared import (
    Prepared,
    bank_size,
    cam_inside,
    config_dict,
    finished_with,
    new_branch,
    top1,
    warn_branches_at_chance,
    write_config,
)

BRANCHES = ("image", "clip_keypoint", "sequence", "trajectory")


def image_subset(clip_ids: pd.Series, per_clip: int, found=None) -> np.ndarray:
    """Which frames the image branch uses: ``per_clip`` spread evenly over each clip's frames with a skeleton
    (``found``; all where it has none or ``found`` is not given), 0: every one (``data.clips.pick_frames``,
    as predict picks them). No single frame of a gesture tells its class; a few show what the hand or body
    looks like, and a frame where the pose model found nothing has no crop of it."""
    ids = np.asarray(clip_ids)
    found = np.ones(len(ids), dtype=bool) if found is None else np.asarray(found, dtype=bool)
    keep = np.zeros(len(ids), dtype=bool)
    for c in pd.unique(ids):
        rows = np.flatnonzero(ids == c)
        keep[rows] = pick_frames(found[rows], per_clip)
    return keep


def _found(poses: pd.DataFrame, paths: pd.Series) -> np.ndarray:
    """Per frame path: whether the pose model found its skeleton."""
    ok = dict(zip(poses["path"].astype(str), poses["status"] == "ok"))
    return paths.astype(str).map(ok).fillna(False).to_numpy(dtype=bool)


def read_groups(path: str | Path | None, root: Path) -> dict[str, str]:
    """``path,group`` rows (header optional); paths relative to the data folder or absolute."""
    if not path:
        return {}
    if not Path(path).is_file():
        raise DatasetError(f"--groups {path}: file not found; give a CSV of 'path,group' rows.")
    out = {}
    for i, (lineno, cells) in enumerate(read_table(Path(path), "groups file", "path,group")):
        if i == 0 and [c.lower() for c in cells] == ["path", "group"]:
            continue
        if len(cells) != 2 or not all(cells):
            raise DatasetError(f"{path}:{lineno}: expected 'path,group', got {','.join(cells)!r}.")
        p = Path(cells[0])
        out[str((p if p.is_absolute() else root / p).resolve())] = cells[1]
    return out


def group_ids(paths: list[Path], groups: dict[str, str]) -> np.ndarray:
    """A group number per sample: the user's group where given, else the sample alone."""
    names = [groups.get(str(Path(p).resolve()), f"#{i}") for i, p in enumerate(paths)]
    return np.unique(names, return_inverse=True)[1]


def clip_folds(labels: list[str], groups: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Fold 1..k per clip (0: training only) and notes; a DatasetError before any work when k cannot work."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels_a = np.asarray(labels)
    n_groups = pd.Series(groups).groupby(labels_a).nunique()
    single = sorted(n_groups[n_groups < 2].index)
    scored = ~np.isin(labels_a, single)
    notes = []
    if single:
        notes.append(f"classes with one clip (or one group) are kept in the training side of every fold and not "
                     f"scored out of fold: {', '.join(single)} ({int((~scored).sum())} clips)")
    if len(set(labels_a[scored])) < 2:
        raise DatasetError(f"only {len(set(labels_a[scored]))} class(es) have two clips or more; out-of-fold scoring "
                           "needs two; add clips.")
    if len(np.unique(groups[scored])) < k:
        raise DatasetError(f"{len(np.unique(groups[scored]))} clip groups can be scored but --folds is {k}; "
                           f"use --folds {max(2, len(np.unique(groups[scored])))} or fewer, or add clips.")
    few = sorted(c for c, n in n_groups.items() if 2 <= n < k)
    if few:
        notes.append(f"classes with fewer clips than the {k} folds are scored but not in every fold: {', '.join(few)}")
    fold = np.zeros(len(labels_a), dtype=int)
    idx = np.flatnonzero(scored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for f, (_, val) in enumerate(splitter.split(np.zeros(len(idx)), labels_a[idx], groups[idx]), start=1):
            fold[idx[val]] = f
    return fold, notes


def prepare_clips(data: str | Path, out: str | Path, *, folds: int, cfg, skeleton, hierarchy=None,
                  groups: str | Path | None = None, sampling: Sampling = Sampling(), workers: int = 1,
                  cache_dir: str | Path | None = None, show_progress: bool = True, image_frames: int = 0) -> RunFolder:
    """The clip counterpart of ``fit.prepare`` (called by it): checks, frames, poses, folds, crop cache;
    nothing when the run was finished with these settings."""
    run = RunFolder(out)
    ds: ClipDataset = load_clip_dataset(data, hierarchy)
    gid = group_ids([s.path for s in ds.samples], read_groups(groups, Path(data)))
    fold, notes = clip_folds(ds.labels, gid, folds, cfg.seed)   # before anything is written
    config = config_dict(ds, cfg, folds, data, skeleton)
    config.update({"branches": list(BRANCHES), "n_clips": len(ds),
                   "clips": {"fps": sampling.fps, "frames": sampling.n, "min_frames": sampling.min_frames,
                             "image_frames": image_frames, "retry": True, "notes": notes}})
    if finished_with(run, config):
        return run
    write_config(run, config)
    log(f"[bold]fit[/] {len(ds)} clips, {len(ds.hierarchy.leaves)} classes, levels {ds.hierarchy.levels}, {folds} folds, "
        f"frames at {sampling.key}, preset {cfg.preset}, skeleton {skeleton.name} -> {run.root}")
    for n in notes:
        log(f"[yellow]{n}.")
    cache = FrameCache(cache_dir)
    rows, frames = [], []
    with progress_bar("frames", total=len(ds), enabled=show_progress) as advance:
        for i, (s, y) in enumerate(zip(ds.samples, ds.labels)):
            cf = clip_frames(s, sampling, cache)
            if cf.status != "ok" or cf.reason:
                log(f"[yellow]{s.path}: {cf.status}: {cf.reason or 'no frame'}")
            rows.append({"clip": str(s.path), "kind": s.kind, "label": y, "group": int(gid[i]), "fold": int(fold[i]),
                         "status": cf.status, "reason": cf.reason, "n_frames": len(cf.paths)})
            frames += [{"path": p, "clip": str(s.path), "frame": j, "time": t}
                       for p, j, t in zip(cf.paths, cf.index, cf.time)]
            advance()
    clips = pd.DataFrame(rows)
    if not frames:
        raise DatasetError(f"{data}: no clip gave a readable frame; see the reasons above.")
    frames_t = pd.DataFrame(frames)
    atomic.write_csv(run.clips, clips)
    atomic.write_csv(run.clip_frames, frames_t)
    poses = extract(list(frames_t["path"]), cache_dir=cache_dir, workers=workers, show_progress=show_progress,
                    skeleton=skeleton, retry=True)
    atomic.write_csv(run.poses, poses)
    by_clip = clips.set_index("clip")
    folds_t = pd.DataFrame({"path": frames_t["path"], "label": by_clip.loc[frames_t["clip"], "label"].to_numpy(),
                            "group": by_clip.loc[frames_t["clip"], "group"].to_numpy(),
                            "fold": by_clip.loc[frames_t["clip"], "fold"].to_numpy(),
                            "image": image_subset(frames_t["clip"], image_frames,
                                                  _found(poses, frames_t["path"])).astype(int)})
    atomic.write_csv(run.folds, folds_t)
    build_crop_bank(poses, bank_size(cfg), cfg.train_margin[1], skeleton, run.crops(bank_size(cfg)), show_progress)
    return run


# --------------------------------------------------------------------------- finish


def finish_clips(p: Prepared) -> dict:
    """Per clip: image probabilities averaged over frames, clip keypoint branch, fusion, oof_predictions.csv."""
    run, h = p.run, p.hierarchy
    clips = pd.read_csv(run.clips, keep_default_na=False, na_values=[""])
    clips = clips[clips["status"] == "ok"].reset_index(drop=True)
    frames = pd.read_csv(run.clip_frames, keep_default_na=False, na_values=[""])
    order = list(clips["clip"])
    kp_frames = keypoints_array(p.poses, p.skeleton)
    stats = clip_table(kp_frames, frames["time"], frames["clip"], p.skeleton, order)
    atomic.write_csv(run.clip_statistics, pd.concat([clips[["clip"]], stats], axis=1))
    fold = clips["fold"].to_numpy()
    y = clips["label"].astype(str).to_numpy()
    leaves = h.leaves
    y_leaf = np.array([leaves.index(c) for c in y])

    image = _clip_image_oof(p, frames, order)
    inputs = {"clip_statistics": stats, "clip_sequence": clip_sequences(kp_frames, frames["clip"], order)}
    span = frames.groupby("clip")["time"].agg(lambda t: t.max() - t.min()).reindex(order).to_numpy(dtype=float)
    names = [b for b in p.config.get("branches", BRANCHES) if b != "image"]
    oof = {name: _branch_oof(p, name, inputs, y, fold, span) for name in names}
    scored = fold > 0
    branches = {name: {lv: v[scored] for lv, v in levels.items()} for name, levels in {"image": image, **oof}.items()}
    choice = select(h, branches, y_leaf[scored], fold[scored])
    atomic.write_json(run.fusion, {**choice.fusion.to_dict(), "selection": choice.to_dict()})
    found = stats["found"].to_numpy()[scored]
    head = {"path": clips["clip"][scored].tolist(), "fold": fold[scored],
            "status": np.where(found > 0, "ok", "no_person")}
    truth = {lv: [h.ancestor(c, lv) for c in y[scored]] for lv in h.levels}
    frame = prediction_table(h, head, truth, {**branches, "fused": choice.oof})
    atomic.write_csv(run.oof, frame)
    top1_ = top1(frame, h)
    warn_branches_at_chance(top1_, y[scored], h.leaf_level)
    notes = list(p.config.get("clips", {}).get("notes", []))
    n = int(scored.sum())
    notes.append(f"figures are per clip: {n} clips scored out of fold ({len(clips) - n} training-only); the image "
                 "branch is its fold networks' frame probabilities averaged over the clip's frames")
    return {"n_images": n, "n_clips": len(clips), "oof_top1": top1_, "fusion": choice.to_dict(), "notes": notes,
            "cam_inside_oof": cam_inside(p)}


def clip_sequences(kp: np.ndarray, clip_ids, order: list[str]) -> list[np.ndarray]:
    """Each clip's (T, n, 4) keypoints in frame order (the sequence branch's input), from per-frame keypoints."""
    ids = np.asarray(list(clip_ids))
    return [kp[ids == c] for c in order]


def _take(X, idx: np.ndarray):
    return X.iloc[idx] if isinstance(X, pd.DataFrame) else [X[i] for i in idx]


def _branch_oof(p: Prepared, name: str, inputs: dict, y: np.ndarray, fold: np.ndarray,
                span: np.ndarray) -> dict[str, np.ndarray]:
    """A clip branch's out-of-fold probabilities per level (fitted on the other folds), then fitted on every
    clip and saved in the run; a branch whose ``fit`` takes ``seconds`` is told each clip's length."""
    h, leaves = p.hierarchy, p.hierarchy.leaves
    X = inputs[branch_class(name).input]
    timed = "seconds" in inspect.signature(branch_class(name).fit).parameters
    out = {lv: np.full((len(y), len(h.classes(lv))), np.nan) for lv in h.levels}
    with progress_bar(f"{name} folds", total=p.k) as advance:
        for f in range(1, p.k + 1):
            train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            if len(test):
                more = {"seconds": span[train]} if timed else {}
                part = new_branch(p, name).fit(_take(X, train), y[train], classes=leaves, **more)
                for lv, v in part.predict_level_proba(_take(X, test), h).items():
                    out[lv][test] = v
            advance()
    new_branch(p, name).fit(X, y, classes=leaves, **({"seconds": span} if timed else {})).save(p.run)
    return out


def _clip_image_oof(p, frames: pd.DataFrame, order: list[str]) -> dict[str, np.ndarray]:
    """Mean out-of-fold image probabilities of each clip's frames (NaN for training-only clips)."""
    from ..run.predtable import read_probs

    h = p.hierarchy
    parts = pd.concat([pd.read_csv(p.run.fold_oof(k)) for k in range(1, p.k + 1)]).drop_duplicates("path")
    merged = frames[["path", "clip"]].merge(parts, on="path", how="inner")
    out = {}
    for lv in h.levels:
        probs = pd.DataFrame(read_probs(merged, "image", lv, h.classes(lv)))
        mean = probs.groupby(merged["clip"].to_numpy()).mean()
        out[lv] = mean.reindex(order).to_numpy(dtype=float)
    return out
