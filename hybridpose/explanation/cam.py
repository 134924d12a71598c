"""Class activation maps of the image branch's fold networks, and their overlay on a crop."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..defaults import CAM_METHODS
from ..errors import DatasetError

if TYPE_CHECKING:
    import torch

    from ..inference.classifier import HybridPoseClassifier


def grad_cam_class(method: str):
    """pytorch-grad-cam's class for a method of ``defaults.CAM_METHODS``; a DatasetError for any other."""
    if method not in CAM_METHODS:
        raise DatasetError(f"unknown CAM method {method!r}; choose one of {sorted(CAM_METHODS)}.")
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, CAM_METHODS[method])


def cam_maps(clf: HybridPoseClassifier, crops: "torch.Tensor | np.ndarray", targets: Sequence[int], method: str = "hirescam") -> np.ndarray:
    """B x H x W maps in [0, 1] for leaf class ``targets``, averaged over the fold models."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = clf.image_branch.normalise(crops)
    maps = []
    for model in clf.image_branch.models_:
        with grad_cam_class(method)(model=model, target_layers=[model.cam_layer]) as cam:
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
    m = np.mean(maps, axis=0)
    return m / np.maximum(m.max(axis=(1, 2), keepdims=True), 1e-8)


def overlay(crop: np.ndarray, cam: np.ndarray | None):
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    hwc = np.asarray(crop).transpose(1, 2, 0)
    if cam is None:
        return Image.fromarray(np.ascontiguousarray(hwc))
    rgb = hwc.astype(np.float32) / 255
    return Image.fromarray(show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=0.6))
