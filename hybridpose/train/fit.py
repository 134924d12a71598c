"""`hybridpose fit`: the whole training run in three steps that talk only through the run folder.

* ``prepare``: checks the data and options, then writes ``config.json``, ``poses.csv``, ``folds.csv``
  and the crop cache;
* ``train_fold(run, k)``: the three image-branch stages of fold k, reading the prepared files and
  writing ``fold_k/``; it can run in another process or on another machine;
* ``finish(run)``: the other branches' out-of-fold predictions, the fusion, ``oof_predictions.csv``.

Finished stages (``fold_k/stageN.pt``) and folds (``fold_k/done.json``) are skipped on a rerun
of the same command, so an interrupted run loses at most the stage in progress; each stage draws
its random numbers from its own seed, so the resumed run is the one an uninterrupted run would
have been. A skipped checkpoint must be a whole file of this run (a damaged one is trained again,
with the fold's later stages). A rerun on a finished run (``summary.json``) rewrites nothing.
"""
from __future__ import annotations

import functools
import time
import warnings
import zipfile
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .. import atomic
from ..branches import DEFAULT_BRANCHES
from ..branches.image import Preprocessing
from ..data.datasets import (
    Dataset,
    check_classes,
    leave_out_unusable,
    left_out_warning,
    load_dataset,
    undeclared_mirror_pairs,
)
from ..data.folds import check_fold_counts, make_folds
from ..data.hierarchy import Hierarchy
from ..defaults import DEFAULTS
from ..errors import ConfigError, RunError
from ..executors import Executor, Resources, get_executor, warm_pose_cache
from ..fusion import read_fusion, select
from ..nets.network import build_model, load_checkpoint, pick_device, save_checkpoint
from ..pose.frontend import PERSON_CHOICES, choose_person, extract, keypoints_array
from ..pose.keypoint_file import keypoint_source
from ..progress import console, log, progress_bar
from ..run.crossfit import cross_fitted as cross_fit
from ..run.folder import RunFolder
from ..run.oof import load_oof
from ..run.predtable import table as prediction_table
from ..skeletons import get_skeleton
from ..tracking import Tracker, tracking_uri
from .clips import finish_clips, prepare_clips, read_groups
from .config import TrainConfig, make_config
from .data import Augmenter, build_crop_bank
from .prepared import (
    STAGES,
    Prepared,
    bank_size,
    cam_inside,
    chance_level,
    config_dict,
    finished_with,
    new_branch,
    top1,
    warn_branches_at_chance,
    warn_if_chance,
    write_config,
)
from .stages import evaluate, predict_bank, stage_seed, train_stage


def _keeps_threads(fn):
    """``torch.set_num_threads`` calls inside ``fn`` end with it: the caller's process keeps its own count."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper

def fit(data: str | Path, out: str | Path, *, folds: int = DEFAULTS.folds, preset: str = DEFAULTS.preset, hierarchy: str | Path | None = None,
        images: str | Path | None = None, flip_pairs: str | None = None, workers: int = DEFAULTS.pose_workers,
        cache_dir: str | Path | None = None, show_progress: bool = True, skeleton: str = DEFAULTS.skeleton,
        executor: str | Executor = "local", address: str | None = None, cpus_per_fold: float = 1,
        gpus_per_fold: float = 0, retries: int = 2, on_epoch: Callable[[dict], None] | None = None,
        clips: dict | None = None, keypoints: str | Path | None = None, keypoint_units: str = "pixels",
        max_people: int = 1, person: str = DEFAULTS.person, track: str | Tracker | None = None,
        second_look: bool = False, **overrides) -> dict:
    """Train the image branch per fold, the other branches and the fusion; returns the summary dict.

    ``executor``: where the folds run (``hybridpose.executors``: ``local``, ``ray``); ``on_epoch``
    is called with every epoch's metrics row (``fold``, ``stage``, ``epoch``, ``val_macro_f1``, ...),
    in this process (local executor only). ``clips`` (``{"fps": , "frames": , "groups": , "force": }``,
    see ``clipfit``): samples are clips; data holding a video is always clips. ``max_people`` > 1: the
    multi-person pose model, each photo's label given to its ``person`` (largest or center). ``second_look``: a
    photo where nobody (no hand) is found gets the pose model's second look, recorded in the run (predict does the
    same unless told otherwise). On a run already finished
    with these settings nothing is done or written: its summary comes back, with ``already_complete``.
    ``track``: an MLflow tracking URI (default ``$HYBRIDPOSE_TRACKING_URI``; docs/TRACKING.md), or a
    ``tracking.Tracker`` whose run this fit logs into; a tracking failure is a warning, never the fit's."""
    t0 = time.perf_counter()
    tracker = track if isinstance(track, Tracker) else Tracker(tracking_uri(track), Path(out).name)  # before any work
    ex = get_executor(executor, address=address)
    with tracker:
        try:
            ex.check(Resources(cpus_per_fold, gpus_per_fold), "fold")  # before any work
            run = prepare(data, out, folds=folds, preset=preset, hierarchy=hierarchy, images=images,
                          flip_pairs=flip_pairs, workers=workers, cache_dir=cache_dir, show_progress=show_progress,
                          skeleton=skeleton, executor=ex, clips=clips, keypoints=keypoints,
                          keypoint_units=keypoint_units, max_people=max_people, person=person,
                          second_look=second_look, **overrides)
            _track_start(tracker, run)
            trained = train_folds(run, ex, resources=Resources(cpus_per_fold, gpus_per_fold), retries=retries,
                                  show_progress=show_progress, on_epoch=tracker.epoch_logger(on_epoch))
        finally:
            if ex is not executor:
                ex.close()
        if not trained and run.summary.exists():  # written last; a fold trained since would have removed it
            damaged = damaged_output(run)
            if damaged is None:
                _say(f"{run.root}: the run is complete (every fold's checkpoints checked); nothing to do. "
                     "To train again, use another --out.")
                return _track_end(tracker, run, {**atomic.read_json(run.summary), "already_complete": True})
            _say(f"{damaged}: damaged; finishing the run again from its folds (nothing is retrained).")
        summary = finish(run)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        atomic.write_json(run.summary, summary)
        return _track_end(tracker, run, summary)


def _track_start(tracker: Tracker, run: RunFolder) -> None:
    """The MLflow run's tags and parameters, once config.json is written (nothing when tracking is off)."""
    if tracker.enabled:
        from ..tracking.runs import config_params, run_tags

        config = run.read_config()
        tracker.set_tags(run_tags(run, config, "fit"))
        tracker.params(config_params(config))


def _track_end(tracker: Tracker, run: RunFolder, summary: dict) -> dict:
    """The finished run's figures, files and model to its MLflow run; ``summary["tracking"]`` says where."""
    if not tracker.enabled:
        return summary
    from ..tracking.model import log_model
    from ..tracking.runs import log_fit

    log_fit(tracker, run, summary)
    if tracker.with_model:
        log_model(tracker, run)
    if tracker.enabled:
        tracker.say_where()
        return {**summary, "tracking": {"uri": tracker.uri, "run_id": tracker.run_id}}
    return summary


def train_folds(run: RunFolder | str | Path, executor: str | Executor = "local", *, resources: Resources | None = None,
                retries: int = 2, show_progress: bool = True, on_epoch: Callable[[dict], None] | None = None) -> list[int]:
    """Every unfinished fold of a prepared run, on ``executor`` (a Ray task each, retried ``retries`` times
    when its worker dies; finished stages are kept). Returns the folds trained."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    config = run.read_config()
    todo = [i for i in range(1, int(config["folds"]) + 1) if not fold_finished(run, i, config)]
    ex = get_executor(executor)
    remote = ex.distributed
    task = partial(fold_task, str(run.root.resolve()) if remote else run, show_progress=show_progress and not remote,
                   on_epoch=None if remote else on_epoch, threads=int((resources or Resources()).cpus) if remote else 0)
    return [fold for fold, _ in ex.map(task, todo, resources=resources, retries=retries, desc="folds",
                                        show_progress=show_progress and remote)]


@_keeps_threads
def fold_task(run: RunFolder | str, k: int, *, show_progress: bool = False, on_epoch=None, threads: int = 0) -> int:
    """One fold as an executor's piece (importable by name, so a Ray worker can run it)."""
    if not Path(getattr(run, "root", run)).exists():
        import socket

        raise RunError(f"{run}: not visible on worker {socket.gethostname()}; on a cluster of several machines "
                       "put --out on a filesystem every node mounts at the same path.")
    if threads and not TrainConfig.from_dict(RunFolder(run).read_config()["train"]).num_threads:
        torch.set_num_threads(threads)  # the cores the task was given, not the whole machine's
    train_fold(run, k, show_progress=show_progress, on_epoch=on_epoch)
    return k


def usable_stages(run: RunFolder, k: int, config: dict) -> int:
    """How many of fold ``k``'s stages, from the first, have a checkpoint to resume from: up to the first one
    missing or damaged. A whole checkpoint of another run or fold is a RunError."""
    for stage in STAGES:
        path = run.checkpoint(k, stage)
        if not (path.exists() and _whole(path)):
            return stage - 1
        load_checkpoint(path, run_id=config["run_id"], fold=k, stage=stage, fix=run.fit_command(config))
    return len(STAGES)


def _whole(path: Path) -> bool:
    """A checkpoint is a zip archive (torch.save's format): a truncated or altered one fails to open or its CRCs."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, EOFError):
        return False


def fold_finished(run: RunFolder, k: int, config: dict | None = None) -> bool:
    """``fold_k/done.json`` and the fold's checkpoints, each a whole file of this run's fold ``k``; a damaged
    checkpoint is said in one line (the fold is trained again from its stage)."""
    config = config if config is not None else run.read_config()
    stage = usable_stages(run, k, config) + 1
    if stage <= len(STAGES) and run.checkpoint(k, stage).exists():
        _say(f"[yellow]{run.checkpoint(k, stage)}: damaged (not a whole checkpoint file); fold {k} is trained again "
             f"from stage {stage}.[/]")
    return stage > len(STAGES) and run.fold_done(k).exists()


def damaged_output(run: RunFolder) -> Path | None:
    """The first of the finish step's outputs (fusion.json, the out-of-fold table) that does not read back
    whole, or None; what the error commands that read them say to fix ("run fit again") then works."""
    config = run.read_config()
    h = Hierarchy.from_dict(config["hierarchy"])
    checks = ((run.fusion, lambda: read_fusion(run.fusion, h, config.get("branches", DEFAULT_BRANCHES), "")),
              (run.oof, lambda: load_oof(run.root)))
    for path, check in checks:
        try:
            check()
        except RunError:
            return path
    return None


def _say(message: str) -> None:
    console.print(message, soft_wrap=True)  # one line however long the path: a script may read it


# --------------------------------------------------------------------------- prepare


def prepare(data: str | Path, out: str | Path, *, folds: int = DEFAULTS.folds, preset: str = DEFAULTS.preset,
            hierarchy: str | Path | None = None, images: str | Path | None = None, flip_pairs: str | None = None,
            workers: int = DEFAULTS.pose_workers, cache_dir: str | Path | None = None, show_progress: bool = True,
            skeleton: str = DEFAULTS.skeleton, executor: Executor | None = None, clips: dict | None = None,
            keypoints: str | Path | None = None, keypoint_units: str = "pixels", max_people: int = 1,
            person: str = DEFAULTS.person, second_look: bool = False, **overrides) -> RunFolder:
    """Check everything, then write config.json, poses.csv, folds.csv and the crop cache.

    A distributed ``executor`` runs the pose model on its workers first (into the pose cache)."""
    run = RunFolder(out)
    cfg = make_config(preset, **overrides)  # options first, then the data, all before anything is written
    sk = get_skeleton(skeleton)
    _check_people(max_people, person)
    if _is_clip_data(data, images, clips):
        if second_look:
            raise ConfigError("--second-look is for photos: a clip's frames always get one (a frame with nobody "
                              "found is looked at again); leave it out.")
        from ..data.video import Sampling

        c = clips or {}
        sampling = Sampling(fps=c.get("fps") or DEFAULTS.fps, n=c.get("frames") or 0,
                            min_frames=DEFAULTS.min_frames if c.get("min_frames") is None else c["min_frames"])
        return prepare_clips(data, out, folds=folds, cfg=cfg, skeleton=sk, hierarchy=hierarchy, groups=c.get("groups"),
                             sampling=sampling, workers=workers, cache_dir=cache_dir, show_progress=show_progress,
                             image_frames=DEFAULTS.image_frames if c.get("image_frames") is None else c["image_frames"])
    ds = load_dataset(data, hierarchy=hierarchy, images=images, flip_pairs=flip_pairs)
    leave_out_unusable(ds)
    check_classes(ds)  # before anything is written
    check_fold_counts(ds.labels, folds, "photos")
    user_groups = _user_groups(ds, (clips or {}).get("groups"))
    source = keypoint_source(keypoints, sk, keypoint_units, ds.paths, data)
    config = config_dict(ds, cfg, folds, data, sk)
    if source is not None:
        config["keypoints"] = source.describe()
    elif max_people > 1:
        config["people"] = {"max_people": max_people, "person": person}
    if second_look and source is None:
        config["second_look"] = True
    if finished_with(run, config):
        return run  # nothing to prepare again, nothing rewritten; fit checks the folds and says it is complete
    _warn_undeclared_mirrors(ds)  # after every check: an error stays the only line
    write_config(run, config)
    _report_left_out(run, ds)
    log(f"[bold]fit[/] {len(ds)} photos, {len(ds.hierarchy.leaves)} classes, levels {ds.hierarchy.levels}, "
        f"{folds} folds, preset {cfg.preset}, skeleton {sk.name}, device {pick_device(cfg.device)} -> {run.root}")
    if source is not None:
        poses = source.extract(ds.paths, show_progress=show_progress)
    else:
        if executor is not None and executor.distributed:
            warm_pose_cache(executor, ds.paths, skeleton=sk, cache_dir=cache_dir, show_progress=show_progress)
        poses = extract(ds.paths, cache_dir=cache_dir, workers=workers, show_progress=show_progress, skeleton=sk,
                        max_people=max_people, second_look=second_look)
        if max_people > 1:
            poses, several = choose_person(poses, person)
            log(f"{several} of {len(poses)} training photos show more than one person; each label goes to the "
                f"{person} one (--person).")
    atomic.write_csv(run.poses, poses)
    _write_folds(run, ds, folds, cfg.seed, user_groups)
    build_crop_bank(poses, bank_size(cfg), cfg.train_margin[1], sk, run.crops(bank_size(cfg)), show_progress)
    return run


def _check_people(max_people: int, person: str) -> None:
    if max_people < 1:
        raise ConfigError(f"--max-people {max_people}: give 1 or more.")
    if person not in PERSON_CHOICES:
        raise ConfigError(f"--person {person!r}: choose one of {', '.join(PERSON_CHOICES)}.")


def _warn_undeclared_mirrors(ds: Dataset) -> None:
    pairs = undeclared_mirror_pairs(ds.hierarchy.leaves, ds.flip_pairs)
    if pairs:
        spec = ",".join(f"{a}:{b}" for a, b in pairs)
        log(f"[yellow]warning: classes {', '.join(f'{a!r}/{b!r}' for a, b in pairs)} look like mirror images of each "
            f"other, but are not declared flip pairs: flip augmentation will train a mirrored photo of one as "
            f"itself. If a mirrored photo of one is the other, stop and add --flip-pairs {spec}.[/yellow]")


def _report_left_out(run: RunFolder, ds: Dataset) -> None:
    """RUN/left_out.csv and one warning line, when files of the data were left out of training."""
    run.left_out.unlink(missing_ok=True)  # an earlier fit's list
    if ds.left_out:
        from rich.markup import escape

        atomic.write_csv(run.left_out, pd.DataFrame(ds.left_out, columns=["path", "reason"]).astype(str))
        log(f"[yellow]{escape(left_out_warning(ds, run.left_out))}[/yellow]", soft_wrap=True)


def _is_clip_data(data, images, clips: dict | None) -> bool:
    if images or Path(data).is_file():
        return False
    from ..data.clips import has_videos

    return bool(clips and clips.get("force")) or has_videos(data)


def _user_groups(ds: Dataset, groups_file) -> dict[str, str] | None:
    """``--groups FILE`` for photos: read (and checked) before any work."""
    if not groups_file:
        return None
    return read_groups(groups_file, ds.root)


def _write_folds(run: RunFolder, ds: Dataset, k: int, seed: int, user_groups: dict[str, str] | None = None) -> pd.DataFrame:
    paths = [str(p) for p in ds.paths]
    if run.folds.exists():
        table = pd.read_csv(run.folds)
        if list(table["path"]) == paths:
            return table
        raise RunError(f"{run.folds}: lists other photos than {ds.root}; use another --out.")
    groups = None
    if user_groups:  # the user's group where given, else the near-duplicate group
        from ..data.folds import duplicate_groups, phash

        dup = duplicate_groups([phash(p) for p in ds.paths])
        names = [user_groups.get(str(Path(p).resolve()), f"dup{g}") for p, g in zip(ds.paths, dup)]
        groups = np.unique(names, return_inverse=True)[1]
    table = make_folds(paths, ds.labels, k, seed, groups=groups)
    atomic.write_csv(run.folds, table)
    return table


def load_prepared(run: RunFolder | str | Path) -> Prepared:
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    config = run.read_config()
    folds = pd.read_csv(run.require(run.folds, "written by the prepare step"), keep_default_na=False, na_values=[""])
    folds["label"] = folds["label"].astype(str)
    poses = pd.read_csv(run.require(run.poses, "written by the prepare step"), keep_default_na=False, na_values=[""])
    return Prepared(run, config, TrainConfig.from_dict(config["train"]), Hierarchy.from_dict(config["hierarchy"]),
                    get_skeleton(config.get("skeleton")), dict(config.get("flip_pairs") or {}), folds, poses)


# --------------------------------------------------------------------------- one fold


@_keeps_threads
def train_fold(run: RunFolder | str | Path, k: int, *, device: str | None = None, show_progress: bool = True,
               on_epoch: Callable[[dict], None] | None = None) -> None:
    """The three stages of fold ``k``; finished stages and folds are skipped. ``on_epoch(row)`` after every epoch."""
    p = load_prepared(run)
    run = p.run
    resume = usable_stages(run, k, p.config)  # stages after these, missing or damaged, are trained (again)
    if resume == len(STAGES) and run.fold_done(k).exists():
        return
    run.summary.unlink(missing_ok=True)  # the run is not finished until finish() runs again
    cfg, labels, fold_of = p.cfg, p.labels, p.fold_of
    if cfg.num_threads:  # here, not in prepare: the fold may run in another process
        torch.set_num_threads(cfg.num_threads)
    dev = pick_device(device or cfg.device)
    bank = build_crop_bank(p.poses, bank_size(cfg), cfg.train_margin[1], p.skeleton, run.crops(bank_size(cfg)), show_progress)
    rows = p.image_rows  # a clip run's image branch trains on a few frames per clip
    train_idx, val_idx = np.nonzero((fold_of != k) & rows)[0], np.nonzero((fold_of == k) & rows)[0]
    # Early stopping looks at an inner split of the training photos, never at the out-of-fold ones,
    # so the out-of-fold predictions (and the fusion and rules fitted on them) stay honest.
    fit_idx, stop_idx = inner_split(train_idx, labels.leaf, p.folds["group"].to_numpy(), cfg.inner_val_fraction, cfg.seed + k)
    torch.manual_seed(cfg.seed * 1000 + k)  # head initialisation and dropout: a fold is reproducible wherever it runs
    model, info = build_model(cfg.backbone, p.hierarchy.level_sizes(), weights=cfg.weights, pretrained=cfg.pretrained,
                              input_size=cfg.input_size,
                              freeze_fraction=cfg.freeze_fraction)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    prep = Preprocessing(cfg.input_size, cfg.eval_margin, tuple(info["mean"]), tuple(info["std"]))
    aug = Augmenter(bank, prep, p.skeleton, dev, train_margin=cfg.train_margin, rotation=cfg.rotation_degrees,
                    flip_map=p.flip_map(), seed=cfg.seed + k)
    history = _read_history(run.fold_metrics(k))
    oof_rows, oof_eval = {}, None
    for stage in STAGES:
        ckpt_path = run.checkpoint(k, stage)
        if stage <= resume:
            ckpt = load_checkpoint(ckpt_path, run_id=p.config["run_id"], fold=k, stage=stage, fix=run.fit_command(p.config))
            model.load_state_dict(ckpt["state_dict"])
            oof_rows[stage], oof_eval = ckpt["meta"].get("oof", {}), None
            continue
        history = [r for r in history if r["stage"] != stage]
        with progress_bar(f"fold {k}/{p.k} stage {stage}", total=cfg.stage(stage).epochs, enabled=show_progress) as advance:
            def epoch_done(row):
                history.append({"fold": k, **row})
                atomic.write_csv(run.fold_metrics(k), pd.DataFrame(history))
                if on_epoch:
                    on_epoch({"fold": k, **row})
                advance(info=f"val acc {row['val_acc']:.3f} f1 {row['val_macro_f1']:.3f} {row['images_per_s']:.0f} img/s")
            result = train_stage(stage, model, aug, labels, fit_idx, stop_idx, cfg, dev,
                                 seed=stage_seed(cfg.seed, k, stage), on_epoch=epoch_done)
        if stage == STAGES[0] and not np.array_equal(fit_idx, stop_idx):  # say it early, before stages 2 and 3
            warn_if_chance(f"fold {k} stage {stage}: the image branch on held-out training photos",
                           float(result.best.get("val_acc", np.nan)), chance_level(labels.leaf[stop_idx]))
        oof_eval = evaluate(model, aug, labels, val_idx, cfg, dev)
        oof_rows[stage] = oof_eval.metrics
        save_checkpoint(ckpt_path, run_id=p.config["run_id"], fold=k, stage=stage, state_dict=result.state,
                        meta={"best": result.best, "best_epoch": result.best_epoch, "oof": oof_rows[stage],
                              **_model_meta(p, info)})
    # the final model's out-of-fold pass was just made, unless stage 3 was resumed from its checkpoint
    res = oof_eval or predict_bank(model, aug, val_idx, cfg, dev, with_cam=True, labels_leaf=labels.leaf)
    _write_oof_image(run.fold_oof(k), p, val_idx, res)
    atomic.write_json(run.fold_done(k), {
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
    if np.bincount(y).max() < 2 or len(np.unique(g)) < 2:  # nothing to hold out: stop on the training photos
        return train_idx, train_idx
    n_splits = max(2, min(int(round(1 / fraction)), len(np.unique(g)), int(np.bincount(y).max())))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members": fine here
        fit_rows, stop = next(splitter.split(np.zeros(len(y)), y, g))
    return train_idx[fit_rows], train_idx[stop]


def _model_meta(p: Prepared, info: dict) -> dict:
    h, cfg = p.hierarchy, p.cfg
    return {"backbone": cfg.backbone, "input_size": cfg.input_size, "eval_margin": cfg.eval_margin,
            "mean": list(info["mean"]), "std": list(info["std"]), "weights_source": info["weights_source"],
            "timm_kwargs": info["timm_kwargs"],
            "levels": {lv: h.classes(lv) for lv in h.levels}}


def _read_history(path: Path) -> list[dict]:
    return pd.read_csv(path).to_dict("records") if path.exists() else []


def _write_oof_image(path: Path, p: Prepared, idx: np.ndarray, res) -> None:
    from ..run.predtable import prob_columns

    cols = {"path": list(p.folds["path"].iloc[idx]), "cam_inside": res.cam_inside,
            **prob_columns(p.hierarchy, {"image": res.probs})}
    atomic.write_csv(path, pd.DataFrame(cols))


# --------------------------------------------------------------------------- finish


@_keeps_threads
def finish(run: RunFolder | str | Path) -> dict:
    """The other branches (out of fold and on all photos), the fusion, oof_predictions.csv, curves, summary."""
    p = load_prepared(run)
    run = p.run
    if p.cfg.num_threads:  # as in train_fold: the same threads wherever the folds ran (XGBoost follows OpenMP's)
        torch.set_num_threads(p.cfg.num_threads)
    missing = [k for k in range(1, p.k + 1) if not run.fold_done(k).exists()]
    if missing:
        raise RunError(f"{run.root}: folds {missing} are not finished; run `{run.fit_command(p.config)}`.")
    if run.is_clip_run(p.config):
        _plot_curves(run.root)
        return finish_clips(p)
    y_leaf = p.labels.leaf
    branches = {"image": _read_oof_image(p)}
    for name in p.config.get("branches", DEFAULT_BRANCHES):
        if name != "image":
            branches[name] = branch_oof(p, name)
    # honest: each fold fused with parameters fitted on the other folds
    choice = select(p.hierarchy, branches, y_leaf, p.fold_of)
    atomic.write_json(run.fusion, {**choice.fusion.to_dict(), "selection": choice.to_dict()})
    frame = oof_frame(p, {**branches, "fused": choice.oof})
    atomic.write_csv(run.oof, frame)
    from .curves import plot_training_curves

    plot_training_curves(run.root)
    summary = summarize_oof(frame, p)
    warn_branches_at_chance(summary["oof_top1"], p.folds["label"], p.hierarchy.leaf_level)
    return {**summary, "fusion": choice.to_dict(), "notes": fusion_notes(choice, summary)}


def _plot_curves(root: Path) -> None:
    from .curves import plot_training_curves

    plot_training_curves(root)


def fusion_notes(choice, summary: dict) -> list[str]:
    """Plain sentences on what `fused` is and how far the out-of-fold figures can be trusted."""
    losses = ", ".join(f"{k} {v:.3f}" for k, v in choice.oof_nll.items())
    if choice.chosen == "fusion":
        first = f"fused = all branches pooled with weights fitted out of fold (leaf log-loss out of fold: {losses})."
    else:
        first = (f"fused = the {choice.chosen} branch alone (the others only where it abstains): on these "
                 f"{summary['n_images']} photos the fitted fusion weights did not beat it out of fold "
                 f"(leaf log-loss: {losses}); more data lets the fusion show its value.")
    n = summary["n_images"]
    acc = summary["oof_top1"]["fused"]
    p = float(np.mean(list(acc.values())))
    half = 1.96 * np.sqrt(max(p * (1 - p), 1.0 / n) / n) * 100
    return [first, f"With {n} photos each top-1 figure is uncertain by about ±{half:.1f} points (95% interval): "
                   "smaller differences between branches are noise."]


def branch_oof(p: Prepared, name: str) -> dict[str, np.ndarray]:
    """Out-of-fold level probabilities of an in-process branch on the run's folds; saves the one fitted on all."""
    X, y, h = keypoints_array(p.poses, p.skeleton), p.folds["label"].to_numpy(), p.hierarchy

    def fit_predict(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
        return new_branch(p, name).fit(X[train], y[train], classes=h.leaves).predict_level_proba(X[test], h)

    oof = cross_fit(p.fold_of, fit_predict)
    new_branch(p, name).fit(X, y, classes=h.leaves).save(p.run)
    return oof


def _read_oof_image(p: Prepared) -> dict[str, np.ndarray]:
    from ..run.predtable import read_probs

    h = p.hierarchy
    parts = pd.concat([pd.read_csv(p.run.fold_oof(k)) for k in range(1, p.k + 1)])
    parts = parts.set_index("path").loc[list(p.folds["path"])]
    return {lv: read_probs(parts, "image", lv, h.classes(lv)) for lv in h.levels}


def oof_frame(p: Prepared, branches: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    h = p.hierarchy
    head = {"path": list(p.folds["path"]), "fold": p.fold_of, "status": p.poses["status"].to_numpy()}
    return prediction_table(h, head, {lv: p.level_labels(lv) for lv in h.levels}, branches)


def summarize_oof(frame: pd.DataFrame, p: Prepared) -> dict:
    out = {"n_images": len(frame), "oof_top1": top1(frame, p.hierarchy), "cam_inside_oof": cam_inside(p)}
    if "people" in p.poses:  # the multi-person pose model: photos where the label went to one of several
        out["several_people"] = int((p.poses["people"] > 1).sum())
    return out
