"""The image graph in int8: ONNX Runtime static quantization (QDQ, per-channel weights, uint8 activations),
calibrated on the run's own crops framed as at prediction time (``export --int8``).

Calibration crops come from the run's training crop cache (``RUN/crops_<size>.npz``: every photo or frame,
cropped once with the widest training margin), re-framed to the prediction margin and size; where the run
holds no cache, from the photos of ``poses.csv``, cropped as ``predict`` crops them. The networks' bodies are
quantized (``OPS``); the normalisation at the input, the heads and the softmax averaging at the output stay in
float, so the outputs are still probabilities, not steps of 1/255.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import atomic
from ..errors import RunError

if TYPE_CHECKING:
    from ..branches.image import Preprocessing
    from ..run.folder import RunFolder

CALIBRATION = 256   # crops, spread evenly over the run's rows (class-sorted, so every class is in)
BATCH = 16
MIN_CROPS = 8
# What is quantized: convolutions, their activations (ReLU6 = Clip) and the residual Adds. Measured on yoga8's
# 481 photos (a 3-fold EfficientNet-Lite0 at 160 px, 2-core AVX2 CPU, one thread): convolutions alone cost 0.84x
# the float graph's CPU time (a quantize / dequantize pair around every activation), these three 0.51x, with the
# image branch's top-1 86.7% float, 86.1% and 87.1% (benchmarks/README.md).
OPS = ("Conv", "Clip", "Add")


def calibration_crops(run: "RunFolder", prep: "Preprocessing", n: int = CALIBRATION) -> tuple[np.ndarray, str]:
    """(N, 3, S, S) uint8 crops to calibrate on, and where they came from (for the manifest)."""
    crops, source = _from_bank(run, prep, n)
    if crops is None:
        crops, source = _from_photos(run, prep, n)
    if crops is None or len(crops) < MIN_CROPS:
        raise RunError(f"{run.root}: no training crops to calibrate the int8 graph on (no crops_*.npz, and the "
                       "photos of poses.csv cannot be read from here); run the export from the folder `fit` ran "
                       "in, or export without --int8.")
    return crops, source


def _spread(total: int, n: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))


def _from_bank(run: "RunFolder", prep: "Preprocessing", n: int) -> tuple[np.ndarray | None, str]:
    from PIL import Image

    for path in sorted(run.root.glob("crops_*.npz"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            with np.load(path, allow_pickle=False) as z:  # a cache file never runs code
                margin = float(json.loads(str(z["meta"]))["margin"])
                total = len(z["images"])
                images = z["images"][_spread(total, n)]
        except (OSError, ValueError, KeyError):
            continue
        big = images.shape[1]
        side = min(big, int(round(big * (1 + 2 * prep.eval_margin) / (1 + 2 * margin))))
        lo = (big - side) // 2
        size = prep.input_size
        out = [np.asarray(Image.fromarray(im[lo:lo + side, lo:lo + side]).resize((size, size), Image.BILINEAR))
               for im in images]
        return np.stack(out).transpose(0, 3, 1, 2).copy(), f"{path.name}: {len(out)} of its {total} crops, framed as predict frames them"
    return None, ""


def _from_photos(run: "RunFolder", prep: "Preprocessing", n: int) -> tuple[np.ndarray | None, str]:
    import pandas as pd

    from ..data.crops import crop_photo
    from ..data.images import ImageLoadError, open_rgb

    poses = run.file("poses.csv")
    if not poses.exists():
        return None, ""
    table = pd.read_csv(poses, keep_default_na=False)
    boxes = ["box_x0", "box_y0", "box_x1", "box_y1"]
    out = []
    for i in _spread(len(table), n):
        row = table.iloc[int(i)]
        try:
            image = open_rgb(row["path"])
        except (ImageLoadError, OSError):
            continue
        box = np.asarray([row[c] for c in boxes], float) if row["status"] == "ok" else None
        crop, _ = crop_photo(image, box, None, prep.eval_margin, prep.input_size, 1)
        out.append(crop)
    if not out:
        return None, ""
    return np.stack(out).transpose(0, 3, 1, 2).copy(), f"poses.csv: {len(out)} photos cropped as predict does"


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an array of crops, in batches."""

    def __init__(self, crops: np.ndarray, name: str):
        self.batches = iter([{name: crops[i:i + BATCH]} for i in range(0, len(crops), BATCH)])

    def get_next(self):
        return next(self.batches, None)

    def rewind(self):  # not needed for MinMax; part of the protocol
        pass


def quantize_graph(src: Path, dst: Path, crops: np.ndarray, input_name: str) -> dict:
    """Write the int8 version of the float graph ``src`` to ``dst``, calibrated on ``crops``; returns how."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tmp = Path(tempfile.mkdtemp(prefix=".int8-", dir=dst.parent))
    try:
        pre = tmp / "pre.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # noqa: BLE001 - an optimisation only: quantize the graph as it is
                shutil.copyfile(src, pre)
            with atomic.atomic_path(dst) as out:
                quantize_static(str(pre), str(out), _Reader(crops, input_name), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(OPS),
                                nodes_to_exclude=_outside_the_networks(pre))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"precision": "int8", "method": "onnxruntime static quantization, QDQ",
            "weights": "int8, per channel", "activations": "uint8, MinMax calibration",
            "quantized_ops": list(OPS), "calibration_crops": int(len(crops))}


def _outside_the_networks(path: Path) -> list[str]:
    """The Add nodes not fed by a convolution: the sums of the fold networks' softmax outputs and embeddings
    (quantized, the probabilities would be steps of 1/255); the residual Adds inside the networks are fed by
    one and are quantized (then ONNX Runtime keeps the tensors between two convolutions in int8)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Add" and not any(made_by.get(i) == "Conv" for i in n.input)]
