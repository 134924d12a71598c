"""The three training stages of one fold.

1. supervised-contrastive + cross-entropy (leaf level),
2. multi-task cross-entropy, one head per hierarchy level,
3. stage 2's losses plus a CAM loss that pulls the map onto the keypoint body region.
Each stage: AdamW, one-cycle schedule (warmup, then annealing), early stopping on validation
macro-F1, and the best epoch's weights kept.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import f1_score

from ..nets.network import PoseNet, autocast, level_probs
from .cam import body_coverage
from .config import TrainConfig
from .data import Augmenter
from .losses import cam_loss, multitask_ce, supcon_loss


@dataclass
class Labels:
    """Per-level class indices of every photo, and the leaf -> level index maps."""
    leaf: np.ndarray
    leaf_to_level: dict[str, np.ndarray]  # level -> array over leaf index

    def level_targets(self, leaf_t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {lv: torch.as_tensor(m, device=leaf_t.device)[leaf_t] for lv, m in self.leaf_to_level.items()}


@dataclass
class StageResult:
    state: dict
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)


def _loss(stage: int, model: PoseNet, batch, labels: Labels, cfg: TrainConfig, use_amp: bool, aug: Augmenter):
    targets = labels.level_targets(batch.leaf)
    leaf_level = model.levels[0]
    with autocast(batch.x.device, use_amp):
        out = model.forward_all(batch.x)
    if stage == 1:
        ce = multitask_ce({leaf_level: out.logits[leaf_level]}, {leaf_level: targets[leaf_level]}, {leaf_level: 1.0}, cfg.label_smoothing)
        return ce + cfg.supcon_weight * supcon_loss(out.projection, batch.leaf, cfg.supcon_temperature), None
    weights = {lv: 1.0 if lv == leaf_level else cfg.coarse_level_weight for lv in model.levels}
    loss = multitask_ce(out.logits, targets, weights, cfg.label_smoothing)
    if stage == 3:
        cov = body_coverage(batch.kp, out.fmap.shape[-2:], aug.skeleton)
        cl, inside = cam_loss(model, out.fmap, batch.leaf, cov, batch.has_person, cfg.cam_method)
        return loss + cfg.cam_weight * cl, inside
    return loss, None


def stage_seed(seed: int, fold: int, stage: int) -> int:
    """The seed of one stage of one fold of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, fold, stage]).generate_state(1)[0])


def seed_stage(seed: int, aug: Augmenter) -> None:
    """Every generator a stage draws from starts at ``seed``: a stage resumed in a fresh process draws
    what it would have drawn after the earlier stages in this one."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # dropout, and CUDA's generators too
    aug.gen.manual_seed(seed)  # augmentation


def train_stage(stage: int, model: PoseNet, aug: Augmenter, labels: Labels, train_idx: np.ndarray,
                val_idx: np.ndarray, cfg: TrainConfig, device: torch.device, *, seed: int = 0,
                on_epoch=None) -> StageResult:
    """One stage; everything it draws at random comes from ``seed`` (``stage_seed``)."""
    seed_stage(seed, aug)
    sc = cfg.stage(stage)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=sc.lr, weight_decay=cfg.weight_decay)
    steps = max(1, int(np.ceil(len(train_idx) / cfg.batch_size)))
    # OneCycleLR divides by (warmup steps - 1) and (anneal steps - 1): keep both phases >= 2 steps
    total = max(sc.epochs * steps, 4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=sc.lr, total_steps=total, pct_start=min(max(sc.warmup_fraction, 2.0 / total), 0.5),
        anneal_strategy="cos")
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = np.random.default_rng(seed)
    best_key, best, best_state, best_epoch, history, stale = None, {}, None, 0, [], 0
    for epoch in range(1, sc.epochs + 1):
        model.train()
        t0, seen, losses = time.perf_counter(), 0, []
        order = rng.permutation(train_idx)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            batch = aug.batch(idx, labels.leaf[idx], train=True)
            loss, _ = _loss(stage, model, batch, labels, cfg, use_amp, aug)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(idx)
            losses.append(float(loss.detach()))
        if device.type == "cuda":
            torch.cuda.synchronize()
        speed = seen / (time.perf_counter() - t0)
        val = evaluate(model, aug, labels, val_idx, cfg, device)
        row = {"stage": stage, "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": opt.param_groups[0]["lr"], "images_per_s": speed, **val.metrics}
        history.append(row)
        key = (round(val.metrics["val_macro_f1"], 4), -val.metrics["val_loss"] - (val.metrics.get("cam_outside", 0.0) if stage == 3 else 0.0))
        if best_key is None or key > best_key:
            best_key, best, best_epoch, stale = key, row, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if on_epoch:
            on_epoch(row)
        if stale >= sc.patience:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    return StageResult(best_state, best_epoch, history, best)


@dataclass
class EvalResult:
    probs: dict[str, np.ndarray]
    embedding: np.ndarray
    cam_inside: np.ndarray
    metrics: dict


@torch.no_grad()
def predict_bank(model: PoseNet, aug: Augmenter, idx: np.ndarray, cfg: TrainConfig, device: torch.device,
                 with_cam: bool = False, cam_method: str | None = None, labels_leaf: np.ndarray | None = None) -> EvalResult:
    """Softmax per level (and optionally CAM energy inside the body) for bank rows ``idx``."""
    model.eval()
    probs: dict[str, list] = {lv: [] for lv in model.levels}
    embs, inside = [], []
    use_amp = cfg.amp and device.type == "cuda"
    bs = cfg.batch_size * 2
    for i in range(0, len(idx), bs):
        part = idx[i : i + bs]
        leaf = labels_leaf[part] if labels_leaf is not None else np.zeros(len(part), dtype=np.int64)
        batch = aug.batch(part, leaf, train=False)
        level_p, out = level_probs(model, batch.x, use_amp)
        for lv in model.levels:
            probs[lv].append(level_p[lv].cpu().numpy())
        embs.append(out.embedding.float().cpu().numpy())
        if with_cam:
            inside.append(_cam_inside(model, out.fmap, batch, cam_method or cfg.cam_method, labels_leaf is not None, aug))
    return EvalResult(
        {lv: np.concatenate(v) if v else np.zeros((0, 0)) for lv, v in probs.items()},
        np.concatenate(embs) if embs else np.zeros((0, 0)),
        np.concatenate(inside) if inside else np.full(len(idx), np.nan),
        {},
    )


def _cam_inside(model: PoseNet, fmap: torch.Tensor, batch, method: str, use_truth: bool, aug: Augmenter) -> np.ndarray:
    from .cam import cam_in_graph, energy_inside

    with torch.enable_grad():
        f = fmap.detach().float().requires_grad_(True)
        logits = model.head_logits(f)
        target = batch.leaf if use_truth else logits.argmax(1)
        cam = cam_in_graph(f, logits, target, method, create_graph=False)
    share = energy_inside(cam.detach(), body_coverage(batch.kp, f.shape[-2:], aug.skeleton)).cpu().numpy()
    share[~batch.has_person.cpu().numpy()] = np.nan
    return share


def evaluate(model: PoseNet, aug: Augmenter, labels: Labels, idx: np.ndarray, cfg: TrainConfig,
             device: torch.device) -> EvalResult:
    """Leaf metrics and the share of CAM energy on the body (CAM of the true class) for rows ``idx``."""
    res = predict_bank(model, aug, idx, cfg, device, with_cam=True, labels_leaf=labels.leaf)
    leaf_level = model.levels[0]
    p = res.probs[leaf_level]
    y = labels.leaf[idx]
    pred = p.argmax(1)
    nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean())
    res.metrics = {
        "val_loss": nll,
        "val_acc": float((pred == y).mean()),
        "val_macro_f1": float(f1_score(y, pred, average="macro")),
        "cam_inside": float(np.nanmean(res.cam_inside)) if np.isfinite(res.cam_inside).any() else float("nan"),
    }
    res.metrics["cam_outside"] = 1 - res.metrics["cam_inside"] if np.isfinite(res.metrics["cam_inside"]) else 0.0
    return res
