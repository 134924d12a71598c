"""Fingertip-path baseline for gesture clips: MediaPipe Hands, the index fingertip's path in image coordinates
resampled to 16 points, + logistic regression and + 1-NN, out of fold, per clip.

    .venv/bin/python benchmarks/bench_motion_baseline.py --run RUN [--json PATH]      # a clip run's frames and folds
    .venv/bin/python benchmarks/bench_motion_baseline.py --data DIR [--groups CSV] [--folds K] [--fps F] [--json PATH]
    .venv/bin/python benchmarks/bench_motion_baseline.py --smoke   # seconds: synthetic swipes + the tests' clips

With ``--run`` the frames, their hand keypoints (the run's ``poses.csv``) and the folds (the clip of each row of
``folds.csv``, i.e. ``clips.csv``'s ``fold``) are the run's own, so the numbers sit beside the run's out-of-fold
figures on the same folds; clips with fold 0 (training only) are never scored. Without it, clips are read and
sampled as ``fit`` does (frame cache, pose cache, ``--skeleton hand``) and folded by ``--groups`` (``path,group``)
as ``fit --groups`` folds them.

Per clip: the index fingertip's (x, y) in [0, 1] of the frame, over the frames where a hand was found, linearly
resampled in time to 16 points, centred on its mean and divided by its larger extent (where in the frame and how
big the gesture was drawn do not matter; its shape and direction do). A clip with fewer than two frames with a
hand has no path: it is counted wrong (``no_path`` says how many). Then
  logreg  standardisation + multinomial logistic regression (C=1) on the 32 numbers;
  1nn     the nearest training path (Euclidean).
Printed: out-of-fold top-1 of each on the scored clips, the confusion of the 1-NN, and the seconds taken.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

POINTS = 16
TIP = "index_tip"


def resampled_path(xy: np.ndarray, t: np.ndarray, points: int = POINTS) -> np.ndarray | None:
    """(points * 2,) the found frames' (x, y) resampled in time, centred and scaled; None with under two frames."""
    ok = np.isfinite(xy).all(axis=1)
    xy, t = xy[ok], np.asarray(t, dtype=float)[ok]
    if len(xy) < 2:
        return None
    s = np.linspace(t[0], t[-1], points) if t[-1] > t[0] else np.linspace(0, len(t) - 1, points)
    base = t if t[-1] > t[0] else np.arange(len(t))
    p = np.c_[np.interp(s, base, xy[:, 0]), np.interp(s, base, xy[:, 1])]
    p -= p.mean(0)
    extent = float(np.ptp(p, axis=0).max())
    return (p / extent if extent > 1e-9 else p).ravel()


def paths_from_poses(poses: pd.DataFrame, clip_ids: list, times: np.ndarray, order: list) -> list[np.ndarray | None]:
    """One resampled fingertip path per clip of ``order`` from a poses table (rows aligned with clip_ids, times)."""
    wh = poses[["width", "height"]].to_numpy(dtype=float)
    xy = poses[[f"{TIP}_x", f"{TIP}_y"]].to_numpy(dtype=float) / wh
    ids = np.asarray(clip_ids, dtype=object)
    return [resampled_path(xy[ids == c], np.asarray(times)[ids == c]) for c in order]


def evaluate(paths: list[np.ndarray | None], labels: list[str], fold: np.ndarray) -> dict:
    """Out-of-fold top-1 of logreg and 1-NN on the clips with a fold > 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels, dtype=object)
    has = np.array([p is not None for p in paths])
    X = np.stack([p if p is not None else np.zeros(2 * POINTS) for p in paths])
    pred = {"logreg": np.full(len(y), "", dtype=object), "1nn": np.full(len(y), "", dtype=object)}
    for f in sorted(set(fold[fold > 0])):
        tr = np.flatnonzero((fold != f) & has)
        te = np.flatnonzero((fold == f) & has)
        if not len(te) or len(set(y[tr])) < 2:
            continue
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(X[tr], y[tr])
        pred["logreg"][te] = lr.predict(X[te])
        d = ((X[te, None, :] - X[None, tr, :]) ** 2).sum(-1)
        pred["1nn"][te] = y[tr][d.argmin(1)]
    scored = fold > 0
    classes = sorted(set(y[scored]))
    confusion = pd.crosstab(pd.Series(y[scored], name="true"), pd.Series(pred["1nn"][scored], name="1nn"))
    return {"clips": int(len(y)), "scored": int(scored.sum()), "no_path": int((scored & ~has).sum()),
            "oof_top1": {k: round(float((v[scored] == y[scored]).mean()), 4) for k, v in pred.items()},
            "classes": classes, "confusion_1nn": {str(r): {str(c): int(v) for c, v in row.items() if v}
                                                  for r, row in confusion.iterrows()}}


def from_run(run: Path) -> dict:
    from hybridpose.run.folder import RunFolder

    folder = RunFolder(run)
    clips = pd.read_csv(folder.require(folder.clips), keep_default_na=False, na_values=[""])
    clips = clips[clips["status"] == "ok"].reset_index(drop=True)
    frames = pd.read_csv(folder.require(folder.clip_frames), keep_default_na=False, na_values=[""])
    poses = pd.read_csv(folder.require(folder.poses), keep_default_na=False, na_values=[""])
    poses = poses.iloc[pd.Index(poses["path"]).get_indexer(frames["path"])].reset_index(drop=True)
    folds = pd.read_csv(folder.require(folder.folds))
    by_frame = dict(zip(folds["path"], folds["fold"]))
    fold_of = frames.assign(fold=frames["path"].map(by_frame)).groupby("clip")["fold"].first()
    order = list(clips["clip"])
    paths = paths_from_poses(poses, list(frames["clip"]), frames["time"].to_numpy(), order)
    res = evaluate(paths, list(clips["label"].astype(str)), fold_of.reindex(order).fillna(0).to_numpy(int))
    return {"run": str(run), "frames": int(len(frames)), **res}


def from_data(data: Path, groups: Path | None, k: int, fps: float, seed: int = 0) -> dict:
    from hybridpose.data.clips import FrameCache, clip_frames, load_clip_dataset
    from hybridpose.data.video import Sampling
    from hybridpose.pose.frontend import extract
    from hybridpose.train.clips import clip_folds, group_ids, read_groups

    ds = load_clip_dataset(data)
    fold, notes = clip_folds(ds.labels, group_ids([s.path for s in ds.samples], read_groups(groups, data)), k, seed)
    cache, paths, times, ids = FrameCache(), [], [], []
    for i, s in enumerate(ds.samples):
        cf = clip_frames(s, Sampling(fps=fps), cache)
        paths += cf.paths
        times += cf.time
        ids += [i] * len(cf.paths)
    poses = extract(paths, show_progress=False, skeleton="hand")
    tips = paths_from_poses(poses, ids, np.asarray(times), list(range(len(ds))))
    return {"data": str(data), "folds": k, "fps": fps, "frames": len(paths), "notes": notes,
            **evaluate(tips, list(ds.labels), fold)}


def synthetic(seed: int = 0) -> dict:
    """Swipes in four directions, 6 per class, 3 folds: the classifiers on paths with a known answer."""
    rng = np.random.default_rng(seed)
    direction = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    paths, labels = [], []
    for name, (dx, dy) in direction.items():
        for _ in range(6):
            n = int(rng.integers(5, 20))
            s = np.linspace(0, 0.3, n)
            xy = 0.5 + np.c_[dx * s, dy * s] + rng.normal(0, 0.01, (n, 2))
            xy[rng.random(n) < 0.2] = np.nan  # frames without a hand
            paths.append(resampled_path(xy, np.arange(n) / 10))
            labels.append(name)
    return evaluate(paths, labels, np.arange(len(labels)) % 3 + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a clip run (hybridpose fit --skeleton hand): its frames, poses and folds")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "egogestar")
    ap.add_argument("--groups", type=Path, help="path,group CSV (default: DATA/groups.csv when it exists)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true", help="seconds: synthetic swipes, then the tests' clips")
    a = ap.parse_args()
    keep = _common.setup_env()  # a throwaway pose and frame cache unless HYBRIDPOSE_CACHE is set
    t0 = time.perf_counter()
    if a.smoke:
        res = {"synthetic": synthetic()}
        res["clips"] = from_data(_common.smoke_clips(Path(keep.name)), None, 2, 5.0)
        ok = res["synthetic"]["oof_top1"]["1nn"] >= 0.9 and res["clips"]["scored"] > 0
    elif a.run:
        res = from_run(a.run)
        ok = res["scored"] > 0
    else:
        groups = a.groups or (a.data / "groups.csv" if (a.data / "groups.csv").is_file() else None)
        res = from_data(a.data, groups, a.folds, a.fps)
        ok = res["scored"] > 0
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
