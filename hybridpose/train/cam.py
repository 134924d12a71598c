"""Class activation maps computed inside the autograd graph, and the keypoint body region.

The in-graph maps follow pytorch-grad-cam's definitions (HiResCAM: sum over channels of
gradient x activation; XGrad-CAM: channel weights sum(grad x act) / sum(act); Grad-CAM:
mean gradient), so a loss on them trains the network to look where the maps should look.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..skeletons import Skeleton


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


def body_coverage(kp: torch.Tensor, size: tuple[int, int], skeleton: Skeleton, supersample: int = 4,
                  min_visibility: float = 0.3) -> torch.Tensor:
    """Share of each of the h x w cells covered by the body (the skeleton's bones drawn as thick segments).

    ``kp``: B x n x 3 (x, y in [-1, 1] image coordinates, visibility). Segments with an invisible end are
    left out; the thickness is ``skeleton.mask_width`` x its reference length (torso for the body).
    Returns B x h x w in [0, 1].
    """
    seg_a, seg_b = (torch.as_tensor(i, device=kp.device) for i in skeleton.edge_index())
    ref_a, ref_b = skeleton.scale_index()
    h, w = size
    H, W = h * supersample, w * supersample
    ys = (torch.arange(H, device=kp.device, dtype=kp.dtype) + 0.5) / H * 2 - 1
    xs = (torch.arange(W, device=kp.device, dtype=kp.dtype) + 0.5) / W * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, -1, 1, 2)  # 1 x HW x 1 x 2
    a, b = kp[:, seg_a, :2], kp[:, seg_b, :2]                                           # B x S x 2
    vis = torch.isfinite(kp[..., :2]).all(-1).to(kp.dtype) if skeleton.handed else kp[..., 2]  # hands: v is handedness
    ok = (vis[:, seg_a] >= min_visibility) & (vis[:, seg_b] >= min_visibility)
    ab = (b - a)[:, None]                                                               # B x 1 x S x 2
    t = (((grid - a[:, None]) * ab).sum(-1) / (ab.pow(2).sum(-1) + 1e-9)).clamp(0, 1)
    dist = (grid - (a[:, None] + t[..., None] * ab)).norm(dim=-1)                       # B x HW x S
    dist = dist.masked_fill(~ok[:, None], float("inf"))
    reference = (kp[:, ref_a, :2].nanmean(1) - kp[:, ref_b, :2].nanmean(1)).norm(dim=-1).nan_to_num(0.0)  # a missing hand: NaN
    radius = (skeleton.mask_width * reference).clamp(min=2.0 / min(H, W))[:, None]
    inside = (dist.min(-1).values <= radius).to(kp.dtype).reshape(-1, 1, H, W)
    return F.avg_pool2d(inside, supersample).squeeze(1)


def energy_inside(cam: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Share of each map's energy that falls on the body region (B,), NaN for an all-zero map."""
    total = cam.sum((1, 2))
    return (cam * coverage).sum((1, 2)) / total.where(total > 0, torch.full_like(total, float("nan")))
