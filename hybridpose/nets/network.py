"""The image branch's network, shared by training and prediction: a timm backbone, one linear head
per hierarchy level, a projection head; its checkpoint format; the device and mixed-precision choice.

Every timm family gives the same B x C x h x w feature map (``feature_grid``): a CNN's
``forward_features`` as is, an NHWC output (Swin, MambaOut) permuted, a vision transformer's patch
tokens (prefix tokens dropped) reshaped to the patch grid. The map passes through ``PoseNet.cam_target``
(an identity), the layer pytorch-grad-cam hooks, so training CAMs and ``explain`` see the same map.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import atomic
from ..errors import ConfigError, RunError
from .backbones import create_backbone, freeze_early, timm_kwargs_of

CHECKPOINT_FORMAT = "hybridpose-checkpoint"


@dataclass
class Outputs:
    fmap: torch.Tensor               # B x C x h x w, the CAM target layer
    embedding: torch.Tensor          # B x C, pooled
    logits: dict[str, torch.Tensor]  # per level
    projection: torch.Tensor         # B x proj_dim, for the contrastive loss


class PoseNet(nn.Module):
    def __init__(self, backbone: nn.Module, level_sizes: dict[str, int], proj_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.levels = list(level_sizes)
        width = backbone.num_features
        self.cam_target = nn.Identity()  # receives the grid feature map: pytorch-grad-cam's target layer
        self.heads = nn.ModuleDict({level: nn.Linear(width, n) for level, n in level_sizes.items()})
        self.projection = nn.Sequential(nn.Linear(width, 512), nn.ReLU(inplace=True), nn.Linear(512, proj_dim))
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The B x C x h x w feature map, as the output of ``cam_target``."""
        return self.cam_target(feature_grid(self.backbone, x))

    def forward_all(self, x: torch.Tensor) -> Outputs:
        fmap = self.features(x)
        emb = fmap.mean(dim=(2, 3))
        dropped = self.dropout(emb)
        logits = {level: head(dropped) for level, head in self.heads.items()}
        return Outputs(fmap, emb, logits, self.projection(emb))

    def head_logits(self, fmap: torch.Tensor, level: str | None = None) -> torch.Tensor:
        """Logits from a feature map without dropout: the graph that CAMs differentiate."""
        return self.heads[level or self.levels[0]](fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Leaf-level logits (what pytorch-grad-cam and plain users expect): ``head_logits(features(x))``."""
        return self.head_logits(self.features(x))

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose output is ``fmap`` (for pytorch-grad-cam's target_layers), for every family."""
        return self.cam_target


def feature_grid(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``backbone.forward_features(x)`` as B x C x h x w, whatever the model family's output format."""
    f = backbone.forward_features(x)
    if not torch.is_tensor(f) or f.ndim not in (3, 4):
        shape = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
        raise ValueError(f"{type(backbone).__name__}.forward_features gave {shape}; expected B x C x h x w, "
                         "B x h x w x C or B x tokens x C")
    width = backbone.num_features
    if f.ndim == 4:
        fmt = getattr(backbone, "output_fmt", "NCHW")
        if str(getattr(fmt, "value", fmt)) == "NHWC" or (f.shape[1] != width and f.shape[-1] == width):
            f = f.permute(0, 3, 1, 2)
        return f
    tokens = f[:, int(getattr(backbone, "num_prefix_tokens", 0) or 0):]  # class / register tokens dropped
    h, w = token_grid(backbone, x.shape[-2:], tokens.shape[1])
    norm = getattr(backbone, "fc_norm", None)  # ViTs that pool by mean normalise in the head: per token here
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
        tokens = norm(tokens)
    return tokens.transpose(1, 2).reshape(len(tokens), tokens.shape[-1], h, w)


def token_grid(backbone: nn.Module, size: tuple[int, int], n: int) -> tuple[int, int]:
    """The h x w patch grid of ``n`` tokens from an input of ``size`` (H, W)."""
    H, W = int(size[0]), int(size[1])
    candidates = []
    embed = getattr(backbone, "patch_embed", None)
    if embed is not None and hasattr(embed, "dynamic_feat_size"):
        try:
            candidates.append(tuple(embed.dynamic_feat_size((H, W))))
        except Exception:  # noqa: BLE001 - a patch embedding without a fixed patch size
            pass
    if embed is not None and getattr(embed, "grid_size", None) is not None:
        candidates.append(tuple(embed.grid_size))
    try:
        reduction = int(backbone.feature_info[-1]["reduction"])
        candidates += [(math.ceil(H / reduction), math.ceil(W / reduction)), (H // reduction, W // reduction)]
    except Exception:  # noqa: BLE001 - no feature_info
        pass
    root = math.isqrt(n)
    if H == W and root * root == n:
        candidates.append((root, root))
    for h, w in candidates:
        if h * w == n:
            return int(h), int(w)
    raise ValueError(f"{type(backbone).__name__}: cannot lay {n} tokens of a {H} x {W} input out on a grid")


def level_probs(model: "PoseNet", x: torch.Tensor, use_amp: bool = True) -> tuple[dict[str, torch.Tensor], "Outputs"]:
    """Softmax per level (float32) and the raw outputs of one forward pass."""
    with autocast(x.device, use_amp):
        out = model.forward_all(x)
    return {lv: torch.softmax(out.logits[lv].float(), 1) for lv in model.levels}, out


def autocast(device: torch.device, enabled: bool = True):
    """float16 autocast on CUDA (AMP); a no-op on the CPU."""
    return torch.autocast("cuda", dtype=torch.float16) if enabled and device.type == "cuda" else nullcontext()


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(backbone: str, level_sizes: dict[str, int], *, weights: str | None = None, pretrained: bool = False,
                freeze_fraction: float = 0.0, load_weights: bool = True, input_size: int | None = None,
                timm_kwargs: dict[str, Any] | None = None) -> tuple[PoseNet, dict]:
    """The network and ``info`` (normalisation, weights source, frozen blocks, timm keyword arguments).

    ``input_size``: the crop size; models that cannot take any size (fixed-size transformers) are built
    for it, and one forward pass checks the backbone takes it. ``timm_kwargs``: rebuild exactly as
    recorded in ``info["timm_kwargs"]`` (prediction); by default they are chosen by the model's class.
    """
    net, spec, source = create_backbone(backbone, weights=weights, pretrained=pretrained, load_weights=load_weights,
                                        input_size=input_size, timm_kwargs=timm_kwargs)
    frozen = freeze_early(net, freeze_fraction)
    model = PoseNet(net, level_sizes)
    info = {"mean": spec.mean, "std": spec.std, "weights_source": source, "frozen_blocks": frozen,
            "timm_kwargs": timm_kwargs_of(net)}
    if input_size:
        info["feature_shape"] = check_input_size(model, backbone, input_size)
    return model, info


def check_input_size(model: PoseNet, backbone: str, input_size: int) -> list[int]:
    """C, h, w of the feature map of an ``input_size`` crop; a ConfigError if the backbone cannot take it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            fmap = model.features(torch.zeros(1, 3, input_size, input_size))
    except Exception as e:  # noqa: BLE001 - timm raises many kinds for sizes a model cannot take
        raise ConfigError(f"--backbone {backbone} cannot take --input-size {input_size} crops "
                          f"({type(e).__name__}: {str(e)[:160]}); choose another input size or backbone.") from None
    finally:
        model.train(was_training)
    return [int(v) for v in fmap.shape[1:]]


def save_checkpoint(path: Path, *, run_id: str, fold: int, stage: int, state_dict: dict, meta: dict) -> None:
    atomic.save_torch(path, {"format": CHECKPOINT_FORMAT, "version": 1, "run_id": run_id, "fold": fold, "stage": stage,
                             "meta": meta, "state_dict": state_dict})


def load_checkpoint(path: Path, *, run_id: str | None = None, fold: int | None = None, stage: int | None = None,
                    fix: str = "") -> dict:
    """A checked checkpoint; ``fix`` is the command that rewrites it (named in the error)."""
    todo = f"delete it and run `{fix}` to retrain that stage" if fix else "delete it and run the same `hybridpose fit` command to retrain that stage"
    try:
        ckpt = atomic.load_torch(path)
    except atomic.NotPlainData as e:
        raise RunError(f"{path}: not a plain weights file ({e}); refused to load it, nothing of it ran; {todo}.") from None
    except Exception as e:
        raise RunError(f"{path}: checkpoint is damaged ({type(e).__name__}); {todo}.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a hybridpose checkpoint; remove it from the run directory or use another --out.")
    for key, want in (("run_id", run_id), ("fold", fold), ("stage", stage)):
        if want is not None and ckpt.get(key) != want:
            raise RunError(
                f"{path}: checkpoint belongs to another run or fold ({key} is {ckpt.get(key)!r}, expected {want!r}); "
                "use a fresh --out for a run with other settings."
            )
    return ckpt
