"""Keypoint-only clip baseline: temporal statistics + logistic regression, out of fold, per clip.

    .venv/bin/python benchmarks/bench_clip_baseline.py [--data DIR] [--folds K] [--fps F] [--json PATH]
    .venv/bin/python benchmarks/bench_clip_baseline.py --smoke     # the tests' clips (tests/clipdata.py), 2 folds: does it run?

The clips are read, sampled and their poses found exactly as `hybridpose fit` does (frame cache, pose cache),
with the same folds (``clipfit.clip_folds``, seed 0: classes with one clip are training-only, never scored).
Per clip, the statistics of ``hybridpose.pose.temporal`` (min, max, range, mean, std, speed of every keypoint feature,
and the share of frames with a skeleton) go into
  logreg         median imputation + standardisation + logistic regression (C=1): the baseline;
  clip_keypoint  the run's clip keypoint branch (XGBoost), fitted the same way, for comparison.
Printed: out-of-fold top-1 of each on the scored clips (leaf level), and the seconds taken.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def run(data: Path, k: int, fps: float, seed: int = 0) -> dict:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hybridpose.branches.clip_keypoint import ClipKeypointClassifier
    from hybridpose.data.clips import FrameCache, clip_frames, load_clip_dataset
    from hybridpose.data.video import Sampling
    from hybridpose.pose.frontend import extract, keypoints_array
    from hybridpose.pose.temporal import clip_table
    from hybridpose.train.clips import clip_folds, group_ids

    t0 = time.perf_counter()
    ds = load_clip_dataset(data)
    fold, notes = clip_folds(ds.labels, group_ids([s.path for s in ds.samples], {}), k, seed)
    cache, paths, times, ids = FrameCache(), [], [], []
    for i, s in enumerate(ds.samples):
        cf = clip_frames(s, Sampling(fps=fps), cache)
        paths += cf.paths
        times += cf.time
        ids += [i] * len(cf.paths)
    poses = extract(paths, show_progress=False)
    stats = clip_table(keypoints_array(poses), times, ids, order=range(len(ds)))
    y = np.array(ds.labels)
    pred = {"logreg": np.empty(len(y), dtype=object), "clip_keypoint": np.empty(len(y), dtype=object)}
    for f in range(1, k + 1):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        if not len(te):
            continue
        X = np.array(stats.to_numpy(dtype=float))
        X[~np.isfinite(X)] = np.nan
        keep = ~np.isnan(X[tr]).all(0)
        lr = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
        lr.fit(X[tr][:, keep], y[tr])
        pred["logreg"][te] = lr.predict(X[te][:, keep])
        xgb = ClipKeypointClassifier(seed=seed).fit(stats.iloc[tr], y[tr], classes=sorted(set(y)))
        p = np.nan_to_num(xgb.predict_proba(stats.iloc[te]), nan=-1)
        pred["clip_keypoint"][te] = [xgb.classes_[j] for j in p.argmax(1)]
    scored = fold > 0
    top1 = {name: round(float((p[scored] == y[scored]).mean()), 4) for name, p in pred.items()}
    return {"data": str(data), "clips": len(y), "scored": int(scored.sum()), "folds": k, "fps": fps,
            "oof_top1": top1, "notes": notes, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "exercise_clips")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    keep = _common.setup_env()  # a throwaway pose and frame cache unless HYBRIDPOSE_CACHE is set
    if a.smoke:
        a.data, a.folds = _common.smoke_clips(Path(keep.name)), 2
    res = run(a.data, a.folds, a.fps)
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    ok = res["scored"] > 0 and all(0 <= v <= 1 for v in res["oof_top1"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
