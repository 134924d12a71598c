"""Scale-out: folds and pose extraction as Ray tasks, a killed fold worker retried, `tune` with Optuna,
`fit --config`. One local Ray instance (2 CPUs) is shared by the tests of this module."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corpus import sample_subset

# the smallest training the config allows: 1 epoch per stage, a 32-px timm test network, one thread
# (the same thread count in both executors makes their floating-point sums, hence the folds, identical)
TINY = dict(preset="tiny", backbone="test_efficientnet", input_size=32, num_threads=1,
            stage1={"epochs": 1, "lr": 1e-3}, show_progress=False)


def _tiny(**extra):
    from hybridpose.train.config import StageConfig

    out = {**TINY, **extra}
    out["stage1"] = StageConfig(**out["stage1"])
    return out


@pytest.fixture(scope="module")
def ray_session():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    # the killed-worker test ships a function of this module to the workers by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """3 photos of each of the 8 classes of data/sample, with its hierarchy."""
    return sample_subset(tmp_path_factory.mktemp("small") / "data", 3)


def _probs(run: Path) -> pd.DataFrame:
    frame = pd.read_csv(run / "oof_predictions.csv")
    return frame[[c for c in frame.columns if c.startswith(("image:", "keypoint:", "fused:"))]]


@pytest.mark.slow
def test_ray_executor_gives_the_local_out_of_fold_predictions(ray_session, small_data, tmp_path):
    from hybridpose.train.fit import fit

    # ray first, with an empty pose cache: the pose model runs in Ray tasks too; tracked, as a user would
    track = f"sqlite:///{tmp_path / 'mlflow.db'}" if importlib.util.find_spec("mlflow") else None
    remote = fit(small_data, tmp_path / "ray", folds=3, executor="ray", cache_dir=tmp_path / "cache", track=track,
                 **_tiny())
    local = fit(small_data, tmp_path / "local", folds=3, **_tiny())
    assert remote["oof_top1"] == local["oof_top1"]
    a, b = _probs(tmp_path / "ray"), _probs(tmp_path / "local")
    assert list(a.columns) == list(b.columns) and len(a) == 24
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert pd.read_csv(tmp_path / "ray" / "poses.csv")["status"].equals(pd.read_csv(tmp_path / "local" / "poses.csv")["status"])
    for k in (1, 2, 3):
        assert (tmp_path / "ray" / f"fold_{k}" / "done.json").exists()
    if track:  # the folds trained in Ray tasks: their curves logged from metrics.csv when the run finished
        import mlflow

        client = mlflow.MlflowClient(track)
        got = client.get_run(remote["tracking"]["run_id"])
        assert got.info.status == "FINISHED" and got.data.params["folds"] == "3"
        for k in (1, 2, 3):
            curve = pd.read_csv(tmp_path / "ray" / f"fold_{k}" / "metrics.csv")
            history = client.get_metric_history(got.info.run_id, f"fold{k}/stage1/val_acc")
            assert len(history) == (curve["stage"] == 1).sum() > 0
        level, top1 = next(iter(remote["oof_top1"]["fused"].items()))
        assert got.data.metrics[f"oof/fused/{level}/top1"] == pytest.approx(top1)


def _kill_once_then_train(run: str, marker: str, k: int) -> int:
    """First attempt: die (os._exit, as a crashed or pre-empted worker) right after stage 1 is saved."""
    from hybridpose.train.fit import fold_task

    stage1 = Path(run) / f"fold_{k}" / "stage1.pt"
    if not Path(marker).exists():
        Path(marker).write_text("")

        def kill_after_stage1():
            while not stage1.exists():
                time.sleep(0.02)
            Path(marker).write_text(str(stage1.stat().st_mtime_ns))
            os._exit(1)

        threading.Thread(target=kill_after_stage1, daemon=True).start()
    return fold_task(run, k)


@pytest.mark.slow
def test_a_killed_fold_worker_is_retried_and_keeps_finished_work(ray_session, small_data, tmp_path):
    from hybridpose.executors import get_executor
    from hybridpose.train.fit import finish, prepare, train_fold, train_folds

    settings = _tiny()
    settings.pop("show_progress")
    run = prepare(small_data, tmp_path / "run", folds=3, show_progress=False, **settings)
    train_fold(run, 1, show_progress=False)
    done_1 = run.fold_done(1).stat().st_mtime_ns
    marker = tmp_path / "killed"
    ex = get_executor("ray")
    task = partial(_kill_once_then_train, str(run.root), str(marker))
    assert [k for k, _ in ex.map(task, [2], retries=1, show_progress=False)] == [2]
    stage1_at_kill = int(marker.read_text())  # the first attempt did die after stage 1
    assert run.fold_done(2).exists()
    assert run.checkpoint(2, 1).stat().st_mtime_ns == stage1_at_kill  # the retry did not train stage 1 again
    metrics = pd.read_csv(run.fold_metrics(2))
    assert (metrics["stage"] == 1).sum() == 1 and set(metrics["stage"]) == {1, 2, 3}
    assert train_folds(run, ex, show_progress=False) == [3]  # fold 1 and 2 are finished: only 3 runs
    assert run.fold_done(1).stat().st_mtime_ns == done_1
    assert finish(run)["n_images"] == 24


def test_a_worker_that_keeps_dying_is_an_error_that_says_to_rerun(ray_session, tmp_path):
    from hybridpose.errors import RunError
    from hybridpose.executors import get_executor

    with pytest.raises(RunError, match="died 1 times.*run the same command again"):
        list(get_executor("ray").map(os._exit, [3], retries=0, show_progress=False))


def test_tune_writes_the_study_and_best_config_and_a_rerun_continues(small_data, tmp_path, monkeypatch):
    """... and a trial left RUNNING by a killed process is marked FAIL when the study goes on."""
    optuna = pytest.importorskip("optuna")
    from hybridpose.train import tune as tune_module
    from hybridpose.train.config import make_config, read_fit_config, train_overrides
    from hybridpose.train.tune import SearchSpace, leaf_macro_f1, tune

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = SearchSpace(preset="tiny", backbones=["test_efficientnet"], input_sizes=[32])
    fixed = _tiny()
    for k in ("preset", "backbone", "input_size", "show_progress"):
        fixed.pop(k)
    res = tune(small_data, tmp_path / "tune", storage=storage, trials=2, folds=2, space=space, show_progress=False, **fixed)
    study = optuna.load_study(study_name=res["study"], storage=storage)
    assert len(study.trials) == 2 and res["complete"] + res["pruned"] == 2
    first = [t.params for t in study.trials]
    best = study.best_trial
    assert best.value == pytest.approx(leaf_macro_f1(best.user_attrs["run"]))
    values = read_fit_config(tmp_path / "tune" / "best.yaml")
    cfg = make_config(values["preset"], **train_overrides(values, values["preset"]))
    assert cfg.cam_weight == pytest.approx(best.params["cam_weight"])
    assert cfg.stage2.lr == pytest.approx(best.params["stage2_lr"]) and cfg.stage2.epochs == 1
    assert cfg.train_margin == pytest.approx((best.params["train_margin_low"], best.params["train_margin_high"]))
    assert (cfg.backbone, cfg.input_size, cfg.num_threads, values["folds"]) == ("test_efficientnet", 32, 1, 2)

    # a trial whose process was killed: RUNNING in the study, its heartbeat silent
    monkeypatch.setattr(tune_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune_module, "GRACE_S", 1)
    killed = optuna.load_study(study_name=res["study"], storage=tune_module.open_storage(storage)).ask()
    killed.study._storage.record_heartbeat(killed._trial_id)
    time.sleep(2.5)
    res = tune(small_data, tmp_path / "tune", storage=storage, trials=3, folds=2, space=space, show_progress=False, **fixed)
    study = optuna.load_study(study_name=res["study"], storage=storage)
    assert [t.params for t in study.trials[:2]] == first
    assert study.trials[2].state == optuna.trial.TrialState.FAIL  # the killed one, no longer RUNNING
    assert len(study.trials) == 4 and res["complete"] + res["pruned"] == 3
    assert len(pd.read_csv(tmp_path / "tune" / "trials.csv")) == 4


def test_fit_config_file_values_and_command_line_precedence(small_data, tmp_path):
    from typer.testing import CliRunner

    from hybridpose_cli.main import app

    config = tmp_path / "fit.yaml"
    config.write_text("folds: 99\nbackbone: no_such_net\ncam-weight: 0.5\n")
    runner = CliRunner()
    # the file's backbone is used (and checked before any work) ...
    res = runner.invoke(app, ["fit", str(small_data), "--out", str(tmp_path / "a"), "--config", str(config)])
    assert "--backbone 'no_such_net'" in str(res.exception)
    # ... unless the command line names one; then the file's folds is used
    res = runner.invoke(app, ["fit", str(small_data), "--out", str(tmp_path / "b"), "--config", str(config),
                              "--backbone", "test_efficientnet"])
    assert "99" in str(res.exception) and "fold" in str(res.exception)
    config.write_text("foldz: 3\n")
    res = runner.invoke(app, ["fit", str(small_data), "--config", str(config)])
    assert "unknown option 'foldz'" in str(res.exception)


@pytest.fixture(scope="module")
def small_run(small_data, tmp_path_factory) -> Path:
    from hybridpose.train.fit import fit

    run = tmp_path_factory.mktemp("small_run") / "run"
    fit(small_data, run, folds=2, **_tiny())
    return run


def test_predict_on_ray_data_matches_local_predict_and_keeps_bad_files(ray_session, small_data, small_run, tmp_path):
    from hybridpose.executors.ray import predict_inputs
    from hybridpose.inference.api import predict

    inputs = tmp_path / "in"
    shutil.copytree(small_data, inputs)
    (inputs / "Triangle" / "notes.jpg").write_text("not a photo")
    (inputs / "Triangle" / "cut.jpg").write_bytes((small_data / "Triangle" / sorted(os.listdir(small_data / "Triangle"))[0]).read_bytes()[:300])
    predict(inputs, small_run, tmp_path / "local.csv", batch_size=8, show_progress=False)
    res = predict_inputs(inputs, small_run, tmp_path / "ray", workers=2, batch_size=8, show_progress=False)
    local = pd.read_csv(tmp_path / "local.csv")
    merged = pd.read_csv(tmp_path / "ray" / "predictions.csv")
    shards = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "ray").glob("part-*.parquet"))], ignore_index=True)
    assert res["images"] == local["path"].nunique() == 26 and res["rows"] == len(local) and res["shards"] == 1
    assert list(merged["path"]) == list(local["path"]) == list(shards["path"])  # input order kept
    assert dict(zip(merged["path"], merged["status"]))[str(inputs / "Triangle" / "notes.jpg")] == "unreadable"
    text = [c for c in local.columns if c not in ("confidence",) and not c.endswith("_prob")]
    pd.testing.assert_frame_equal(merged[text], local[text])
    np.testing.assert_allclose(merged["confidence"], local["confidence"], atol=1e-4)
    # a rerun replaces its own earlier output; a folder holding other files is refused before any work
    predict_inputs(inputs, small_run, tmp_path / "ray", workers=1, batch_size=8, show_progress=False)
    from hybridpose.errors import RunError

    with pytest.raises(RunError, match="not a prediction folder"):
        predict_inputs(inputs, small_run, small_data, show_progress=False)


def test_a_task_the_cluster_cannot_hold_is_refused_before_it_waits_forever(ray_session):
    from hybridpose.errors import ConfigError
    from hybridpose.executors import Resources, get_executor

    with pytest.raises(ConfigError, match="asks for 1 GPUs, but the Ray cluster has 0"):
        list(get_executor("ray").map(abs, [1], resources=Resources(cpus=1, gpus=1), desc="fold", show_progress=False))
