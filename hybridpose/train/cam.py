"""Class activation maps computed inside the autograd graph, and the keypoint body region.

The in-graph maps follow pytorch-grad-cam's definitions (HiResCAM: sum over channels of
gradient x activation; XGrad-CAM: channel weights sum(grad x act) / sum(act); Grad-CAM:
mean gradient), so a loss on them trains the network to look where the maps should look.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..features import K


def _hirescam(grads: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    return (grads * fmap).sum(1)


def _xgradcam(grads: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    weights = (grads * fmap).sum((2, 3)) / (fmap.sum((2, 3)) + 1e-7)
    return (weights[:, :, None, None] * fmap).sum(1)


def _gradcam(grads: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    return (grads.mean((2, 3))[:, :, None, None] * fmap).sum(1)


CAM_METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hirescam": _hirescam,
    "xgradcam": _xgradcam,
    "gradcam": _gradcam,
}


def cam_in_graph(fmap: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, method: str = "hirescam",
                 create_graph: bool = True) -> torch.Tensor:
    """B x h x w non-negative map for class ``target`` of each sample; differentiable if create_graph."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {sorted(CAM_METHODS)}")
    score = logits.gather(1, target[:, None]).sum()
    grads = torch.autograd.grad(score, fmap, create_graph=create_graph)[0]
    return F.relu(CAM_METHODS[method](grads, fmap))


BODY_SEGMENTS = [
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_hip"), ("right_shoulder", "left_hip"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("left_ankle", "left_foot_index"),
    ("right_ankle", "right_foot_index"), ("nose", "left_shoulder"), ("nose", "right_shoulder"),
]
_SEG_A = torch.tensor([K[a] for a, _ in BODY_SEGMENTS])
_SEG_B = torch.tensor([K[b] for _, b in BODY_SEGMENTS])


def body_coverage(kp: torch.Tensor, size: tuple[int, int], supersample: int = 4, min_visibility: float = 0.3,
                  width: float = 0.22) -> torch.Tensor:
    """Share of each of the h x w cells covered by the body (limbs and torso drawn as thick segments).

    ``kp``: B x 33 x 3 (x, y in [-1, 1] image coordinates, visibility). Segments with an invisible end are
    left out; the thickness is ``width`` x torso length. Returns B x h x w in [0, 1].
    """
    h, w = size
    H, W = h * supersample, w * supersample
    ys = (torch.arange(H, device=kp.device, dtype=kp.dtype) + 0.5) / H * 2 - 1
    xs = (torch.arange(W, device=kp.device, dtype=kp.dtype) + 0.5) / W * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, -1, 1, 2)  # 1 x HW x 1 x 2
    a, b = kp[:, _SEG_A, :2], kp[:, _SEG_B, :2]                                         # B x S x 2
    ok = (kp[:, _SEG_A, 2] >= min_visibility) & (kp[:, _SEG_B, 2] >= min_visibility)
    ab = (b - a)[:, None]                                                               # B x 1 x S x 2
    t = (((grid - a[:, None]) * ab).sum(-1) / (ab.pow(2).sum(-1) + 1e-9)).clamp(0, 1)
    dist = (grid - (a[:, None] + t[..., None] * ab)).norm(dim=-1)                       # B x HW x S
    dist = dist.masked_fill(~ok[:, None], float("inf"))
    torso = ((kp[:, K["left_shoulder"], :2] + kp[:, K["right_shoulder"], :2]) / 2
             - (kp[:, K["left_hip"], :2] + kp[:, K["right_hip"], :2]) / 2).norm(dim=-1)
    radius = (width * torso).clamp(min=2.0 / min(H, W))[:, None]
    inside = (dist.min(-1).values <= radius).to(kp.dtype).reshape(-1, 1, H, W)
    return F.avg_pool2d(inside, supersample).squeeze(1)


def energy_inside(cam: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Share of each map's energy that falls on the body region (B,), NaN for an all-zero map."""
    total = cam.sum((1, 2))
    return (cam * coverage).sum((1, 2)) / total.where(total > 0, torch.full_like(total, float("nan")))
