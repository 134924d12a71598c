"""`hybridpose tune`: an Optuna study over the training settings, objective the out-of-fold macro-F1
at the leaf level of the fused predictions on the given data (never a test set).

Every trial is a `fit` into ``OUT/trials/trial_NNNN`` with the sampled settings. The validation
macro-F1 of every epoch (on the inner early-stopping split) is reported to Optuna, whose median
pruner stops trials that fall behind the earlier ones at the same epoch. The study lives in the
storage given (``sqlite:///study.db``): a rerun with the same storage continues it up to ``trials``
finished trials, and several `tune` processes (or Ray tasks, ``executor="ray"``) can share it.
``OUT/best.yaml`` holds the best trial's settings in the form `fit --config` reads.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator

from ..defaults import DEFAULTS
from ..errors import ConfigError
from ..executors import Resources, get_executor, warm_pose_cache
from ..progress import log
from ..tracking import Tracker, tracking_uri
from .config import make_config, write_fit_config


@dataclass
class SearchSpace:
    """What a trial samples; learning rates are searched from a third to three times the preset's."""
    preset: str = DEFAULTS.preset
    backbones: list[str] = field(default_factory=list)    # empty: the preset's backbone
    input_sizes: list[int] = field(default_factory=list)  # empty: the preset's input size
    lr_factor: float = 3.0
    cam_weight: tuple[float, float] = (0.0, 2.0)
    supcon_weight: tuple[float, float] = (0.0, 1.0)
    train_margin_low: tuple[float, float] = (0.0, 0.15)
    train_margin_high: tuple[float, float] = (0.2, 0.5)
    eval_margin: tuple[float, float] = (0.05, 0.3)

    def sample(self, trial) -> dict:
        """The trial's settings as `fit` options (``stage1: {lr: ...}``, ``train_margin: [lo, hi]``, ...)."""
        base = make_config(self.preset)
        values: dict = {
            "backbone": trial.suggest_categorical("backbone", self.backbones or [base.backbone]),
            "input_size": trial.suggest_categorical("input_size", self.input_sizes or [base.input_size]),
            "cam_weight": trial.suggest_float("cam_weight", *self.cam_weight),
            "supcon_weight": trial.suggest_float("supcon_weight", *self.supcon_weight),
            "train_margin": [trial.suggest_float("train_margin_low", *self.train_margin_low),
                             trial.suggest_float("train_margin_high", *self.train_margin_high)],
            "eval_margin": trial.suggest_float("eval_margin", *self.eval_margin),
        }
        for i in (1, 2, 3):
            lr = base.stage(i).lr
            values[f"stage{i}"] = {"lr": trial.suggest_float(f"stage{i}_lr", lr / self.lr_factor, lr * self.lr_factor, log=True)}
        return values


@dataclass
class TuneSpec:
    """Everything a trial needs, picklable (a Ray task runs a trial from it)."""
    data: str
    out: str
    storage: str
    study_name: str
    folds: int
    space: SearchSpace
    fixed: dict               # training settings given on the command line, the same in every trial
    fit_options: dict         # hierarchy, images, flip_pairs, skeleton, cache_dir
    seed: int = 0
    track: str | None = None         # MLflow: the tracking URI and the study's run, each trial a run nested in it
    track_parent: str | None = None


def tune(data: str | Path, out: str | Path, *, storage: str, trials: int = 20, folds: int = 3,
         space: SearchSpace | None = None, study_name: str | None = None, executor: str = "local",
         address: str | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0, seed: int = 0,
         hierarchy=None, images=None, flip_pairs=None, skeleton: str = DEFAULTS.skeleton, cache_dir=None,
         show_progress: bool = True, track: str | None = None, **fixed) -> dict:
    """Run the study until it holds ``trials`` finished (complete or pruned) trials; write OUT/best.yaml
    and OUT/trials.csv. Returns a summary (best value and settings, trial counts). ``track``: an MLflow
    tracking URI (default ``$HYBRIDPOSE_TRACKING_URI``): the study is a run, each trial a run nested in it."""
    optuna = _optuna()
    from ..data.datasets import check_classes, leave_out_unusable, load_dataset
    from ..data.folds import check_fold_counts

    storage = check_storage(storage)  # before any work
    uri = tracking_uri(track)
    out = Path(out)
    space = space or SearchSpace()
    fixed = {"seed": seed, **fixed}  # the sampler's seed is every trial's fit seed too
    for backbone in space.backbones or [None]:  # every choice checked before any work
        for size in space.input_sizes or [None]:
            make_config(space.preset, backbone=backbone, input_size=size, **{k: v for k, v in fixed.items() if not k.startswith("stage")})
    ds = load_dataset(data, hierarchy=hierarchy, images=images, flip_pairs=flip_pairs)
    leave_out_unusable(ds)  # as every trial's fit will: a class with no usable photo stops here, before any trial
    check_classes(ds)
    check_fold_counts(ds.labels, folds, "photos")
    name = study_name or f"hybridpose-{Path(data).resolve().name}"
    with _storage_errors(storage):
        study = optuna.create_study(study_name=name, storage=open_storage(storage), direction="maximize",
                                    load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    spec = TuneSpec(str(data), str(out.resolve()), storage, name, folds, space, fixed,
                    dict(hierarchy=hierarchy, images=images, flip_pairs=flip_pairs, skeleton=skeleton,
                         cache_dir=cache_dir), seed)
    todo = max(0, trials - len(finished(study)))
    log(f"[bold]tune[/] study {name!r} in {storage}: {len(finished(study))} finished trial(s), running {todo} more")
    with Tracker(uri, name, tags={"hybridpose.command": "tune", "optuna.study": name}) as tracker:
        _track_study(tracker, spec, trials)
        spec.track, spec.track_parent = (uri, tracker.run_id) if tracker.enabled else (None, None)
        _run_trials(spec, study, ds, todo, executor, address, Resources(cpus_per_trial, gpus_per_trial), show_progress)
        summary = write_results(optuna.load_study(study_name=name, storage=open_storage(storage)), spec)
        _track_results(tracker, summary)
    return summary


def _run_trials(spec: TuneSpec, study, ds, todo: int, executor: str, address: str | None, resources: Resources,
                show_progress: bool) -> None:
    from ..pose.frontend import extract

    skeleton, cache_dir = spec.fit_options["skeleton"], spec.fit_options["cache_dir"]
    ex = get_executor(executor, address=address)
    try:
        ex.check(resources, "trial")
        if ex.distributed:  # poses once, on the cluster, before trials compete for the cache
            warm_pose_cache(ex, ds.paths, skeleton=skeleton, cache_dir=cache_dir, show_progress=show_progress)
        extract(ds.paths, cache_dir=cache_dir, skeleton=skeleton, show_progress=show_progress)
        if ex.distributed:
            task = partial(trial_task, spec)
            for _ in ex.map(task, list(range(todo)), resources=resources, retries=1, desc="trials",
                            show_progress=show_progress):
                pass
        elif todo:
            study.optimize(partial(objective, spec=spec, show_progress=show_progress), n_trials=todo,
                           catch=(ConfigError,))
    finally:
        if ex is not executor:
            ex.close()


def _track_study(tracker: Tracker, spec: TuneSpec, trials: int) -> None:
    """The study's run: what is searched and what is fixed (nothing when tracking is off)."""
    if tracker.enabled:
        from dataclasses import asdict

        tracker.params({"study": spec.study_name, "storage": spec.storage, "trials": trials, "folds": spec.folds,
                        "data": spec.data, "space": asdict(spec.space), "fixed": _plain(spec.fixed)})
        tracker.start()


def _track_results(tracker: Tracker, summary: dict) -> None:
    if not tracker.enabled:
        return
    best = summary.get("best") or {}
    tracker.metrics({"trials": summary["trials"], "complete": summary["complete"], "pruned": summary["pruned"],
                     **({"best_value": best["value"], "best_trial": best["trial"]} if best else {})})
    tracker.artifact(Path(summary["trials_csv"]))
    if summary.get("best_yaml"):
        tracker.artifact(Path(summary["best_yaml"]))
    tracker.say_where()
    if tracker.enabled:
        summary["tracking"] = {"uri": tracker.uri, "run_id": tracker.run_id}


def trial_task(spec: TuneSpec, _i: int) -> int:
    """One trial of the shared study (a Ray task)."""
    optuna = _optuna()
    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    study.optimize(partial(objective, spec=spec, show_progress=False), n_trials=1, catch=(ConfigError,))
    return _i


def objective(trial, spec: TuneSpec, show_progress: bool = False) -> float:
    """Fit with the trial's settings; the fused out-of-fold leaf macro-F1. Pruned between epochs."""
    optuna = _optuna()
    from .config import train_overrides
    from .fit import fit

    values = {**spec.space.sample(trial)}
    overrides = train_overrides({**values, **_stage_dicts(spec.fixed, values)}, spec.space.preset)
    overrides.update({k: v for k, v in spec.fixed.items() if not k.startswith("stage")})
    trial.set_user_attr("fit_options", values)
    step = [0]

    def on_epoch(row: dict) -> None:
        step[0] += 1
        trial.report(float(row["val_macro_f1"]), step[0])
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {row['fold']} stage {row['stage']} epoch {row['epoch']}")

    run = Path(spec.out) / "trials" / f"trial_{trial.number:04d}"
    # no model per trial: each would copy the trial's networks into the store; `fit --config best.yaml` logs one
    tracker = Tracker(spec.track if spec.track_parent else None, f"trial {trial.number}", parent_id=spec.track_parent,
                      tags={"optuna.study": spec.study_name, "optuna.trial": str(trial.number)}, with_model=False)
    with tracker:
        tracker.params({f"trial.{k}": v for k, v in trial.params.items()})
        try:
            fit(spec.data, run, folds=spec.folds, preset=spec.space.preset, show_progress=show_progress,
                on_epoch=on_epoch, track=tracker, **spec.fit_options, **overrides)
        except optuna.TrialPruned:
            tracker.set_tags({"optuna.state": "PRUNED"})
            tracker.ended_as = "KILLED"  # stopped early by the pruner, not broken
            raise
        score = leaf_macro_f1(run)
        tracker.metrics({"value": score})
        tracker.set_tags({"optuna.state": "COMPLETE"})
    trial.set_user_attr("run", str(run))
    return score


def _stage_dicts(fixed: dict, values: dict) -> dict:
    """Stage settings fixed on the command line (e.g. --epochs) merged under the sampled learning rates."""
    out = {}
    for i in (1, 2, 3):
        s = f"stage{i}"
        if s in fixed:
            stage = fixed[s]
            out[s] = {"epochs": stage.epochs, "patience": stage.patience, **values.get(s, {})}
    return out


def leaf_macro_f1(run: str | Path) -> float:
    """Macro-F1 of the fused out-of-fold predictions at the leaf level (abstentions count as wrong)."""
    import pandas as pd
    from sklearn.metrics import f1_score

    from ..data.hierarchy import Hierarchy
    from ..run.folder import RunFolder
    from ..run.predtable import pred_column, true_column

    folder = RunFolder(run)
    leaf = Hierarchy.from_dict(folder.read_config()["hierarchy"]).leaf_level
    frame = pd.read_csv(folder.oof, keep_default_na=False, na_values=[""])
    pred = frame[pred_column("fused", leaf)].fillna("").astype(str)
    return float(f1_score(frame[true_column(leaf)].astype(str), pred, average="macro"))


def finished(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def write_results(study, spec: TuneSpec) -> dict:
    """OUT/trials.csv (every trial) and OUT/best.yaml (the best complete trial, for `fit --config`)."""
    from optuna.trial import TrialState

    from .. import atomic

    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(out / "trials.csv", study.trials_dataframe())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    summary = {"study": spec.study_name, "storage": spec.storage, "trials": len(study.trials),
               "complete": len(complete), "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
               "trials_csv": str(out / "trials.csv"), "best": None}
    if not complete:
        return summary
    best = study.best_trial
    values = {"preset": spec.space.preset, "folds": spec.folds,
              **{k: v for k, v in spec.fit_options.items() if v is not None and k != "cache_dir"},
              **_plain(spec.fixed), **best.user_attrs["fit_options"]}
    values.update(_stage_dicts(spec.fixed, best.user_attrs["fit_options"]))
    path = out / "best.yaml"
    write_fit_config(path, values, header=(
        f"best trial {best.number} of study {spec.study_name!r} ({spec.storage}): out-of-fold fused leaf "
        f"macro-F1 {best.value:.4f}\nhybridpose fit {spec.data} --config {path} --out RUN"))
    summary.update(best={"trial": best.number, "value": best.value, "run": best.user_attrs.get("run")},
                   best_yaml=str(path))
    return summary


def _plain(fixed: dict) -> dict:
    return {k: v for k, v in fixed.items() if not k.startswith("stage") and not (isinstance(v, float) and math.isnan(v))}


def absolute_storage(storage: str) -> str:
    """``sqlite:///study.db`` with the path made absolute (Ray workers run in other folders)."""
    prefix = "sqlite:///"
    if storage.startswith(prefix) and not storage.startswith(prefix + "/"):
        return prefix + str(Path(storage[len(prefix):]).resolve())
    if "://" not in storage:
        raise ConfigError(f"--study {storage!r}: give an Optuna storage URL, e.g. sqlite:///study.db.")
    return storage


RDB_SCHEMES = ("sqlite", "postgresql", "mysql")  # the databases Optuna's RDBStorage opens (dialect+driver too)
SQLITE_HEADER = b"SQLite format 3\x00"


def check_storage(storage: str) -> str:
    """``storage`` made absolute, if Optuna can open it: a database URL and, for SQLite, a database file or a new
    file in a folder that exists and can be written; a ConfigError or OutputError naming --study otherwise.
    Nothing is created or written."""
    storage = absolute_storage(storage)
    scheme = storage.split(":", 1)[0]
    if scheme.split("+")[0] not in RDB_SCHEMES:
        raise ConfigError(f"--study {storage}: unknown storage {scheme!r}; give an Optuna database URL, "
                          "e.g. sqlite:///study.db (or postgresql://..., mysql://...).")
    file = storage.partition("?")[0][len("sqlite:///"):] if storage.startswith("sqlite:///") else ""
    if file and file != ":memory:":
        _check_sqlite_file(Path(file))
    return storage


def _check_sqlite_file(path: Path) -> None:
    from ..outputs import check_writable

    if path.is_dir():
        raise ConfigError(f"--study sqlite:///{path}: is a folder; give a database file, e.g. {path / 'study.db'}.")
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise ConfigError(f"--study sqlite:///{path}: not an SQLite database; give the study's database file, "
                              "or a new file name.")
    elif not path.parent.is_dir():
        raise ConfigError(f"--study sqlite:///{path}: folder {path.parent} does not exist; create it or give a "
                          "database file in an existing folder.")
    check_writable(path, "file", "--study")


@contextmanager
def _storage_errors(storage: str) -> Iterator[None]:
    """A database that cannot be opened (unreachable server, damaged file): one line naming --study."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise ConfigError(f"--study {storage}: cannot open the study's database ({reason}); check the URL.") from None


# A trial whose process died (killed, out of memory, node lost) would stay RUNNING for ever: running trials
# beat every HEARTBEAT_S seconds, and the next trial to start marks one silent for GRACE_S as FAIL.
HEARTBEAT_S = 30
GRACE_S = 120


def open_storage(storage: str):
    """The study's storage; a database one (SQLite, PostgreSQL, MySQL) with trial heartbeats."""
    optuna = _optuna()
    if storage.split(":", 1)[0].split("+")[0] in RDB_SCHEMES:
        return optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    return storage


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("hybridpose tune needs Optuna: pip install 'hybridpose[tune]'.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
