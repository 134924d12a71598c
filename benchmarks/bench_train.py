"""Training throughput of each stage against a bare timm forward+backward loop.

    /work/venv/bin/python benchmarks/bench_train.py [--data DIR] [--preset quick] [--batches N]
                                                    [--warmup W] [--device auto] [--json PATH]

Setup (not timed as part of any measurement, reported for information): ~(W+N)*batch_size photos
are drawn from the data set, their poses extracted into a fresh temporary cache, and a CropBank
built from that table exactly as `hybridpose fit` does (`build_crop_bank`, `bank_size`).

Measured per stage (1: supcon + CE, 2: multi-task CE, 3: multi-task CE + in-graph CAM loss), in
training images per second after W untimed warm-up batches, N timed batches:
  stage loop     the inner loop of `train_stage`: random batch indices -> `Augmenter.batch(train=True)`
                 -> `stages._loss(stage, ...)` -> zero_grad / backward / AdamW step / GradScaler /
                 OneCycleLR step -> float(loss) (as train_stage does).
  same loss,     the same loop on W+N batches made by `Augmenter.batch` BEFORE the clock starts:
  no pipeline    the model and loss cost alone, so stage loop / this = what the data pipeline costs.
  train_stage    (unless --no-train-stage) the real `train_stage` with a 1-epoch copy of the
                 stage config on N*batch_size photos; its own `images_per_s` (the number `fit` logs:
                 the whole epoch, first batch included, validation excluded).
  bare timm      the same PoseNet (same timm backbone, frozen blocks, AdamW over the trainable
                 parameters, same lr schedule and AMP setting) on pre-made random tensors of the
                 same size: forward -> leaf-head CE -> backward -> step -> float(loss). Run before
                 and after the stages; the faster of the two is kept.
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
    if abs(warmup_fraction * total_steps - 1) < 1e-9:
        # OneCycleLR divides by zero when the warm-up is exactly one step (train_stage has the
        # same problem); nudge it, the speed does not depend on it
        warmup_fraction += 1e-3
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


def time_loop(n_warmup: int, n_timed: int, bs: int, device, body) -> dict:
    for i in range(n_warmup):
        body(i)
    sync(device)
    t0 = time.perf_counter()
    c0 = _common.cpu_seconds()
    for i in range(n_warmup, n_warmup + n_timed):
        body(i)
    sync(device)
    wall = time.perf_counter() - t0
    cpu = _common.cpu_seconds() - c0
    return {"seconds": wall, "images": n_timed * bs, "images_per_s": n_timed * bs / wall,
            "ms_per_batch": 1000 * wall / n_timed, "cpu_cores_busy": cpu / wall}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help=f"image folder (default {_common.DEFAULT_DATA})")
    ap.add_argument("--preset", default="quick", help="training preset (quick, full, tiny)")
    ap.add_argument("--batches", type=int, default=10, help="timed batches per measurement (default 10)")
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
    load_start = _common.load_average()
    print(_common.busy_warning("at start") + "\n")
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

    # ---- bare timm loop: pre-made random tensors, same model / frozen blocks / optimiser
    model.load_state_dict(init_state)
    model.train()
    gen = torch.Generator().manual_seed(args.seed)
    n_pre = min(4, W + N)
    xs = [torch.randn(bs, 3, cfg.input_size, cfg.input_size, generator=gen).to(device) for _ in range(n_pre)]
    if device.type == "cuda":
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, sizes[model.levels[0]], (bs,), generator=gen).to(device) for _ in range(n_pre)]
    sc1 = cfg.stage(1)
    opt, sched, scaler = make_optim(model, sc1.lr, cfg, W + N, sc1.warmup_fraction, use_amp)

    def bare_body(i: int) -> None:
        with autocast(device, use_amp):
            logits = model(xs[i % n_pre])
        step(F.cross_entropy(logits.float(), ys[i % n_pre]), opt, sched, scaler)

    bare_runs = [time_loop(W, N, bs, device, bare_body)]

    # ---- augmentation alone (for information)
    aug = make_aug(args.seed)

    def aug_body(i: int) -> None:
        idx = idx_list[i]
        aug.batch(idx, labels.leaf[idx], train=True)

    augment_only = time_loop(W, N, bs, device, aug_body)

    results: dict[int, dict] = {}
    for stage in stages:
        sc = cfg.stage(stage)
        res: dict = {}
        # stage loop: the train_stage inner loop, augmentation included
        model.load_state_dict(init_state)
        model.train()
        aug = make_aug(args.seed + stage)
        opt, sched, scaler = make_optim(model, sc.lr, cfg, W + N, sc.warmup_fraction, use_amp)

        def stage_body(i: int) -> None:
            idx = idx_list[i]
            batch = aug.batch(idx, labels.leaf[idx], train=True)
            loss, _ = _loss(stage, model, batch, labels, cfg, use_amp)
            step(loss, opt, sched, scaler)

        res["stage_loop"] = time_loop(W, N, bs, device, stage_body)

        # same loss on batches augmented before the clock starts
        model.load_state_dict(init_state)
        model.train()
        aug = make_aug(args.seed + stage)
        premade = [aug.batch(idx_list[i], labels.leaf[idx_list[i]], train=True) for i in range(W + N)]
        opt, sched, scaler = make_optim(model, sc.lr, cfg, W + N, sc.warmup_fraction, use_amp)

        def premade_body(i: int) -> None:
            loss, _ = _loss(stage, model, premade[i], labels, cfg, use_amp)
            step(loss, opt, sched, scaler)

        res["same_loss_no_pipeline"] = time_loop(W, N, bs, device, premade_body)
        del premade

        if not args.no_train_stage:
            model.load_state_dict(init_state)
            one = replace(cfg, **{f"stage{stage}": replace(sc, epochs=1)})
            train_idx = np.arange(min(len(bank), N * bs))
            val_idx = np.arange(min(len(bank), max(2, bs // 2)))
            t0 = time.perf_counter()
            try:
                out = train_stage(stage, model, make_aug(args.seed + stage), labels, train_idx, val_idx, one, device,
                                  seed=args.seed)
            except ZeroDivisionError:
                print(f"note: train_stage failed for stage {stage} (OneCycleLR divides by zero when "
                      f"warmup_fraction x steps = 1: {sc.warmup_fraction} x {N}); use another --batches\n")
            else:
                res["train_stage"] = {"images_per_s": out.history[0]["images_per_s"], "images": len(train_idx),
                                      "call_seconds_incl_validation": time.perf_counter() - t0}
        res["ratio_vs_same_loss"] = res["stage_loop"]["images_per_s"] / res["same_loss_no_pipeline"]["images_per_s"]
        results[stage] = res

    # ---- bare loop again, after the stages: keep the faster of the two (order effects, warm caches)
    model.load_state_dict(init_state)
    model.train()
    opt, sched, scaler = make_optim(model, sc1.lr, cfg, W + N, sc1.warmup_fraction, use_amp)
    bare_runs.append(time_loop(W, N, bs, device, bare_body))
    bare = dict(max(bare_runs, key=lambda r: r["images_per_s"]))
    bare["all_images_per_s"] = [round(r["images_per_s"], 2) for r in bare_runs]
    for res in results.values():
        res["ratio_vs_bare"] = res["stage_loop"]["images_per_s"] / bare["images_per_s"]
        if "train_stage" in res:
            res["train_stage_ratio_vs_bare"] = res["train_stage"]["images_per_s"] / bare["images_per_s"]

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
                         round(res["train_stage_ratio_vs_bare"], 3), None, "first batch incl."])
    _common.print_table("Training throughput (images/s)",
                        ["loop", "images/s", "ms/batch", "cores busy", "/ bare", "/ same loss", "note"], rows)
    _common.print_table("Goal: stage loop / bare timm >= 0.8", ["ratio", "value", "goal", ""],
                        [_common.goal_line(f"stage {s} / bare", r["ratio_vs_bare"], 0.8) for s, r in results.items()]
                        + [[f"stage {s} / same loss (pipeline only)", round(r["ratio_vs_same_loss"], 3), "(info)", ""]
                           for s, r in results.items()])
    print(f"setup (not measured): pose extraction {t_pose:.1f} s ({summarize(poses)}), crop bank {t_bank:.1f} s "
          f"({len(bank)} x {bank.size} px); trainable parameters {n_trainable:,} of {n_total:,} "
          f"({info['frozen_blocks']} blocks frozen); weights: {info['weights_source']}")

    print(_common.busy_warning("at end"))
    payload = {"benchmark": "train", "load_average_1min_at_start": load_start,
               "data": str(data), "preset": cfg.preset, "device": str(device),
               "batch_size": bs, "input_size": cfg.input_size, "warmup_batches": W, "timed_batches": N,
               "n_photos": n_sub, "machine": _common.machine_info(),
               "setup_seconds": {"pose_extraction": t_pose, "crop_bank": t_bank},
               "trainable_parameters": n_trainable, "parameters": n_total, "frozen_blocks": info["frozen_blocks"],
               "bare_timm": bare, "augment_only": augment_only,
               "stages": {str(k): v for k, v in results.items()}, "goals": {"stage_over_bare": 0.8}}
    _common.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
