"""Experiment tracking with MLflow (docs/TRACKING.md): a tracked fit read back through MLflow's client, the run
as an MLflow model, a failing store that costs the fit nothing, tune's nested trials and evaluate."""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from corpus import sample_subset

mlflow = pytest.importorskip("mlflow")

# one epoch per stage but two in stage 1 (a curve with several steps), a 32-px timm test network, one thread
TINY = dict(preset="tiny", backbone="test_efficientnet", input_size=32, num_threads=1, show_progress=False)


def _tiny():
    from hybridpose.train.config import StageConfig

    return {**TINY, "stage1": StageConfig(epochs=2, lr=1e-3, patience=5)}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """3 photos of each of the 8 classes of data/sample, with its hierarchy."""
    return sample_subset(tmp_path_factory.mktemp("small") / "data", 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tracked(small_data, store, tmp_path_factory) -> tuple[Path, dict]:
    from hybridpose.train.fit import fit

    run = tmp_path_factory.mktemp("tracked") / "run"
    return run, fit(small_data, run, folds=2, track=store, **_tiny())


def test_a_tracked_fit_holds_its_parameters_curves_figures_and_files(tracked, store):
    run, summary = tracked
    client = mlflow.MlflowClient(store)
    got = client.get_run(summary["tracking"]["run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    params = got.data.params
    assert (params["train.preset"], params["folds"], params["train.stage1.epochs"]) == ("tiny", "2", "2")
    assert params["hierarchy.levels"] == '["class", "subgroup", "group"]' and params["hierarchy.classes"] == "8"
    assert got.data.tags["hybridpose.run_id"] == params["run_id"]
    # every fold and stage, a step per epoch, the values of the fold's metrics.csv
    curve = client.get_metric_history(got.info.run_id, "fold1/stage1/train_loss")
    expected = pd.read_csv(run / "fold_1" / "metrics.csv").query("stage == 1")["train_loss"]
    assert [m.step for m in curve] == [1, 2]
    assert [m.value for m in curve] == pytest.approx(list(expected))
    for fold in (1, 2):
        for stage in (1, 2, 3):
            assert f"fold{fold}/stage{stage}/val_macro_f1" in got.data.metrics
    for branch, levels in summary["oof_top1"].items():
        for level, value in levels.items():
            assert got.data.metrics[f"oof/{branch}/{level}/top1"] == pytest.approx(value)
    names = {a.path for a in client.list_artifacts(got.info.run_id)}
    assert {"summary.json", "config.json", "training_curves.png", "fusion.json", "curves"} <= names
    assert [a.path for a in client.list_artifacts(got.info.run_id, "curves/fold_1")] == ["curves/fold_1/metrics.csv"]


def test_the_logged_model_predicts_as_the_run(tracked, store, small_data, monkeypatch):
    from hybridpose.inference.loaded import LoadedModel

    run, summary = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    model = mlflow.pyfunc.load_model(f"runs:/{summary['tracking']['run_id']}/model")
    photos = sorted(str(p) for p in small_data.rglob("*.jpg"))[:3]
    got = model.predict(pd.DataFrame({"path": photos}))
    expected = pd.DataFrame(LoadedModel.load(run).predict_files(photos))
    assert list(got["path"]) == photos and (got["status"] == "ok").all()
    assert list(got["class"]) == list(expected["class"])
    assert got["confidence"].to_numpy() == pytest.approx(expected["confidence"].to_numpy())
    with pytest.raises(Exception, match=r"needs a 'path' column .* or an 'image' column"):
        model.predict(pd.DataFrame({"file": photos}))


def test_the_logged_model_predicts_photos_sent_as_base64_bytes(tracked, store, small_data, monkeypatch):
    run, summary = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    model = mlflow.pyfunc.load_model(f"runs:/{summary['tracking']['run_id']}/model")
    photos = sorted(str(p) for p in small_data.rglob("*.jpg"))[:2]
    by_path = model.predict(pd.DataFrame({"path": photos}))
    sent = [base64.b64encode(Path(p).read_bytes()).decode() for p in photos]
    sent += ["%%% not base64", base64.b64encode(b"plain text, no photo").decode(), ""]
    before = set(Path(tempfile.gettempdir()).glob("hybridpose-pyfunc-*"))
    got = model.predict(pd.DataFrame({"image": sent}))
    assert list(got["path"]) == [f"image[{i}]" for i in range(5)]
    assert list(got["class"][:2]) == list(by_path["class"])
    assert got["confidence"][:2].to_numpy() == pytest.approx(by_path["confidence"].to_numpy())
    assert list(got["status"]) == ["ok", "ok", "unreadable", "unreadable", "unreadable"]
    assert list(got["reason"][2:]) == ["not base64", "not an image (cannot identify format)",
                                       "no image bytes (empty)"]
    assert set(Path(tempfile.gettempdir()).glob("hybridpose-pyfunc-*")) == before  # nothing left behind


def test_the_logged_model_leaves_the_caches_out(tracked, store, monkeypatch):
    _, summary = tracked
    run_id = summary["tracking"]["run_id"]
    experiment = mlflow.MlflowClient(store).get_run(run_id).info.experiment_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    [logged] = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list",
                                           filter_string=f"source_run_id = '{run_id}'")
    model = Path(mlflow.artifacts.download_artifacts(f"models:/{logged.model_id}"))
    assert logged.name == "model"
    shipped = {p.relative_to(model / "artifacts" / "run").as_posix()
               for p in (model / "artifacts" / "run").rglob("*") if p.is_file()}
    assert {"config.json", "fusion.json", "fold_1/stage3.pt", "fold_2/stage3.pt"} <= shipped
    assert not any(p.startswith("crops_") or p.endswith(("stage1.pt", "stage2.pt")) for p in shipped)


@pytest.fixture(autouse=True)
def _fresh_failures():
    from hybridpose.tracking import forget_failures

    yield
    forget_failures()


def test_a_store_that_cannot_be_written_warns_once_and_the_fit_is_whole(small_data, tmp_path, capsys):
    from hybridpose.train.fit import fit

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the database's folder should be")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    summary = fit(small_data, tmp_path / "run", folds=2, track=uri, **_tiny())
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning: tracking to" in line]
    assert len(warnings) == 1 and "the work goes on" in warnings[0]
    assert "tracking" not in summary
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "oof_predictions.csv").exists()


def test_the_uri_comes_from_the_option_else_the_environment(monkeypatch, tmp_path):
    from hybridpose.errors import ConfigError
    from hybridpose.tracking import ENV, tracking_uri

    monkeypatch.delenv(ENV, raising=False)
    assert tracking_uri(None) is None
    monkeypatch.setenv(ENV, "sqlite:///here.db")
    assert tracking_uri(None) == f"sqlite:///{Path('here.db').resolve()}"
    assert tracking_uri(str(tmp_path / "mlruns")) == (tmp_path / "mlruns").as_uri()
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'hybridpose\[track\]'"):
        tracking_uri("sqlite:///x.db")


def test_without_a_uri_mlflow_is_never_imported(tmp_path):
    code = ("import sys; import hybridpose.train.fit, hybridpose.train.tune, hybridpose.evaluation.evaluate, "
            "hybridpose.rules.runs; from hybridpose.tracking import Tracker, tracking_uri; "
            "t = Tracker(tracking_uri(None), 'x'); t.params({'a': 1}); t.metrics({'b': 2}); "
            "assert t.epoch_logger(None) is None and 'mlflow' not in sys.modules, sorted(sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDPOSE_TRACKING_URI"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=300)


def test_fit_without_mlflow_fails_before_any_work(monkeypatch, capsys, tmp_path, no_work):
    from hybridpose_cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.setattr("sys.argv", ["hybridpose", "fit", str(tmp_path), "--out", str(tmp_path / "run"),
                                     "--track", "sqlite:///x.db"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "pip install 'hybridpose[track]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_evaluate_logs_its_figures_and_files(tracked, store, tmp_path):
    from hybridpose.evaluation.evaluate import evaluate

    run, fitted = tracked
    res = evaluate(run, out=tmp_path / "evaluation", track=store, show_progress=False)
    client = mlflow.MlflowClient(store)
    got = client.get_run(res["tracking"]["run_id"])
    fused = next(r for r in res["metrics"] if r["branch"] == "fused" and r["level"] == "class")
    assert got.data.metrics["fused/class/top1"] == pytest.approx(fused["top1"])
    assert got.data.tags["hybridpose.command"] == "evaluate"
    assert got.data.tags["hybridpose.run_id"] == client.get_run(fitted["tracking"]["run_id"]).data.params["run_id"]
    names = {a.path for a in client.list_artifacts(got.info.run_id)}
    assert {"report.html", "predictions_evaluated.csv"} <= names


def test_a_tuned_study_is_a_run_and_its_trials_nested_runs(small_data, store, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    from hybridpose.train.tune import SearchSpace, tune

    fixed = _tiny()
    for k in ("preset", "backbone", "input_size", "show_progress"):
        fixed.pop(k)
    space = SearchSpace(preset="tiny", backbones=["test_efficientnet"], input_sizes=[32])
    res = tune(small_data, tmp_path / "tune", storage=f"sqlite:///{tmp_path / 'study.db'}", trials=2, folds=2,
               space=space, show_progress=False, track=store, **fixed)
    client = mlflow.MlflowClient(store)
    parent = client.get_run(res["tracking"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["study"] == res["study"]
    assert parent.data.metrics["trials"] == 2
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["optuna.trial"] for r in children) == ["0", "1"]
    for child in children:
        assert "trial.cam_weight" in child.data.params and "train.cam_weight" in child.data.params
        assert not mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list",
                                               filter_string=f"source_run_id = '{child.info.run_id}'")
        if child.data.tags["optuna.state"] == "COMPLETE":
            assert "value" in child.data.metrics and "fold1/stage1/train_loss" in child.data.metrics
    if res["best"]:
        best = next(r for r in children if r.data.tags["optuna.trial"] == str(res["best"]["trial"]))
        assert best.data.metrics["value"] == pytest.approx(res["best"]["value"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_runs_predictions(tracked, store, small_data, tmp_path):
    """`mlflow models serve -m runs:/<id>/model` (about 25 s to start here) answers POST /invocations."""
    run, summary = tracked
    port = _free_port()
    # mlflow starts `uvicorn` by name: this interpreter's scripts first, as in an activated venv
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{summary['tracking']['run_id']}/model",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(tmp_path / "serve.log", "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        photo = str(sorted(small_data.rglob("*.jpg"))[0])
        body = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[photo]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            [row] = json.load(response)["predictions"]
        sent = base64.b64encode(Path(photo).read_bytes()).decode()
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[sent]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            [from_bytes] = json.load(response)["predictions"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        server.wait(timeout=30)
    from hybridpose.inference.loaded import LoadedModel

    [expected] = LoadedModel.load(run).predict_files([photo])
    assert (row["path"], row["status"], row["class"]) == (photo, "ok", expected["class"])
    assert row["confidence"] == pytest.approx(expected["confidence"])
    assert (from_bytes["path"], from_bytes["status"], from_bytes["class"]) == ("image[0]", "ok", expected["class"])


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not start in {seconds} s: {log.read_text()[-2000:]}")


def test_calibrate_logs_its_outcome_and_a_finished_run_tracked_again_brings_its_rules(tracked, store, small_data,
                                                                                     tmp_path):
    import shutil

    from hybridpose.rules.runs import calibrate
    from hybridpose.train.fit import fit

    run = tmp_path / "run"
    shutil.copytree(tracked[0], run)
    res = calibrate(run, track=store, min_fired=1, min_gain=0.0, alpha=1.0)
    client = mlflow.MlflowClient(store)
    got = client.get_run(res["tracking"]["run_id"])
    assert got.data.metrics["calibration/cv_after"] == pytest.approx(res["cv_after"])
    assert got.data.metrics["calibration/rules"] == len(res["rules"].rules)
    assert {"rules.yaml", "calibration.csv"} <= {a.path for a in client.list_artifacts(got.info.run_id)}
    again = fit(small_data, run, folds=2, track=store, **_tiny())  # complete: nothing trained, the run logged
    assert again["already_complete"]
    logged = client.get_run(again["tracking"]["run_id"])
    assert "rules.yaml" in {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert "calibration/pairs" in logged.data.metrics and "fold2/stage3/train_loss" in logged.data.metrics
