"""Training throughput of each stage against a bare timm forward+backward loop.

    /work/venv/bin/python benchmarks/bench_train.py [--data DIR] [--preset quick] [--batches N]
                                                    [--warmup W] [--device auto] [--json PATH]

Setup (not timed as part of any measurement, reported for information): ~(W+N)*batch_size photos
are drawn from the data set, their poses extracted into a fresh temporary cache, and a CropBank
built from that table exactly as `hybridpose fit` does (`build_crop_bank`, `bank_size`).

Measured (training images per second). All loops below except train_stage run INTERLEAVED:
round i runs batch i of every loop (order rotated), each batch timed on its own; the first W rounds
are warm-up, and a loop's speed is batch_size / its lower-quartile batch time over the N timed
rounds. Other jobs on the machine then slow every loop alike, and since a disturbance only ever
makes a batch slower, the fastest quarter of batches is the undisturbed speed. The median over
rounds of the per-round ratio ("paired median") is printed beside each ratio as a cross-check.
  bare timm      the same PoseNet (same timm backbone, frozen blocks, AdamW over the trainable
                 parameters, same lr schedule and AMP setting) on pre-made random tensors of the
                 same size: forward -> leaf-head CE -> backward -> step -> float(loss).
  stage loop     per stage (1: supcon + CE, 2: multi-task CE, 3: multi-task CE + in-graph CAM loss),
                 the inner loop of `train_stage`: random batch indices -> `Augmenter.batch(train=True)`
                 -> `stages._loss(stage, ...)` -> zero_grad / backward / AdamW step / GradScaler /
                 OneCycleLR step -> float(loss) (as train_stage does).
  same loss,     the stage loop on batches made by `Augmenter.batch` BEFORE the clock starts:
  no pipeline    the model and loss cost alone, so stage loop / this = what the data pipeline costs.
  augment only   `Augmenter.batch(train=True)` alone, for information.
  train_stage    (unless --no-train-stage; run afterwards, alone) the real `train_stage` with a
                 1-epoch copy of the stage config on N*batch_size photos; its own `images_per_s`
                 (the number `fit` logs: the whole epoch, first batch included, validation excluded).
Each loop has its own model and optimiser, all starting from the same weights.
Goal: stage loop / bare timm >= 0.8 for each stage (the data pipeline must not starve the model).
Stages 2-3 compute more than the bare loop does (extra heads; stage 3 a double backward for the
CAM loss), so the "same loss, no pipeline" ratio is the one that isolates the pipeline.
Torch's default thread count is used (printed).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def make_optim(model, lr: float, cfg, total_steps: int, warmup_fraction: float, use_amp: bool):
    """The optimiser, schedule and scaler exactly as `train_stage` makes them."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    # as train_stage: OneCycleLR needs both phases >= 2 steps (it divides by their length - 1)
    total_steps = max(total_steps, 4)
    warmup_fraction = min(max(warmup_fraction, 2.0 / total_steps), 0.5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps,
                                                pct_start=warmup_fraction, anneal_strategy="cos")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return opt, sched, scaler


def step(loss, opt, sched, scaler) -> float:
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()
    return float(loss.detach())


def batch_indices(n_rows: int, bs: int, count: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    out, order = [], np.array([], dtype=np.int64)
    while len(out) < count:
        if len(order) < bs:
            order = np.concatenate([order, rng.permutation(n_rows)])
        out.append(order[:bs])
        order = order[bs:]
    return out


class Loop:
    """One measured loop; its batches are timed one by one so that loops can be interleaved."""

    def __init__(self, name: str, body, bs: int):
        self.name, self.body, self.bs = name, body, bs
        self.times: list[float] = []
        self.cpu: list[float] = []

    def run(self, i: int, device, record: bool) -> None:
        c0, t0 = _common.cpu_seconds(), time.perf_counter()
        self.body(i)
        sync(device)
        if record:
            self.times.append(time.perf_counter() - t0)
            self.cpu.append(_common.cpu_seconds() - c0)

    def summary(self) -> dict:
        import numpy as np

        t = np.array(self.times)
        q25 = float(np.percentile(t, 25))
        return {"images_per_s": self.bs / q25, "ms_per_batch": 1000 * q25,
                "images_per_s_median": self.bs / float(np.median(t)),
                "images_per_s_mean": self.bs * len(t) / float(t.sum()), "ms_per_batch_min": 1000 * float(t.min()),
                "cpu_cores_busy": float(np.sum(self.cpu) / t.sum()), "batches": len(t),
                "ms_per_batch_all": [round(1000 * x, 1) for x in t]}


def interleave(loops: list[Loop], n_warmup: int, n_timed: int, device) -> None:
    """Round i runs batch i of every loop (order rotated each round), so that other jobs on the
    machine hit every loop alike; a loop's speed then comes from its fastest quarter of batches,
    since a disturbance only ever makes a batch slower."""
    for i in range(n_warmup + n_timed):
        k = i % len(loops)
        for loop in loops[k:] + loops[:k]:
            loop.run(i, device, record=i >= n_warmup)


def paired_ratio(a: Loop, b: Loop) -> float:
    """Median over rounds of (b's batch time / a's batch time): a's speed relative to b's."""
    import numpy as np

    return float(np.median(np.array(b.times) / np.array(a.times)))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help=f"image folder (default {_common.DEFAULT_DATA})")
    ap.add_argument("--preset", default="quick", help="training preset (quick, full, tiny)")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per loop (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up batches before each loop (default 2)")
    ap.add_argument("--stages", default="1,2,3", help="stages to measure (default 1,2,3)")
    ap.add_argument("--device", default=None, help="auto, cpu or cuda (default: the preset's, auto)")
    ap.add_argument("--workers", type=int, default=1, help="pose extraction workers for the setup")
    ap.add_argument("--no-train-stage", action="store_true", help="skip the real train_stage run per stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    tmp = _common.setup_env()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from hybridpose.datasets import load_dataset
    from hybridpose.pose import extract, summarize
    from hybridpose.train.config import make_config
    from hybridpose.train.data import Augmenter, build_crop_bank
    from hybridpose.train.fit import bank_size, flip_map, level_sizes, make_labels, pick_device
    from hybridpose.train.model import build_model
    from hybridpose.train.stages import Labels, _loss, autocast, train_stage

    data = _common.resolve_data(args.data)
    cfg = make_config(args.preset, device=args.device)
    device = pick_device(cfg.device)
    bs, W, N = cfg.batch_size, args.warmup, args.batches
    stages = [int(s) for s in args.stages.split(",") if s.strip()]
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(args.seed)

    # ---- setup: subset, poses (fresh temp cache), crop bank
    ds = load_dataset(data)
    n_sub = min(len(ds), (W + N) * bs)
    rng = np.random.default_rng(args.seed)
    subset = np.sort(rng.choice(len(ds), size=n_sub, replace=False))
    paths = [str(ds.paths[i]) for i in subset]
    print(f"{n_sub} of {len(ds)} photos from {data}; preset {cfg.preset} (input {cfg.input_size} px, batch {bs}, "
          f"freeze {cfg.freeze_fraction}); device {device}; torch threads {torch.get_num_threads()}; "
          f"{W} warm-up + {N} timed batches\n")
    busy_start = _common.cpu_busy_share()
    print(_common.busy_warning("at start", busy_start) + "\n")
    t0 = time.perf_counter()
    poses = extract(paths, cache_dir=Path(tempfile.mkdtemp(prefix="poses-", dir=tmp.name)), workers=args.workers,
                    show_progress=False)
    t_pose = time.perf_counter() - t0
    t0 = time.perf_counter()
    bank = build_crop_bank(poses, bank_size(cfg), cfg.train_margin[1], None, show_progress=False)
    t_bank = time.perf_counter() - t0
    full = make_labels(ds)
    labels = Labels(full.leaf[subset], full.leaf_to_level)
    sizes = level_sizes(ds.hierarchy)
    model, info = build_model(cfg.backbone, sizes, weights=cfg.weights, pretrained=cfg.pretrained,
                              freeze_fraction=cfg.freeze_fraction)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    init_state = copy.deepcopy(model.state_dict())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    def make_aug(seed: int) -> Augmenter:
        return Augmenter(bank, cfg.input_size, info["mean"], info["std"], device, train_margin=cfg.train_margin,
                         eval_margin=cfg.eval_margin, rotation=cfg.rotation_degrees, flip_map=flip_map(ds), seed=seed)

    idx_list = batch_indices(len(bank), bs, W + N, args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    def fresh_model():
        m = copy.deepcopy(model)
        m.load_state_dict(init_state)
        return m.train()

    # ---- bare timm: pre-made random tensors, same model / frozen blocks / optimiser
    bare_model = fresh_model()
    n_pre = min(4, W + N)
    xs = [torch.randn(bs, 3, cfg.input_size, cfg.input_size, generator=gen).to(device) for _ in range(n_pre)]
    if device.type == "cuda":
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, sizes[model.levels[0]], (bs,), generator=gen).to(device) for _ in range(n_pre)]
    sc1 = cfg.stage(1)
    bare_opt = make_optim(bare_model, sc1.lr, cfg, W + N, sc1.warmup_fraction, use_amp)

    def bare_body(i: int) -> None:
        with autocast(device, use_amp):
            logits = bare_model(xs[i % n_pre])
        step(F.cross_entropy(logits.float(), ys[i % n_pre]), *bare_opt)

    bare = Loop("bare", bare_body, bs)

    # ---- augmentation alone (for information); its batches, made once more, feed the pre-made loops
    aug_only = make_aug(args.seed)

    def aug_body(i: int) -> None:
        aug_only.batch(idx_list[i], labels.leaf[idx_list[i]], train=True)

    augment = Loop("augment", aug_body, bs)
    pre_aug = make_aug(args.seed + 100)
    premade = [pre_aug.batch(idx_list[i], labels.leaf[idx_list[i]], train=True) for i in range(W + N)]

    def stage_loops(stage: int) -> tuple[Loop, Loop]:
        sc = cfg.stage(stage)
        m_loop, m_pre = fresh_model(), fresh_model()
        aug = make_aug(args.seed + stage)
        o_loop = make_optim(m_loop, sc.lr, cfg, W + N, sc.warmup_fraction, use_amp)
        o_pre = make_optim(m_pre, sc.lr, cfg, W + N, sc.warmup_fraction, use_amp)

        def loop_body(i: int) -> None:  # train_stage's inner loop
            idx = idx_list[i]
            batch = aug.batch(idx, labels.leaf[idx], train=True)
            loss, _ = _loss(stage, m_loop, batch, labels, cfg, use_amp)
            step(loss, *o_loop)

        def pre_body(i: int) -> None:  # the same without the data pipeline
            loss, _ = _loss(stage, m_pre, premade[i], labels, cfg, use_amp)
            step(loss, *o_pre)

        return Loop(f"stage{stage}", loop_body, bs), Loop(f"stage{stage}_premade", pre_body, bs)

    per_stage = {stage: stage_loops(stage) for stage in stages}
    loops = [bare, augment] + [lp for pair in per_stage.values() for lp in pair]
    t0 = time.perf_counter()
    interleave(loops, W, N, device)
    t_measure = time.perf_counter() - t0
    del premade

    results: dict[int, dict] = {}
    bare_s = bare.summary()
    for stage, (lp, pre) in per_stage.items():
        res = {"stage_loop": lp.summary(), "same_loss_no_pipeline": pre.summary()}
        res["ratio_vs_bare"] = res["stage_loop"]["images_per_s"] / bare_s["images_per_s"]
        res["ratio_vs_bare_paired"] = paired_ratio(lp, bare)
        res["ratio_vs_same_loss"] = res["stage_loop"]["images_per_s"] / res["same_loss_no_pipeline"]["images_per_s"]
        res["ratio_vs_same_loss_paired"] = paired_ratio(lp, pre)
        results[stage] = res

    # ---- the real train_stage, 1 epoch per stage (not interleaved: for information)
    if not args.no_train_stage:
        for stage in stages:
            sc = cfg.stage(stage)
            one = replace(cfg, **{f"stage{stage}": replace(sc, epochs=1)})
            train_idx = np.arange(min(len(bank), N * bs))
            val_idx = np.arange(min(len(bank), max(2, bs // 2)))
            t0 = time.perf_counter()
            out = train_stage(stage, fresh_model(), make_aug(args.seed + stage), labels, train_idx, val_idx, one,
                              device, seed=args.seed)
            ips = out.history[0]["images_per_s"]
            results[stage]["train_stage"] = {"images_per_s": ips, "images": len(train_idx),
                                             "call_seconds_incl_validation": time.perf_counter() - t0}
            results[stage]["train_stage_ratio_vs_bare"] = ips / bare_s["images_per_s"]
    bare, augment_only = bare_s, augment.summary()

    # ---- report
    rows = [["bare timm fwd+bwd (random tensors)", bare["images_per_s"], bare["ms_per_batch"], bare["cpu_cores_busy"],
             None, None, None],
            ["Augmenter.batch alone", augment_only["images_per_s"], augment_only["ms_per_batch"],
             augment_only["cpu_cores_busy"], None, None, None]]
    for stage, res in results.items():
        s, p = res["stage_loop"], res["same_loss_no_pipeline"]
        rows.append([f"stage {stage} loop (augment + loss + step)", s["images_per_s"], s["ms_per_batch"],
                     s["cpu_cores_busy"], round(res["ratio_vs_bare"], 3), round(res["ratio_vs_same_loss"], 3), None])
        rows.append([f"stage {stage} same loss, pre-made batches", p["images_per_s"], p["ms_per_batch"],
                     p["cpu_cores_busy"], round(p["images_per_s"] / bare["images_per_s"], 3), None, None])
        if "train_stage" in res:
            rows.append([f"stage {stage} real train_stage (1 epoch)", res["train_stage"]["images_per_s"], None, None,
                         round(res["train_stage_ratio_vs_bare"], 3), None, "whole epoch, run alone"])
    _common.print_table(f"Training throughput: lower quartile of {N} interleaved batch times per loop, "
                        f"after {W} warm-up rounds",
                        ["loop", "images/s", "ms/batch", "cores busy", "/ bare", "/ same loss", "note"], rows)
    _common.print_table("Goal: stage loop / bare timm >= 0.8", ["ratio", "value", "goal", "", "paired median"],
                        [[*_common.goal_line(f"stage {s} / bare", r["ratio_vs_bare"], 0.8),
                          round(r["ratio_vs_bare_paired"], 3)] for s, r in results.items()]
                        + [[f"stage {s} / same loss (pipeline only)", round(r["ratio_vs_same_loss"], 3), "(info)", "",
                            round(r["ratio_vs_same_loss_paired"], 3)] for s, r in results.items()])
    print(f"measurement took {t_measure:.0f} s ({len(loops)} loops interleaved batch by batch); "
          "'paired median' = median over rounds of the per-round ratio")
    print(f"setup (not measured): pose extraction {t_pose:.1f} s ({summarize(poses)}), crop bank {t_bank:.1f} s "
          f"({len(bank)} x {bank.size} px); trainable parameters {n_trainable:,} of {n_total:,} "
          f"({info['frozen_blocks']} blocks frozen); weights: {info['weights_source']}")

    print(_common.busy_warning("at end"))
    payload = {"benchmark": "train", "cpu_busy_share_at_start": busy_start,
               "data": str(data), "preset": cfg.preset, "device": str(device),
               "batch_size": bs, "input_size": cfg.input_size, "warmup_batches": W, "timed_batches": N,
               "n_photos": n_sub, "machine": _common.machine_info(),
               "setup_seconds": {"pose_extraction": t_pose, "crop_bank": t_bank},
               "trainable_parameters": n_trainable, "parameters": n_total, "frozen_blocks": info["frozen_blocks"],
               "method": "interleaved rounds; images/s from the lower-quartile batch time",
               "measure_seconds": t_measure,
               "bare_timm": bare, "augment_only": augment_only,
               "stages": {str(k): v for k, v in results.items()}, "goals": {"stage_over_bare": 0.8}}
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
