"""The image branch's network, shared by training and prediction: a timm backbone, one linear head
per hierarchy level, a projection head; its checkpoint format; the device and mixed-precision choice.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import atomic
from .backbones import create_backbone, freeze_early
from .errors import RunError

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
        self.heads = nn.ModuleDict({level: nn.Linear(width, n) for level, n in level_sizes.items()})
        self.projection = nn.Sequential(nn.Linear(width, 512), nn.ReLU(inplace=True), nn.Linear(512, proj_dim))
        self.dropout = nn.Dropout(dropout)

    def forward_all(self, x: torch.Tensor) -> Outputs:
        fmap = self.backbone.forward_features(x)
        emb = fmap.mean(dim=(2, 3))
        dropped = self.dropout(emb)
        logits = {level: head(dropped) for level, head in self.heads.items()}
        return Outputs(fmap, emb, logits, self.projection(emb))

    def head_logits(self, fmap: torch.Tensor, level: str | None = None) -> torch.Tensor:
        """Logits from a feature map without dropout: the graph that CAMs differentiate."""
        return self.heads[level or self.levels[0]](fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Leaf-level logits (what pytorch-grad-cam and plain users expect)."""
        return self.head_logits(self.backbone.forward_features(x))

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose output is ``fmap`` (for pytorch-grad-cam's target_layers)."""
        for name in ("bn2", "conv_head", "norm_pre", "final_conv"):
            if hasattr(self.backbone, name) and not isinstance(getattr(self.backbone, name), nn.Identity):
                return getattr(self.backbone, name)
        return list(self.backbone.children())[-1]


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
                freeze_fraction: float = 0.0, load_weights: bool = True) -> tuple[PoseNet, dict]:
    net, spec, source = create_backbone(backbone, weights=weights, pretrained=pretrained, load_weights=load_weights)
    frozen = freeze_early(net, freeze_fraction)
    info = {"mean": spec.mean, "std": spec.std, "weights_source": source, "frozen_blocks": frozen}
    return PoseNet(net, level_sizes), info


def save_checkpoint(path: Path, *, run_id: str, fold: int, stage: int, state_dict: dict, meta: dict) -> None:
    atomic.save_torch(path, {"format": CHECKPOINT_FORMAT, "version": 1, "run_id": run_id, "fold": fold, "stage": stage,
                             "meta": meta, "state_dict": state_dict})


def load_checkpoint(path: Path, *, run_id: str | None = None, fold: int | None = None, stage: int | None = None,
                    fix: str = "") -> dict:
    """A checked checkpoint; ``fix`` is the command that rewrites it (named in the error)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        todo = f"delete it and run `{fix}` to retrain that stage" if fix else "delete it and run the same `hybridpose fit` command to retrain that stage"
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
