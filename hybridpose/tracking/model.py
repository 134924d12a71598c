"""A run as an MLflow model (``mlflow models serve -m runs:/<id>/model``), logged from code: ``model_code.py``
is the model, the run folder its one artifact, so nothing of ours is pickled and loading runs no stored code.

``predict`` takes a DataFrame with a ``path`` column (photos, or clips for a clip run, on the serving machine)
and returns one row per photo (per person found) with predictions.csv's fields and ``keypoints``
(``inference/loaded.py``). Needs MLflow: imported only when tracking is on.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from ..run.folder import RunFolder
from . import Tracker

ARTIFACT = "run"
NAME = "model"  # runs:/<id>/model
CODE = Path(__file__).with_name("model_code.py")
# what prediction never reads: the training crop cache and the earlier stages' checkpoints
NOT_SHIPPED = ("crops_*.npz", "stage1.pt", "stage2.pt", "oof_image.csv", "evaluation*", "*.tmp")


class HybridPoseModel(PythonModel):
    """The pyfunc: the run loaded once through our own loaders (checkpoints read as plain data only)."""

    def load_context(self, context) -> None:
        from ..inference.loaded import LoadedModel

        self.model = LoadedModel.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame(self.model.predict_files(input_paths(model_input)))


def input_paths(model_input) -> list[str]:
    """The ``path`` column of a DataFrame (or a list of paths, or of ``{"path": ...}`` records)."""
    if isinstance(model_input, pd.DataFrame):
        if "path" not in model_input:
            raise ValueError(f"the input needs a 'path' column (photo paths); it has {list(model_input.columns)}")
        return [str(p) for p in model_input["path"]]
    return [str(p["path"] if isinstance(p, dict) else p) for p in model_input]


def log_model(tracker: Tracker, run: RunFolder) -> None:
    """The run (without its caches) as the MLflow model ``model`` of the tracker's run."""
    if not tracker.enabled:
        return
    with tempfile.TemporaryDirectory(prefix="hybridpose-model-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        staged = Path(tmp) / run.root.name
        shutil.copytree(run.root, staged, ignore=shutil.ignore_patterns(*NOT_SHIPPED))
        tracker.call("log the model", lambda client: _log(tracker, staged))


def _log(tracker: Tracker, staged: Path) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    import hybridpose

    with _fluent_uri(tracker.uri), mlflow.start_run(run_id=tracker.run_id, nested=mlflow.active_run() is not None):
        mlflow.pyfunc.log_model(
            name=NAME, python_model=str(CODE), artifacts={ARTIFACT: str(staged)},
            signature=ModelSignature(inputs=Schema([ColSpec("string", "path")])),
            pip_requirements=[f"hybridpose=={hybridpose.__version__}", f"mlflow=={mlflow.__version__}"])


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` (log_model has no client form), then put back as it
    was: unset stays unset and $MLFLOW_TRACKING_URI keeps its value (set_tracking_uri changes both)."""
    from mlflow.tracking._tracking_service import utils

    before, env = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env
