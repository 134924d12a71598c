"""The image branch as one ONNX graph: the K fold networks (uint8 crops N x 3 x S x S in, normalised inside
the graph; the averaged probabilities of every hierarchy level and the mean embedding out). `hybridpose
export` writes it into a bundle; for a run, `predict` builds it from the fold checkpoints on first use and
keeps it in the run folder (``RunFolder.onnx_graph``):

    RUN/onnx/<key>/image_model.onnx   the graph
    RUN/onnx/<key>/image_model.json   what it holds (a bundle manifest's ``image_model`` entry), what it came from

``key`` hashes the final checkpoints' content, the folds and ``GRAPH_VERSION``: a refitted or resumed fold
gets a new graph, and the stale one is removed. A graph is written into a temporary folder beside it and
renamed into place, so an interrupted build leaves no graph, and of two concurrent builds one renames and
the other keeps the first one's.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .. import atomic
from ..data.content import sha256_of_regular_file
from ..data.hierarchy import Hierarchy
from ..errors import RunError
from ..progress import log

if TYPE_CHECKING:
    from ..branches.image import ImageBranch
    from ..run.folder import RunFolder

GRAPH_VERSION = 1  # bump when the graph written from the same checkpoints changes: every cached graph is rebuilt
OPSET = 17
INPUT_NAME = "crops"
EMBEDDING = "embedding"
IMAGE_MODEL = "image_model.onnx"  # in a bundle and in a run's graph folder
SPEC = "image_model.json"
GRAPH_FORMAT = "hybridpose-onnx-graph"


class GraphUnavailable(RunError):
    """A run's graph could not be made: its folder cannot be written, or the networks cannot be exported."""


@dataclass(frozen=True)
class Graph:
    path: Path   # the .onnx file
    spec: dict   # what a bundle manifest says under "image_model": folds, input, levels, outputs


def run_graph(run: "RunFolder", config: dict, partial: bool = False) -> Graph:
    """The graph of ``run``'s final fold networks, from the run folder, built now when missing or stale; a
    fold missing is ``ImageBranch.load``'s error unless ``partial``."""
    from ..branches.image import final_folds

    folds = final_folds(run, config, partial)
    folder = run.onnx_graph(graph_key(run, config, folds))
    return read_graph(folder) or _build(run, config, partial, folder)


def graph_key(run: "RunFolder", config: dict, folds: list[int]) -> str:
    from ..branches.image import FINAL_STAGE

    try:
        sources = {str(f): _content_hash(run.checkpoint(f, FINAL_STAGE)) for f in folds}
    except OSError as e:
        raise GraphUnavailable(f"{e.filename}: cannot be read ({e.strerror}).") from None
    source = {"version": GRAPH_VERSION, "opset": OPSET, "run_id": config.get("run_id"),
              "levels": Hierarchy.from_dict(config["hierarchy"]).levels, "checkpoints": sources}
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]


def _content_hash(path: Path) -> str:
    st = path.stat()
    return _hash_of(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=64)
def _hash_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """Once per process and file version: choosing the engine and loading it both ask."""
    return sha256_of_regular_file(path)


def read_graph(folder: Path) -> Graph | None:
    """The graph cached in ``folder``; None when it is not there whole."""
    try:
        meta = atomic.read_json(folder / SPEC)
    except (OSError, ValueError):
        return None
    ok = isinstance(meta, dict) and meta.get("format") == GRAPH_FORMAT and isinstance(meta.get("image_model"), dict)
    return Graph(folder / IMAGE_MODEL, meta["image_model"]) if ok and (folder / IMAGE_MODEL).is_file() else None


def discard_graph(graph: Graph) -> None:
    """Remove a cached graph (one ONNX Runtime cannot load: the next ``run_graph`` builds it again)."""
    shutil.rmtree(graph.path.parent, ignore_errors=True)


def _build(run: "RunFolder", config: dict, partial: bool, folder: Path) -> Graph:
    from ..branches.image import ImageBranch

    t0 = time.perf_counter()
    tmp = _temporary_folder(folder)
    try:
        image = ImageBranch.load(run, config, device="cpu", partial=partial)
        hierarchy = Hierarchy.from_dict(config["hierarchy"])
        try:
            write_onnx(image, hierarchy.levels, tmp / IMAGE_MODEL)
            atomic.write_json(tmp / SPEC, {"format": GRAPH_FORMAT, "version": GRAPH_VERSION,
                                           "image_model": image_model_spec(image, hierarchy)})
            _rename(tmp, folder)
        except RunError:
            raise
        except Exception as e:  # noqa: BLE001 - the exporter's own kinds, a full disk: the torch engine still works
            raise GraphUnavailable(f"{folder}: the fold networks could not be exported to ONNX "
                                   f"({type(e).__name__}: {str(e)[:160]}).") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(folder)
    log(f"{folder.parent}: the run's ONNX graph, built from its checkpoints in {time.perf_counter() - t0:.1f} s "
        "(predict reuses it until they change)", soft_wrap=True)
    return read_graph(folder)


def _temporary_folder(folder: Path) -> Path:
    try:
        folder.parent.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}-", suffix=".tmp", dir=folder.parent))
    except OSError as e:
        run = folder.parent.parent
        raise GraphUnavailable(f"{folder.parent}: cannot be written ({e.strerror or e}), so the run's ONNX graph "
                               f"cannot be kept there; make it writable, or `hybridpose export {run} --out BUNDLE` "
                               "and predict with --model BUNDLE.") from None


def _rename(tmp: Path, folder: Path) -> None:
    if folder.exists() and read_graph(folder) is None:
        shutil.rmtree(folder, ignore_errors=True)  # a damaged one
    try:
        os.rename(tmp, folder)
    except OSError:
        if read_graph(folder) is None:
            raise
        # another process built the same graph first: keep its


def _remove_stale(folder: Path) -> None:
    """The graphs of other checkpoints, and temporaries of builds killed more than an hour ago."""
    now = time.time()
    for entry in folder.parent.iterdir():
        if entry == folder or not entry.is_dir():
            continue
        if not entry.name.startswith(".") or now - entry.stat().st_mtime > atomic.STALE_AGE:
            shutil.rmtree(entry, ignore_errors=True)


def image_model_spec(image: "ImageBranch", h: Hierarchy) -> dict:
    """The graph's input and outputs, as a bundle manifest's ``image_model`` entry."""
    prep = image.preprocessing_
    return {
        "file": IMAGE_MODEL, "folds": image.folds_, "n_folds": image.n_folds_,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 3, prep.input_size, prep.input_size],
                  "layout": "NCHW, RGB", "input_size": prep.input_size, "eval_margin": prep.eval_margin,
                  "mean": list(prep.mean), "std": list(prep.std),
                  "normalisation": "inside the graph: (crops / 255 - mean) / std",
                  "crop": "square around the skeleton's keypoint box, widened by eval_margin of its longer "
                          "side on every side, padded with the photo's mean colour (hybridpose.data.crops)"},
        "levels": h.levels,
        "outputs": {**{lv: {"shape": ["batch", len(h.classes(lv))], "classes": h.classes(lv),
                            "meaning": "mean softmax of the fold networks"} for lv in h.levels},
                    EMBEDDING: {"meaning": "mean pooled backbone embedding of the fold networks"}},
    }


class _Ensemble:
    """Builds the torch module exported to ONNX (kept out of module scope so torch loads lazily)."""

    @staticmethod
    def module(image: "ImageBranch", levels: list[str]):
        import torch
        from torch import nn

        prep = image.preprocessing_

        class Ensemble(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.nets = nn.ModuleList(image.models_)
                self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1))
                self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1))

            def forward(self, crops):
                x = (crops.float() / 255 - self.mean) / self.std
                sums, emb = [0.0] * len(levels), 0.0
                for net in self.nets:
                    e = net.features(x).mean(dim=(2, 3))
                    emb = emb + e
                    for i, lv in enumerate(levels):
                        sums[i] = sums[i] + torch.softmax(net.heads[lv](e), 1)
                k = float(len(self.nets))
                return (*[s / k for s in sums], emb / k)

        return Ensemble().eval()


def write_onnx(image: "ImageBranch", levels: list[str], path: Path) -> None:
    import torch

    size = image.preprocessing_.input_size
    model = _Ensemble.module(image, levels)
    names = [*levels, EMBEDDING]
    with atomic.atomic_path(path) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, (torch.zeros(2, 3, size, size, dtype=torch.uint8),), str(tmp), dynamo=False,
                          input_names=[INPUT_NAME], output_names=names, opset_version=OPSET,
                          dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]})
        check_external_data(tmp)  # a graph past 2 GB keeps tensors in files beside it: never outside its folder


def check_external_data(path: Path) -> None:
    """A RunError when a tensor of the ONNX graph at ``path`` keeps its data in a file outside the graph's
    folder (an absolute path, ``..``, or a link that leads out), before ONNX Runtime reads any of it.
    Without the ``onnx`` package this is left to ONNX Runtime, which refuses such paths itself."""
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a damaged file: ONNX Runtime's load says so in one line
        return
    root = path.parent.resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or Path(location).is_absolute() or not (root / location).resolve().is_relative_to(root):
            raise RunError(f"{path}: tensor {tensor.name!r} reads its data from {location!r}, outside {root}; "
                           "refused to load it; export the bundle again with `hybridpose export RUN --out DIR`.")


def _tensors(graph) -> Iterator:
    """Every tensor of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for a in node.attribute:
            yield from [a.t] if a.HasField("t") else []
            yield from a.tensors
            for sparse in [*([a.sparse_tensor] if a.HasField("sparse_tensor") else []), *a.sparse_tensors]:
                yield from (sparse.values, sparse.indices)
            for g in [*([a.g] if a.HasField("g") else []), *a.graphs]:
                yield from _tensors(g)
