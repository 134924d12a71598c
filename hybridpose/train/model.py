"""The image branch: a timm backbone, one linear head per hierarchy level, a projection head."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import create_backbone, freeze_early


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
