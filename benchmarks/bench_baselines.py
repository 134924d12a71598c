"""Keypoint-only baselines, measured as a run is: out-of-fold top-1 on the run's own keypoints and folds.

    .venv/bin/python benchmarks/bench_baselines.py --run runs/hands14 [--json PATH]
    .venv/bin/python benchmarks/bench_baselines.py --data DIR --skeleton hand --folds 5   # extracts, makes folds
    .venv/bin/python benchmarks/bench_baselines.py --smoke    # tests/data/hands, 2 folds: does it run?

Baselines (scikit-learn / XGBoost, default settings, no augmentation), each fitted on k-1 folds and scored on
the held-out fold, on two inputs:
  coords    the keypoints relative to the skeleton's first point (the wrist for a hand), divided by the
            largest distance from it: the usual MediaPipe gesture-classifier input;
  features  the skeleton's named features (what the keypoint branch uses).
Models: logistic regression (standardised inputs), k-NN (k=5, standardised), XGBoost (200 trees, depth 4).
Photos without keypoints count as wrong ("top-1 all", as the run's fused figure does) and are left out of
"top-1 found". With --run the table also shows the run's own out-of-fold numbers (oof_predictions.csv) beside,
and pairs each baseline with the run's fused labels on the same photos: how many photos only the fused model
gets right, how many only the baseline, and the exact McNemar p of that split (a top-1 difference of a few
photos with p well above 0.05 is chance).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def coords(kp: np.ndarray) -> np.ndarray:
    xyz = kp[..., :3] - kp[:, :1, :3]
    scale = np.linalg.norm(xyz[..., :2], axis=-1).max(axis=1)
    return (xyz / np.where(scale > 1e-9, scale, 1.0)[:, None, None]).reshape(len(kp), -1)


def models(seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    return {
        "logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)),
        "k-NN (k=5)": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)),
        "XGBoost": lambda: XGBClassifier(n_estimators=200, max_depth=4, learning_rate=0.1, subsample=0.8,
                                         random_state=seed, n_jobs=1, verbosity=0),
    }


def out_of_fold(X: np.ndarray, y: np.ndarray, fold: np.ndarray, found: np.ndarray, make) -> np.ndarray:
    """Predicted class index per photo (-1 where no keypoints), each fold from a model fitted on the others."""
    pred = np.full(len(y), -1)
    for k in np.unique(fold):
        train, test = found & (fold != k), found & (fold == k)
        if not test.any():
            continue
        classes = np.unique(y[train])
        index = np.searchsorted(classes, y[train])
        model = make()
        if len(classes) == 1:
            pred[test] = classes[0]
            continue
        model.fit(X[train], index)
        pred[test] = classes[np.asarray(model.predict(X[test])).astype(int)]
    return pred


def load(args, tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame, str, Path | None]:
    """(poses, folds, skeleton name, run) from --run, or extracted from --data with fresh folds."""
    from hybridpose.skeletons import get_skeleton

    if args.run:
        run = Path(args.run)
        from hybridpose.run.folder import RunFolder

        folder = RunFolder(run)
        config = folder.read_config()
        poses = pd.read_csv(folder.poses, keep_default_na=False, na_values=[""])
        folds = pd.read_csv(folder.folds, keep_default_na=False, na_values=[""])
        return poses, folds, get_skeleton(config.get("skeleton")).name, run
    from hybridpose.data.datasets import load_dataset
    from hybridpose.data.folds import make_folds
    from hybridpose.pose.frontend import extract

    ds = load_dataset(args.data)
    poses = extract(ds.paths, cache_dir=tmp / "cache", show_progress=False, skeleton=args.skeleton)
    folds = make_folds([str(p) for p in ds.paths], ds.labels, args.folds, seed=0)
    return poses, folds, args.skeleton, None


def run_fused(run: Path, paths: pd.Series) -> np.ndarray:
    """The run's out-of-fold fused leaf label per photo, in the order of ``paths``."""
    from hybridpose.data.hierarchy import Hierarchy
    from hybridpose.run.folder import RunFolder
    from hybridpose.run.predtable import argmax_labels, read_probs

    folder = RunFolder(run)
    h = Hierarchy.from_dict(folder.read_config()["hierarchy"])
    oof = pd.read_csv(folder.oof, keep_default_na=False, na_values=[""])
    pred = pd.Series(argmax_labels(read_probs(oof, "fused", h.leaf_level, h.leaves), h.leaves), index=oof["path"])
    return pred.reindex(paths.to_numpy()).to_numpy(dtype=object)


def paired(fused_right: np.ndarray, base_right: np.ndarray) -> dict:
    """Photos only the fused model gets right, only the baseline gets right, and the two-sided exact McNemar p
    (sign test on those discordant photos): how much of a top-1 difference is more than chance."""
    from scipy.stats import binomtest

    wins, losses = int(np.sum(fused_right & ~base_right)), int(np.sum(~fused_right & base_right))
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"fused_only": wins, "baseline_only": losses, "mcnemar_p": round(float(p), 4)}


def run_numbers(run: Path) -> dict[str, float]:
    from hybridpose.data.hierarchy import Hierarchy
    from hybridpose.run.folder import RunFolder
    from hybridpose.run.predtable import argmax_labels, read_probs, rules_column, true_column

    folder = RunFolder(run)
    config = folder.read_config()
    h = Hierarchy.from_dict(config["hierarchy"])
    oof = pd.read_csv(folder.oof, keep_default_na=False, na_values=[""])
    y = oof[true_column(h.leaf_level)].astype(str).to_numpy()
    out = {}
    for branch in [*config.get("branches", []), "fused"]:
        try:
            pred = np.array(argmax_labels(read_probs(oof, branch, h.leaf_level, h.leaves), h.leaves), dtype=object)
        except (KeyError, ValueError):
            continue
        out[f"run: {branch}"] = float(np.mean(pred == y))
    if rules_column(h.leaf_level) in oof:
        out["run: fused + rules"] = float(np.mean(oof[rules_column(h.leaf_level)].astype(str).to_numpy() == y))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a fitted run: its poses.csv and folds.csv (the same keypoints and folds)")
    ap.add_argument("--data", help="else: a labelled image folder, extracted here")
    ap.add_argument("--skeleton", default="hand", help="with --data: the skeleton (default hand)")
    ap.add_argument("--folds", type=int, default=5, help="with --data: number of folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "tests/data/hands, 2 folds")
    args = ap.parse_args(argv)
    tmp = _common.setup_env()
    if args.smoke:
        _common.apply_smoke(args, data=str(_common.REPO / "tests" / "data" / "hands"), run=None, folds=2)
    if not args.run and not args.data:
        ap.error("give --run RUN or --data DIR")
    from hybridpose.pose.frontend import keypoints_array
    from hybridpose.skeletons import get_skeleton

    poses, folds, skeleton, run = load(args, Path(tmp.name))
    if list(poses["path"]) != list(folds["path"]):
        sys.exit("poses.csv and folds.csv list other photos")
    sk = get_skeleton(skeleton)
    kp = keypoints_array(poses, sk)
    found = sk.found(kp) & np.isfinite(kp[..., :2]).all(axis=(1, 2))
    y, fold = folds["label"].astype(str).to_numpy(), folds["fold"].to_numpy()
    classes = np.array(sorted(set(y)))
    yi = np.searchsorted(classes, y)
    inputs = {"coords": np.nan_to_num(coords(kp)), "features": np.nan_to_num(sk.features(kp).to_numpy(np.float64))}
    print(f"{len(y)} photos, {len(classes)} classes, {len(np.unique(fold))} folds, skeleton {sk.name}; "
          f"keypoints found in {found.sum()} ({found.mean():.1%})\n")
    has_run = run is not None and (run / "oof_predictions.csv").exists()
    fused_right = run_fused(run, folds["path"]) == y if has_run else None
    rows, results = [], {}
    for input_name, X in inputs.items():
        for name, make in models(args.seed).items():
            pred = out_of_fold(X, yi, fold, found, make)
            all_ = float(np.mean(pred == yi))
            on_found = float(np.mean(pred[found] == yi[found])) if found.any() else float("nan")
            results[f"{name} on {input_name}"] = r = {"top1_all": all_, "top1_found": on_found}
            if has_run:
                r["vs_fused"] = paired(fused_right, pred == yi)
            rows.append([f"{name} on {input_name}", round(all_, 4), round(on_found, 4),
                         *((f"{r['vs_fused']['fused_only']} / {r['vs_fused']['baseline_only']}",
                            r["vs_fused"]["mcnemar_p"]) if has_run else ())])
    if has_run:
        for name, value in run_numbers(run).items():
            results[name] = {"top1_all": value}
            rows.append([name, round(value, 4), "", "", ""])
    head = ["model", "top-1 all", "top-1 found", *(["only fused / only it right", "McNemar p"] if has_run else [])]
    _common.print_table("Out-of-fold top-1 (leaf level), same keypoints and folds", head, rows)
    if args.smoke:
        _common.smoke_check(all(0.0 <= r["top1_all"] <= 1.0 for r in results.values()), "a top-1 outside [0, 1]")
        _common.smoke_check(len(results) == 2 * len(models(0)), f"{len(results)} results")
    payload = {"benchmark": "baselines", "smoke": args.smoke, "run": str(run) if run else None,
               "data": args.data, "skeleton": sk.name, "n_photos": int(len(y)), "found": int(found.sum()),
               "results": results}
    return _common.finish(args, payload)


if __name__ == "__main__":
    main()
