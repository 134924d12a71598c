"""A run as an MLflow model (``mlflow models serve -m runs:/<id>/model``), logged from code: ``model_code.py``
is the model, the run folder its one artifact, so nothing of ours is pickled and loading runs no stored code.

``predict`` takes a DataFrame with a ``path`` column (photos, or clips for a clip run, on the serving machine)
or an ``image`` column (a photo's or clip's bytes, base64: what a remote client sends), and returns one row
per photo (per person found) with predictions.csv's fields and ``keypoints`` (``inference/loaded.py``).
Needs MLflow: imported only when tracking is on.
"""
from __future__ import annotations

import base64
import binascii
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

from ..data.content import sniff
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
        if isinstance(model_input, pd.DataFrame) and "image" in model_input and model_input["image"].notna().any():
            return pd.DataFrame(predict_images(self.model, list(model_input["image"])))
        return pd.DataFrame(self.model.predict_files(input_paths(model_input)))


def input_paths(model_input) -> list[str]:
    """The ``path`` column of a DataFrame (or a list of paths, or of ``{"path": ...}`` records)."""
    if isinstance(model_input, pd.DataFrame):
        if "path" not in model_input:
            raise ValueError("the input needs a 'path' column (files on the serving machine) or an 'image' column "
                             f"(base64 bytes); it has {list(model_input.columns)}")
        return [str(p) for p in model_input["path"]]
    return [str(p["path"] if isinstance(p, dict) else p) for p in model_input]


def predict_images(model, images: list) -> list[dict]:
    """Rows for photos (or clips) sent as base64 bytes: each decoded into a folder of ours, named by its content
    (never by the client), predicted, and the folder removed. A row's ``path`` is ``image[i]``; an entry that
    is not base64 or not a photo or video gets a row with predict's status and reason, never an exception."""
    with tempfile.TemporaryDirectory(prefix="hybridpose-pyfunc-") as tmp:
        paths, bad = [], {}
        for i, text in enumerate(images):
            got = _decoded(text)
            if isinstance(got, str):
                bad[i] = got
                continue
            path = Path(tmp) / f"{i}{sniff(got[:64])}"
            path.write_bytes(got)
            paths.append((i, path))
        rows = dict(zip((i for i, _ in paths), model.predict_files([p for _, p in paths]))) if paths else {}
    out = []
    for i in range(len(images)):
        row = rows.get(i) or {"status": "unreadable", "reason": bad[i], "keypoints": None}
        out.append({**row, "path": f"image[{i}]"})
    return out


def _decoded(text) -> bytes | str:
    """The bytes, or the reason they cannot be a photo or video."""
    if not isinstance(text, str) or not text:
        return "no image bytes (empty)"
    try:
        data = base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        return "not base64"
    if not data:
        return "zero-byte file"
    if sniff(data[:64]) is None:
        return "not an image (cannot identify format)"
    return data


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
            signature=ModelSignature(inputs=Schema([ColSpec("string", "path", required=False),
                                                     ColSpec("string", "image", required=False)])),
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
