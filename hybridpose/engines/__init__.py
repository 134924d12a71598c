"""Prediction engines: what runs the image branch's networks at prediction time, found by name.

An engine is one module here that registers an ``Engine``: a ``name``, ``available()`` (is its runtime
installed?), ``load_image_branch(run, config, *, device, partial, threads)`` that returns an object with the
image branch's prediction interface (``name``, ``input``, ``predict_level_proba``, ``predict_proba``,
``embed``, ``preprocessing_``, ``missing_folds``), and what it ``reads``. ``torch`` reads a run's fold
checkpoints; ``onnxruntime`` reads one ONNX graph: an exported bundle's (``hybridpose export``) or a run's,
built from its checkpoints on first use and kept in the run folder (``onnx_graph.py``). ``choose`` picks
one: onnxruntime wherever it is installed, torch for a run otherwise. The other branches (e.g. the keypoint
model) load the same way whatever the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import RunError
from ..progress import log
from ..registry import Registry
from .onnx_graph import GraphUnavailable, run_graph

if TYPE_CHECKING:
    from ..run.folder import RunFolder

MANIFEST = "manifest.json"          # present in an exported bundle, never in a run folder
BUNDLE_FORMAT = "hybridpose-bundle"


@dataclass(frozen=True)
class Engine:
    name: str
    available: Callable[[], bool]
    load_image_branch: Callable[..., Any]
    reads: tuple[str, ...]  # what it can run: "run" (fold checkpoints), "bundle" (an exported bundle)


ENGINES: Registry[Engine] = Registry("engine", "hybridpose.engines", error=RunError,
                                    unknown="--engine {name}: unknown engine; choose one of {known}.")
register = ENGINES.register

FAST = "onnxruntime"     # the default wherever it is installed
CHECKPOINTS = "torch"    # a run's own networks: the fallback, and what gradients (CAMs) need


def available() -> list[str]:
    return ENGINES.names()


def is_bundle(run: "RunFolder") -> bool:
    return run.file(MANIFEST).exists()


def default_engine(run: "RunFolder", device: str = "auto") -> str:
    """onnxruntime for a bundle; for a run too where it is installed and no GPU was asked for (it runs on
    the CPU), else torch."""
    if is_bundle(run):
        return FAST
    return FAST if ENGINES.get(FAST).available() and not device.startswith("cuda") else CHECKPOINTS


def pick_engine(run: "RunFolder", name: str | None = None, *, device: str = "auto") -> Engine:
    """The engine asked for (by default ``default_engine``), checked against what ``run`` holds. An engine
    whose runtime is not installed is an error that says how to install it."""
    bundle = is_bundle(run)
    name = name or default_engine(run, device)
    engine = ENGINES.get(name)
    if not engine.available():
        raise RunError(f"--engine {name}: its runtime is not installed; run `pip install {name}` "
                       f"(or `pip install 'hybridpose[onnx]'`), or choose another engine.")
    if "bundle" not in engine.reads and bundle:
        raise RunError(f"{run.root}: an exported bundle (ONNX models, no PyTorch checkpoints); --engine {name} "
                       f"needs the run folder it was exported from; use --engine {FAST} with a bundle.")
    if "run" not in engine.reads and not bundle:
        raise RunError(f"{run.root}: a run folder, not an exported bundle; --engine {name} reads bundles: run "
                       f"`hybridpose export {run.root} --out BUNDLE` and predict with --model BUNDLE.")
    return engine


def choose(run: "RunFolder", config: dict, name: str | None = None, *, partial: bool = False,
           device: str = "auto") -> Engine:
    """``pick_engine``'s engine, ready to load: onnxruntime on a run builds the run's graph now when it is
    missing or stale. Where that graph cannot be made (a read-only run folder), ``--engine onnxruntime`` is
    that error, and the default the torch engine, said in one line."""
    engine = pick_engine(run, name, device=device)
    if engine.name != FAST or is_bundle(run):
        return engine
    try:
        run_graph(run, config, partial)
    except GraphUnavailable as e:
        if name is not None:
            raise RunError(f"{e} Or predict with --engine {CHECKPOINTS} (the checkpoints, slower).") from None
        log(f"{e} Predicting with the {CHECKPOINTS} engine instead (the checkpoints, slower).", soft_wrap=True)
        return pick_engine(run, CHECKPOINTS)
    return engine


def with_gradients(run: "RunFolder") -> str | None:
    """The engine for work that needs the networks' gradients (CAMs): torch for a run; a bundle has only its
    graph (None: its default, and explanations without CAMs)."""
    return None if is_bundle(run) else CHECKPOINTS
