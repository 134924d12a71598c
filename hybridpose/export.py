"""`hybridpose export RUN --out DIR`: a finished run as a portable bundle that predicts without the run.

    DIR/manifest.json        format, versions, the image model's input and outputs, every file's sha256
    DIR/image_model.onnx     the K fold networks in one graph: uint8 crops N x 3 x S x S (RGB, normalised
                             in the graph) -> averaged probabilities per hierarchy level, mean embedding
    DIR/keypoint_model.json  the keypoint branch (XGBoost's own JSON inside; see docs/FORMATS.md)
    a clip run's bundle:     clip_keypoint_model.json (XGBoost's JSON) and the sequence branch:
                             sequence_model.json, sequence_model.pt (plain tensors) and sequence_model.onnx
                             (its seed networks in one graph, what the bundle predicts with), and
                             trajectory_model.json (the trajectory branch's paths, plain JSON)
    with --int8:             image_model.onnx is the int8 graph (``engines/quantize.py``), calibrated on the
                             run's own crops; manifest and config.json say so (``precision``)
    DIR/fusion.json          temperatures and weights per level and branch
    DIR/config.json          the run's settings (hierarchy, skeleton, branches, ...), so DIR is a run to
                             predict, evaluate DATA --model DIR and explain (without CAMs)
    DIR/hierarchy.csv, DIR/skeleton.json, DIR/rules.yaml (when the run has rules)

The bundle is a run folder for `RunFolder`: the same file names, minus the checkpoints and training
tables; ``manifest.json`` marks it, and the onnxruntime engine (``engines/ort.py``) reads it.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np

from . import atomic
from .branches.image import ImageBranch
from .data.hierarchy import Hierarchy
from .engines import BUNDLE_FORMAT, MANIFEST, is_bundle
from .engines.onnx_graph import IMAGE_MODEL, INPUT_NAME, OPSET, image_model_spec, write_onnx
from .engines.quantize import calibration_crops, quantize_graph
from .errors import RunError
from .outputs import check_writable
from .run.folder import RunFolder
from .skeletons import get_skeleton

COPIED = ("config", "fusion", "rules")  # RunFolder files a bundle keeps as they are


def export(run: str | Path, out: str | Path, *, partial: bool = False, int8: bool = False) -> dict:
    """Write the bundle of ``run`` into ``out`` (with ``int8``: its image graph quantized); returns the manifest."""
    folder, out = RunFolder(run), Path(out)
    config = folder.read_config()
    if is_bundle(folder):
        raise RunError(f"{folder.root}: already an exported bundle; export the run folder it came from.")
    if out.resolve() == folder.root.resolve():
        raise RunError(f"--out {out}: the run folder itself; give a new folder for the bundle.")
    check_writable(out, "folder")
    from .branches import DEFAULT_BRANCHES, branch_class

    image = ImageBranch.load(folder, config, device="cpu", partial=partial)
    hierarchy = Hierarchy.from_dict(config["hierarchy"])
    precision = {"precision": "float32"}
    if int8:  # before anything is written: a run with nothing to calibrate on is an error, not half a bundle
        crops, source = calibration_crops(folder, image.preprocessing_)
    out.mkdir(parents=True, exist_ok=True)
    write_onnx(image, hierarchy.levels, out / IMAGE_MODEL)
    if int8:
        float_graph = out / f".{IMAGE_MODEL}.float32"
        (out / IMAGE_MODEL).replace(float_graph)
        try:
            precision = {**quantize_graph(float_graph, out / IMAGE_MODEL, crops, INPUT_NAME), "calibration": source}
        finally:
            float_graph.unlink(missing_ok=True)
    for name in config.get("branches", DEFAULT_BRANCHES):
        if name != "image":  # e.g. the keypoint model: its own portable file, saved again into the bundle
            branch = branch_class(name).load(folder, config)
            branch.save(RunFolder(out))
            if hasattr(branch, "write_onnx"):  # the sequence branch: its networks as a graph, too
                branch.write_onnx(RunFolder(out))
    for attr in COPIED:
        src = getattr(folder, attr)
        if src.exists():
            with atomic.atomic_path(getattr(RunFolder(out), attr)) as tmp:
                shutil.copyfile(src, tmp)
    atomic.write_json(RunFolder(out).config, {**config, "bundle": precision})
    write_hierarchy_csv(hierarchy, out / "hierarchy.csv")
    sk = get_skeleton(config.get("skeleton"))
    atomic.write_json(out / "skeleton.json", {"name": sk.name, "keypoints": list(sk.keypoints),
                                              "edges": [list(e) for e in sk.edges],
                                              "mirror_pairs": [list(p) for p in sk.mirror_pairs],
                                              "estimator": sk.estimator, "features": sk.feature_names()})
    manifest = make_manifest(folder, config, image, hierarchy, out)
    manifest["image_model"]["precision"] = precision
    manifest["kind"] = "clips" if folder.is_clip_run(config) else "photos"
    atomic.write_json(out / MANIFEST, manifest)
    return manifest


def write_hierarchy_csv(h: Hierarchy, path: Path) -> None:
    rows = [",".join(h.levels)] + [",".join(h.path(leaf)[lv] for lv in h.levels) for leaf in h.leaves]
    atomic.write_text(path, "\n".join(rows) + "\n")


def make_manifest(run: RunFolder, config: dict, image: ImageBranch, h: Hierarchy, out: Path) -> dict:
    import onnx
    import torch
    import xgboost

    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    return {
        "format": BUNDLE_FORMAT, "version": 1,
        "source_run": str(run.root.resolve()), "run_id": config.get("run_id"),
        "versions": {"hybridpose": _version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnx_opset": OPSET, "onnxruntime": ort_version, "xgboost": xgboost.__version__,
                     "python": __import__("platform").python_version()},
        "image_model": image_model_spec(image, h),
        "branches": config.get("branches"), "skeleton": config.get("skeleton", "body"),
        "files": {name: _sha256(out / name) for name in files},
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute difference per level between two sets of level probabilities."""
    return {lv: float(np.max(np.abs(a[lv] - b[lv]))) for lv in a}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hybridpose")
    except PackageNotFoundError:
        return "unknown"


def mcnemar(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value for paired predictions: ``b`` pairs the first got right and the second
    wrong, ``c`` the other way (the binomial test of b against b + c at one half)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
