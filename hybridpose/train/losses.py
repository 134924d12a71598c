"""Losses of the three stages."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cam import cam_in_graph, energy_inside


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over one batch; anchors without a positive are skipped."""
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has = n_pos > 0
    if not has.any():
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has]
    return -mean_log_prob.mean()


def multitask_ce(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: dict[str, float],
                 label_smoothing: float = 0.0) -> torch.Tensor:
    total = sum(weights.values())
    return sum(
        weights[lv] * F.cross_entropy(logits[lv].float(), targets[lv], label_smoothing=label_smoothing)
        for lv in logits
    ) / total


def cam_loss(model, fmap: torch.Tensor, target: torch.Tensor, coverage: torch.Tensor, valid: torch.Tensor,
             method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean share of CAM energy outside the body region (the loss), and the per-sample share inside."""
    cam = cam_in_graph(fmap.float(), model.head_logits(fmap.float()), target, method, create_graph=True)
    inside = energy_inside(cam, coverage)
    ok = valid & torch.isfinite(inside)
    if not ok.any():
        return fmap.sum() * 0.0, inside.detach()
    return (1 - inside[ok]).mean(), inside.detach()
