"""The ``onnxruntime`` engine: the image branch as one ONNX graph holding the K fold networks (input: uint8
crops N x 3 x S x S, normalised inside the graph; outputs: the averaged probabilities of every hierarchy
level and the mean embedding): an exported bundle's, which needs no PyTorch, or a run's, built from its
checkpoints on first use and kept in the run folder (``onnx_graph.run_graph``)."""
from __future__ import annotations

import importlib.util

import numpy as np

from .. import atomic
from ..errors import RunError
from . import BUNDLE_FORMAT, MANIFEST, Engine, is_bundle, register
from .onnx_graph import EMBEDDING, check_external_data, discard_graph, run_graph


class OnnxImageBranch:
    """The image branch's prediction interface over an ONNX Runtime session."""
    name = "image"
    input = "crops"

    def __init__(self, path, manifest: dict, preprocessing, threads: int = 0):
        self.path_ = path
        self.threads_ = threads    # 0: one per core
        self._session = open_session(path, threads)  # now: a damaged file fails at load, before any photo is read
        self.manifest_ = manifest
        self.preprocessing_ = preprocessing
        spec = manifest["image_model"]
        self.levels_ = list(spec["levels"])
        self.folds_ = list(spec["folds"])
        self.n_folds_ = int(spec["n_folds"])
        self.input_name_ = spec["input"]["name"]

    @classmethod
    def load(cls, run, config: dict | None = None, *, threads: int = 0, partial: bool = False,
             **_options) -> "OnnxImageBranch":
        """The graph of a bundle or of a run (built now when missing or stale) in an ONNX Runtime session on
        ``threads`` cores (0: all)."""
        from ..branches.image import Preprocessing

        if not is_bundle(run):
            return cls._of_run(run, config or run.read_config(), threads, partial)
        manifest = read_manifest(run)
        path = run.file(manifest["image_model"]["file"])
        if not path.exists():
            raise RunError(f"{path}: missing from the bundle; export it again with `hybridpose export RUN --out {run.root}`.")
        check_external_data(path)
        return cls(path, manifest, Preprocessing.from_meta(manifest["image_model"]["input"]), threads)

    @classmethod
    def _of_run(cls, run, config: dict, threads: int, partial: bool) -> "OnnxImageBranch":
        graph = run_graph(run, config, partial)
        try:
            return cls._of_graph(graph, threads)
        except RunError:
            discard_graph(graph)  # damaged since it was built: built again, once
            return cls._of_graph(run_graph(run, config, partial), threads)

    @classmethod
    def _of_graph(cls, graph, threads: int) -> "OnnxImageBranch":
        from ..branches.image import Preprocessing

        return cls(graph.path, {"image_model": graph.spec}, Preprocessing.from_meta(graph.spec["input"]), threads)

    @property
    def session_(self):
        if self._session is None:
            self._session = open_session(self.path_, self.threads_)
        return self._session

    def set_threads(self, threads: int) -> int:
        """Run on ``threads`` cores (a new session, made when next used); returns the count before."""
        before = self.threads_
        if threads != before:
            self.threads_, self._session = threads, None
        return before

    @property
    def missing_folds(self) -> list[int]:
        return [f for f in range(1, self.n_folds_ + 1) if f not in self.folds_]

    def _run(self, crops) -> dict[str, np.ndarray]:
        x = crops.numpy() if hasattr(crops, "numpy") else np.asarray(crops)
        outs = self.session_.run(None, {self.input_name_: np.ascontiguousarray(x, dtype=np.uint8)})
        names = [o.name for o in self.session_.get_outputs()]
        return {n: o.astype(np.float64) for n, o in zip(names, outs)}

    def predict_level_proba(self, crops, hierarchy=None) -> dict[str, np.ndarray]:
        """Mean softmax of the fold networks, per level (as ``ImageBranch.predict_level_proba``)."""
        out = self._run(crops)
        return {lv: out[lv] for lv in self.levels_}

    def predict_proba(self, crops) -> np.ndarray:
        return self.predict_level_proba(crops)[self.levels_[0]]

    def embed(self, crops) -> np.ndarray:
        return self._run(crops)[EMBEDDING]


def open_session(path, threads: int = 0, spin: bool | None = None):
    """A CPU session on ``threads`` cores for the graph at ``path`` (a bundle's: ``check_external_data`` first);
    by default it spin-waits only with all cores (0): with a set count, other processes share the machine."""
    import onnxruntime as ort

    spin = threads == 0 if spin is None else spin
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: one per core
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own kinds for a damaged or foreign file
        raise RunError(f"{path}: ONNX Runtime cannot load it ({str(e)[:160]}); export the bundle again.") from None


def read_manifest(run) -> dict:
    path = run.file(MANIFEST)
    try:
        manifest = atomic.read_json(path)
    except (OSError, ValueError):
        raise RunError(f"{path}: missing or damaged; export the bundle again with `hybridpose export RUN --out DIR`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or "image_model" not in manifest:
        raise RunError(f"{path}: not a hybridpose bundle manifest; export the bundle again.")
    return manifest


ENGINE = register(Engine("onnxruntime", lambda: importlib.util.find_spec("onnxruntime") is not None,
                         OnnxImageBranch.load, reads=("bundle", "run")))
