"""Experiment tracking with MLflow (docs/TRACKING.md): ``fit``, ``tune`` and ``evaluate`` log to a tracking URI
(``track=``, else ``$HYBRIDPOSE_TRACKING_URI``; off when neither is given).

Tracking never loses the work: every MLflow call goes through ``Tracker.call``; the first that fails is one
warning line and tracking is off for the rest of the process (for that URI). MLflow is imported only when
tracking is on; ``tracking_uri`` says before any work, in one line, when it is not installed.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..progress import log

ENV = "HYBRIDPOSE_TRACKING_URI"
EXPERIMENT = "hybridpose"  # the experiment runs go to, unless $MLFLOW_EXPERIMENT_NAME names another
MAX_PARAM_VALUE = 6000     # MLflow's limits on a parameter's value and key
MAX_PARAM_KEY = 250
# set before mlflow is imported, unless the user set them: no usage data sent anywhere, and a tracking server
# that is down costs seconds, not minutes of retries
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

_FAILED: set[str] = set()  # URIs that failed in this process: warned once, then left alone


def forget_failures() -> None:
    """Track again URIs that failed earlier in this process (tests; a long-lived process after a fix)."""
    _FAILED.clear()


def tracking_uri(track: str | None) -> str | None:
    """The URI to log to: ``track``, else ``$HYBRIDPOSE_TRACKING_URI``, else None (off); a ConfigError naming the
    install command when MLflow is missing. A relative ``sqlite:///`` path or a plain folder is made absolute."""
    uri = track if track is not None else os.environ.get(ENV) or None
    if not uri:
        return None
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"--track {uri}: tracking needs MLflow: run `pip install 'hybridpose[track]'` "
                          "(or `pip install -e '.[track]'` in a checkout).")
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    if "://" not in uri:  # a file store folder
        return Path(uri).resolve().as_uri()
    return uri


def _mlflow():
    for key, value in MLFLOW_ENV.items():
        os.environ.setdefault(key, value)
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # our own line says where the run went
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


class Tracker:
    """One MLflow run, started on first use and ended by the outermost ``with`` (FAILED on an error, KILLED on
    Ctrl-C). ``Tracker(None)`` does nothing. A tracker given to a nested command (a tune trial's fit) is entered
    again: the inner ``with`` leaves the run open."""

    def __init__(self, uri: str | None, name: str, *, tags: dict[str, str] | None = None,
                 parent_id: str | None = None, with_model: bool = True) -> None:
        self.uri, self.name, self.tags, self.parent_id = uri, name, dict(tags or {}), parent_id
        self.with_model = with_model  # whether a fit logs its run as an MLflow model too
        self.run_id: str | None = None
        self.logged_curves: set[tuple[int, int]] = set()  # (fold, stage) whose epochs were logged as they ran
        self.ended_as: str | None = None  # the MLflow status to end with, whatever ends the outermost ``with``
        self._client = None
        self._depth = 0

    @property
    def enabled(self) -> bool:
        return self.uri is not None and self.uri not in _FAILED

    def __enter__(self) -> "Tracker":
        self._depth += 1
        return self

    def __exit__(self, kind, error, tb) -> None:
        self._depth -= 1
        if self._depth == 0 and self.run_id is not None:
            status = self.ended_as or ("FINISHED" if kind is None else
                                       "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
            self.call("end the run", lambda c: c.set_terminated(self.run_id, status))

    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)`` on the started run's client; None (and tracking off) when it fails."""
        if not self.enabled:
            return None
        try:
            self._start()
            return fn(self._client)
        except Exception as e:  # noqa: BLE001 - whatever MLflow raises, the work goes on
            _FAILED.add(self.uri)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log(f"[yellow]warning: tracking to {self.uri} failed ({what}: {reason[:300]}); the work goes on, "
                "nothing more is tracked.[/yellow]", soft_wrap=True)
            return None

    def _start(self) -> None:
        if self.run_id is not None:
            return
        if self.uri.startswith("file:"):  # MLflow 3 keeps its folder store behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow = _mlflow()
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        self._client = mlflow.MlflowClient(tracking_uri=self.uri)
        experiment = _experiment(self._client, self.uri)
        tags = {**self.tags, **({MLFLOW_PARENT_RUN_ID: self.parent_id} if self.parent_id else {})}
        self.run_id = self._client.create_run(experiment, run_name=self.name, tags=tags).info.run_id

    def start(self) -> str | None:
        """The MLflow run id, the run created now if need be (None when tracking is off)."""
        self.call("start a run", lambda c: None)
        return self.run_id if self.enabled else None

    def child(self, name: str, tags: dict[str, str] | None = None) -> "Tracker":
        """A tracker on a new run nested under this one (off when this one is)."""
        parent = self.start()
        return Tracker(self.uri if parent else None, name, tags=tags, parent_id=parent)

    def params(self, values: dict[str, Any]) -> None:
        if not self.enabled or not values:
            return
        from mlflow.entities import Param

        items = [Param(k[:MAX_PARAM_KEY], _text(v)[:MAX_PARAM_VALUE]) for k, v in flatten(values).items()]
        self.call("log parameters", lambda c: c.log_batch(self.run_id, params=items))

    def metrics(self, values: dict[str, Any], step: int = 0) -> None:
        """Finite numbers only (NaN: no value)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in values.items() if _finite(v)]
        if items:
            self.call("log metrics", lambda c: c.log_batch(self.run_id, metrics=items))

    def set_tags(self, values: dict[str, str]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in values.items()]
        self.call("set tags", lambda c: c.log_batch(self.run_id, tags=items))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        """``path`` (a file or a folder's files) under the run's artifacts, in ``folder``."""
        if self.enabled and path.exists():
            log_one = (lambda c: c.log_artifacts(self.run_id, str(path), folder)) if path.is_dir() else \
                (lambda c: c.log_artifact(self.run_id, str(path), folder))
            self.call(f"log {path.name}", log_one)

    def epoch_logger(self, then: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
        """An ``on_epoch`` hook for fit: each epoch's row as metrics ``fold<k>/stage<s>/<name>`` at step epoch,
        then ``then(row)`` (just ``then`` when tracking is off)."""
        if not self.enabled:
            return then

        def on_epoch(row: dict) -> None:
            self.metrics(epoch_metrics(row), step=int(row["epoch"]))
            self.logged_curves.add((int(row["fold"]), int(row["stage"])))
            if then is not None:
                then(row)
        return on_epoch

    def say_where(self) -> None:
        if self.enabled and self.run_id:
            log(f"tracked: MLflow run {self.run_id} ({self.name}) at {self.uri}", soft_wrap=True)


EPOCH_KEYS = ("fold", "stage", "epoch")


def epoch_metrics(row: dict) -> dict[str, float]:
    """One epoch's metrics row (fold, stage, epoch, train_loss, val_loss, ...) as metric keys."""
    prefix = f"fold{int(row['fold'])}/stage{int(row['stage'])}"
    return {f"{prefix}/{k}": v for k, v in row.items() if k not in EPOCH_KEYS}


def metric_key(key: str) -> str:
    """``key`` with what MLflow does not allow in a metric name (e.g. ``+``) as ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``train.stage1.lr``); lists and other values as they are."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and not isinstance(value, bool)
    except (TypeError, ValueError):
        return False


def _experiment(client, uri: str) -> str:
    """The experiment's id, created if need be; a SQLite store keeps its artifacts in ``mlartifacts`` beside the
    database (not in whatever folder the command ran from)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):].partition("?")[0]).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)
