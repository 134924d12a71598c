"""Prediction engines: what runs the image branch's networks at prediction time, found by name.

An engine is one module here that registers an ``Engine``: a ``name``, ``available()`` (is its runtime
installed?), and ``load_image_branch(run, config, *, device, partial)`` that returns an object with the
image branch's prediction interface (``name``, ``input``, ``predict_level_proba``, ``predict_proba``,
``embed``, ``preprocessing_``, ``missing_folds``). ``torch`` reads a run's fold checkpoints;
``onnxruntime`` reads the ONNX graph of an exported bundle (``hybridpose export``). The other branches
(e.g. the keypoint model) load the same way whatever the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import RunError
from ..registry import Registry

if TYPE_CHECKING:
    from ..run.folder import RunFolder

MANIFEST = "manifest.json"          # present in an exported bundle, never in a run folder
IMAGE_MODEL = "image_model.onnx"    # the bundle's K fold networks in one graph
BUNDLE_FORMAT = "hybridpose-bundle"


@dataclass(frozen=True)
class Engine:
    name: str
    available: Callable[[], bool]
    load_image_branch: Callable[..., Any]
    reads: str  # what it needs, for messages: "run" (fold checkpoints) or "bundle"


ENGINES: Registry[Engine] = Registry("engine", "hybridpose.engines", error=RunError,
                                    unknown="--engine {name}: unknown engine; choose one of {known}.")
register = ENGINES.register


def available() -> list[str]:
    return ENGINES.names()


def is_bundle(run: "RunFolder") -> bool:
    return run.file(MANIFEST).exists()


def pick_engine(run: "RunFolder", name: str | None = None) -> Engine:
    """The engine asked for, checked against what ``run`` holds; by default onnxruntime for a bundle and
    torch for a run. An engine whose runtime is not installed is an error that says how to install it."""
    bundle = is_bundle(run)
    if name is None:
        name = "onnxruntime" if bundle else "torch"
    engine = ENGINES.get(name)
    if not engine.available():
        raise RunError(f"--engine {name}: its runtime is not installed; run `pip install {name}` "
                       f"(or `pip install 'hybridpose[onnx]'`), or choose another engine.")
    if engine.reads == "bundle" and not bundle:
        raise RunError(f"{run.root}: a run folder, not an exported bundle; --engine {name} reads bundles: run "
                       f"`hybridpose export {run.root} --out BUNDLE` and predict with --model BUNDLE.")
    if engine.reads == "run" and bundle:
        raise RunError(f"{run.root}: an exported bundle (ONNX models, no PyTorch checkpoints); --engine {name} "
                       f"needs the run folder it was exported from; use --engine onnxruntime with a bundle.")
    return engine

