"""`hybridpose fit`: the whole training run, fold by fold, resumable.

Finished stages (``fold_k/stageN.pt``) and folds (``fold_k/done.json``) are skipped on a rerun
of the same command, so an interrupted run loses at most the stage in progress.
"""
from __future__ import annotations

import hashlib
import warnings
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import atomic
from ..datasets import Dataset, load_dataset
from ..errors import RunError
from ..folds import make_folds
from ..fusion import Fusion, cross_fitted, to_level
from ..hierarchy import Hierarchy
from ..keypoint_model import KeypointClassifier
from ..pose import extract, keypoints_array
from ..progress import log, progress_bar
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, make_config
from .data import Augmenter, build_crop_bank
from .model import build_model, pick_device
from .stages import Labels, evaluate, predict_bank, train_stage

RUN_FORMAT = "hybridpose-run"


def bank_size(cfg: TrainConfig) -> int:
    """Cache resolution so that the evaluation framing is not upsampled."""
    return int(np.ceil(cfg.input_size * (1 + 2 * cfg.train_margin[1]) / (1 + 2 * cfg.eval_margin) / 8) * 8)


def level_sizes(h: Hierarchy) -> dict[str, int]:
    return {lv: len(h.classes(lv)) for lv in h.levels}


def make_labels(ds: Dataset) -> Labels:
    h = ds.hierarchy
    index = {c: i for i, c in enumerate(h.leaves)}
    return Labels(np.array([index[y] for y in ds.labels]), {lv: h.leaf_to_level(lv).argmax(1) for lv in h.levels})


def flip_map(ds: Dataset) -> np.ndarray:
    index = {c: i for i, c in enumerate(ds.hierarchy.leaves)}
    return np.array([index[ds.flip_pairs.get(c, c)] for c in ds.hierarchy.leaves])


@dataclass
class RunContext:
    out: Path
    ds: Dataset
    cfg: TrainConfig
    k: int
    run_id: str
    device: torch.device
    show_progress: bool


def fit(data: str | Path, out: str | Path, *, folds: int = 5, preset: str = "quick", hierarchy: str | Path | None = None,
        images: str | Path | None = None, flip_pairs: str | None = None, workers: int = 1,
        cache_dir: str | Path | None = None, show_progress: bool = True, **overrides) -> dict:
    """Train the image branch per fold, the keypoint branch and the fusion; returns the summary dict."""
    t0 = time.perf_counter()
    out = Path(out)
    ds = load_dataset(data, hierarchy=hierarchy, images=images, flip_pairs=flip_pairs)
    cfg = make_config(preset, **overrides)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ctx = RunContext(out, ds, cfg, folds, "", pick_device(cfg.device), show_progress)
    ctx.run_id = _write_config(ctx, data)
    log(f"[bold]fit[/] {len(ds)} photos, {len(ds.hierarchy.leaves)} classes, levels {ds.hierarchy.levels}, "
        f"{folds} folds, preset {cfg.preset}, device {ctx.device} -> {out}")
    poses = extract(ds.paths, cache_dir=cache_dir, workers=workers, show_progress=show_progress)
    atomic.write_csv(out / "poses.csv", poses)
    fold_table = _folds(ctx)
    bank = build_crop_bank(poses, bank_size(cfg), cfg.train_margin[1], out / f"crops_{bank_size(cfg)}.npz", show_progress)
    labels = make_labels(ds)
    fold_of = fold_table["fold"].to_numpy()
    for k in range(1, folds + 1):
        train_fold(ctx, k, bank, labels, fold_of, fold_table["group"].to_numpy())
    summary = finish(ctx, poses, fold_of)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic.write_json(out / "summary.json", summary)
    return summary


def _config_dict(ctx: RunContext, data) -> dict:
    return {"format": RUN_FORMAT, "version": 1, "data": str(data), "n_images": len(ctx.ds), "folds": ctx.k,
            "train": ctx.cfg.to_dict(), "hierarchy": ctx.ds.hierarchy.to_dict(), "flip_pairs": ctx.ds.flip_pairs}


def _write_config(ctx: RunContext, data) -> str:
    cfg = _config_dict(ctx, data)
    ident = {k: v for k, v in cfg.items() if k not in ("data",)}
    ident["train"] = {k: v for k, v in cfg["train"].items() if k not in ("device", "num_threads")}
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = ctx.out / "config.json"
    if path.exists():
        try:
            old = atomic.read_json(path)
        except ValueError:
            raise RunError(f"{path}: damaged; delete the run directory or use another --out.") from None
        if old.get("format") != RUN_FORMAT:
            raise RunError(f"{path}: not a hybridpose run; use another --out.")
        if old.get("run_id") != run_id:
            raise RunError(
                f"{ctx.out} holds a run with other settings (data, classes, folds or training config differ); "
                "use another --out, or delete it to start over."
            )
    cfg["run_id"] = run_id
    atomic.write_json(path, cfg)
    return run_id


def _folds(ctx: RunContext) -> pd.DataFrame:
    path = ctx.out / "folds.csv"
    paths = [str(p) for p in ctx.ds.paths]
    if path.exists():
        table = pd.read_csv(path)
        if list(table["path"]) == paths:
            return table
        raise RunError(f"{path}: lists other photos than {ctx.ds.root}; use another --out.")
    table = make_folds(paths, ctx.ds.labels, ctx.k, ctx.cfg.seed)
    atomic.write_csv(path, table)
    return table


def train_fold(ctx: RunContext, k: int, bank, labels: Labels, fold_of: np.ndarray, groups: np.ndarray) -> None:
    fold_dir = ctx.out / f"fold_{k}"
    if (fold_dir / "done.json").exists():
        return
    cfg, h = ctx.cfg, ctx.ds.hierarchy
    train_idx, val_idx = np.nonzero(fold_of != k)[0], np.nonzero(fold_of == k)[0]
    # Early stopping looks at an inner split of the training photos, never at the out-of-fold ones,
    # so the out-of-fold predictions (and the fusion and rules fitted on them) stay honest.
    fit_idx, stop_idx = inner_split(train_idx, labels.leaf, groups, cfg.inner_val_fraction, cfg.seed + k)
    model, info = build_model(cfg.backbone, level_sizes(h), weights=cfg.weights, pretrained=cfg.pretrained,
                              freeze_fraction=cfg.freeze_fraction)
    model.to(ctx.device)
    if ctx.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    aug = Augmenter(bank, cfg.input_size, info["mean"], info["std"], ctx.device, train_margin=cfg.train_margin,
                    eval_margin=cfg.eval_margin, rotation=cfg.rotation_degrees, flip_map=flip_map(ctx.ds), seed=cfg.seed + k)
    history = _read_history(fold_dir)
    oof_rows, oof_eval = {}, None
    for stage in (1, 2, 3):
        ckpt_path = fold_dir / f"stage{stage}.pt"
        if ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path, run_id=ctx.run_id, fold=k, stage=stage)
            model.load_state_dict(ckpt["state_dict"])
            oof_rows[stage], oof_eval = ckpt["meta"].get("oof", {}), None
            continue
        history = [r for r in history if r["stage"] != stage]
        epochs = cfg.stage(stage).epochs
        with progress_bar(f"fold {k}/{ctx.k} stage {stage}", total=epochs, enabled=ctx.show_progress) as advance:
            def on_epoch(row):
                history.append({"fold": k, **row})
                atomic.write_csv(fold_dir / "metrics.csv", pd.DataFrame(history))
                advance(info=f"val acc {row['val_acc']:.3f} f1 {row['val_macro_f1']:.3f} {row['images_per_s']:.0f} img/s")
            result = train_stage(stage, model, aug, labels, fit_idx, stop_idx, cfg, ctx.device,
                                 seed=cfg.seed * 100 + k * 10 + stage, on_epoch=on_epoch)
        oof_eval = evaluate(model, aug, labels, val_idx, cfg, ctx.device)
        oof_rows[stage] = oof_eval.metrics
        save_checkpoint(ckpt_path, run_id=ctx.run_id, fold=k, stage=stage, state_dict=result.state,
                        meta={"best": result.best, "best_epoch": result.best_epoch, "oof": oof_rows[stage],
                              **_model_meta(ctx, info)})
    # the final model's out-of-fold pass was just made, unless stage 3 was resumed from its checkpoint
    res = oof_eval or predict_bank(model, aug, val_idx, cfg, ctx.device, with_cam=True, labels_leaf=labels.leaf)
    _write_oof_image(fold_dir / "oof_image.csv", ctx, val_idx, res)
    atomic.write_json(fold_dir / "done.json", {
        "fold": k, "n_train": len(fit_idx), "n_early_stopping": len(stop_idx), "n_out_of_fold": len(val_idx),
        "oof_acc": {s: r.get("val_acc") for s, r in oof_rows.items()},
        "cam_inside": {s: r.get("cam_inside") for s, r in oof_rows.items()},
    })


def inner_split(train_idx: np.ndarray, leaf: np.ndarray, groups: np.ndarray, fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, early-stopping) rows of a fold's training photos: stratified, near-duplicates kept together."""
    from sklearn.model_selection import StratifiedGroupKFold

    if fraction <= 0:
        return train_idx, train_idx
    y, g = leaf[train_idx], groups[train_idx]
    n_splits = max(2, min(int(round(1 / fraction)), len(np.unique(g)), int(np.bincount(y).max())))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members": fine here
        fit, stop = next(splitter.split(np.zeros(len(y)), y, g))
    return train_idx[fit], train_idx[stop]


def _model_meta(ctx: RunContext, info: dict) -> dict:
    h = ctx.ds.hierarchy
    return {"backbone": ctx.cfg.backbone, "input_size": ctx.cfg.input_size, "eval_margin": ctx.cfg.eval_margin,
            "mean": list(info["mean"]), "std": list(info["std"]), "weights_source": info["weights_source"],
            "levels": {lv: h.classes(lv) for lv in h.levels}}


def _read_history(fold_dir: Path) -> list[dict]:
    path = fold_dir / "metrics.csv"
    return pd.read_csv(path).to_dict("records") if path.exists() else []


def _write_oof_image(path: Path, ctx: RunContext, idx: np.ndarray, res) -> None:
    h = ctx.ds.hierarchy
    cols = {"path": [str(ctx.ds.paths[i]) for i in idx], "cam_inside": res.cam_inside}
    for lv in h.levels:
        for j, c in enumerate(h.classes(lv)):
            cols[f"image:{lv}:{c}"] = res.probs[lv][:, j]
    atomic.write_csv(path, pd.DataFrame(cols))


def keypoint_oof(ctx: RunContext, poses: pd.DataFrame, fold_of: np.ndarray) -> tuple[np.ndarray, KeypointClassifier]:
    """Out-of-fold leaf probabilities of the keypoint branch on the same folds, and the model fitted on all."""
    X = keypoints_array(poses)
    y = np.array(ctx.ds.labels)
    leaves = ctx.ds.hierarchy.leaves
    oof = np.full((len(X), len(leaves)), np.nan)
    for k in range(1, ctx.k + 1):
        tr, va = fold_of != k, fold_of == k
        model = KeypointClassifier(flip_pairs=ctx.ds.flip_pairs, seed=ctx.cfg.seed).fit(X[tr], y[tr], classes=leaves)
        oof[va] = model.predict_proba(X[va])
    final = KeypointClassifier(flip_pairs=ctx.ds.flip_pairs, seed=ctx.cfg.seed).fit(X, y, classes=leaves)
    return oof, final


def finish(ctx: RunContext, poses: pd.DataFrame, fold_of: np.ndarray) -> dict:
    """Keypoint branch, fusion, oof_predictions.csv, training curves and the summary."""
    h, out = ctx.ds.hierarchy, ctx.out
    image = _read_oof_image(ctx)
    kp_leaf, kp_model = keypoint_oof(ctx, poses, fold_of)
    kp_model.save(out / "keypoint_model.json")
    y_leaf = make_labels(ctx.ds).leaf
    fusion = Fusion(h).fit(image, kp_leaf, y_leaf)
    atomic.write_json(out / "fusion.json", fusion.to_dict())
    fused = cross_fitted(h, image, kp_leaf, y_leaf, fold_of)  # honest: fusion fitted on the other folds
    frame = oof_frame(ctx.ds, poses, fold_of, image, kp_leaf, fused)
    atomic.write_csv(out / "oof_predictions.csv", frame)
    from .curves import plot_training_curves

    plot_training_curves(out)
    return summarize_oof(frame, h, ctx)


def _read_oof_image(ctx: RunContext) -> dict[str, np.ndarray]:
    h = ctx.ds.hierarchy
    parts = pd.concat([pd.read_csv(ctx.out / f"fold_{k}" / "oof_image.csv") for k in range(1, ctx.k + 1)])
    parts = parts.set_index("path").loc[[str(p) for p in ctx.ds.paths]]
    return {lv: parts[[f"image:{lv}:{c}" for c in h.classes(lv)]].to_numpy() for lv in h.levels}


def oof_frame(ds: Dataset, poses: pd.DataFrame, fold_of: np.ndarray, image: dict, kp_leaf: np.ndarray,
              fused: dict) -> pd.DataFrame:
    h = ds.hierarchy
    cols: dict[str, object] = {"path": [str(p) for p in ds.paths], "fold": fold_of, "status": poses["status"].to_numpy()}
    for lv in h.levels:
        cols[f"true_{lv}"] = ds.level_labels(lv)
    branches = {"image": image, "keypoint": {lv: to_level(kp_leaf, h, lv) for lv in h.levels}, "fused": fused}
    for name, probs in branches.items():
        for lv in h.levels:
            for j, c in enumerate(h.classes(lv)):
                cols[f"{name}:{lv}:{c}"] = probs[lv][:, j]
    fused_leaf = [h.leaves[i] for i in fused[h.leaf_level].argmax(1)]
    for name, probs in branches.items():
        for lv in h.levels:
            p, names = probs[lv], h.classes(lv)
            ok = np.isfinite(p).all(1)
            if name == "fused":  # the leaf decides, its ancestors follow: levels never disagree
                cols[f"pred_{name}_{lv}"] = [h.ancestor(leaf, lv) for leaf in fused_leaf]
            else:
                cols[f"pred_{name}_{lv}"] = [names[i] if o else "" for i, o in zip(np.nan_to_num(p).argmax(1), ok)]
    return pd.DataFrame(cols)


def summarize_oof(frame: pd.DataFrame, h: Hierarchy, ctx: RunContext) -> dict:
    top1 = {}
    for name in ("image", "keypoint", "fused"):
        top1[name] = {}
        for lv in h.levels:
            pred, true = frame[f"pred_{name}_{lv}"], frame[f"true_{lv}"]
            top1[name][lv] = round(float((pred == true).mean()), 4)  # abstentions count as wrong
    cam = {}
    for k in range(1, ctx.k + 1):
        done = atomic.read_json(ctx.out / f"fold_{k}" / "done.json")
        for s, v in done["cam_inside"].items():
            cam.setdefault(f"stage{s}", []).append(v)
    return {"n_images": len(frame), "oof_top1": top1,
            "cam_inside_oof": {s: round(float(np.nanmean(v)), 4) for s, v in cam.items()}}
