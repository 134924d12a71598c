"""Training throughput of each stage (the real `train_stage`) against a bare PyTorch training loop.

    .venv/bin/python benchmarks/bench_train.py [--data DIR] [--preset quick] [--batches N] [--warmup W]
                                               [--rounds R] [--stages 1,2,3] [--device auto] [--json PATH]
    .venv/bin/python benchmarks/bench_train.py --smoke      # tiny preset, 3 photos per class: does it run?

Setup (timed for information only): about (W+N)*batch_size photos, spread over the classes, are
linked into a temporary image folder and prepared exactly as `hybridpose fit` does
(`hybridpose.train.fit.prepare`: poses into a fresh temporary cache, folds, the crop bank), then read
back with `load_prepared`; the network is `network.build_model` with the preset's frozen blocks, and
the `Augmenter` is made from the run's `Preprocessing`, skeleton and flip map.

Measured (training images per second), each loop with its own copy of the same initial weights:
  bare loop      the same network (same frozen blocks) trained the plain PyTorch way on pre-made
                 random tensors of the batch's size: `network.autocast` -> forward (leaf logits)
                 -> cross-entropy -> backward -> AdamW step (GradScaler on CUDA) -> float(loss).
  stage loop     per stage (1: supcon + CE, 2: multi-task CE, 3: + in-graph CAM loss), the real
                 `train_stage` (a 1-epoch copy of the stage's config). Its batches are timed one by
                 one by an `Augmenter` subclass that notes the clock whenever `train_stage` asks for
                 the next batch: batch i's time runs from that request to the next one, so it holds
                 the augmentation, the loss, backward, the optimiser/scaler/scheduler steps and
                 float(loss), and nothing of the validation that follows the epoch.
  same loss,     the same `train_stage` fed batches that the real `Augmenter.batch` made BEFORE the
  pre-made       clock started (a subclass hands them out): the model and loss cost alone, so
                 stage loop / this = what the data pipeline costs.
  augment only   `Augmenter.batch(train=True)` alone, for information.
Interleaving: after one untimed warm-up slice of W batches per loop, the N timed batches of every
loop run in R slices (default 4); round r runs slice r of every loop, order rotated, so other jobs
on the machine slow every loop alike. A loop's speed is batch_size / its lower-quartile batch time
(a disturbance only ever makes a batch slower); the median over batches of the per-batch ratio
between loops ("paired median") is printed as a cross-check. The images/s that `train_stage`
itself logs per slice (what `fit` shows: first batch included, validation excluded) is shown too.
Goal: stage loop / bare loop >= 0.8 for each stage (the data pipeline must not starve the model).
Stages 2-3 compute more than the bare loop does (extra heads; stage 3 a double backward for the
CAM loss), so the "/ same loss" ratio is the one that isolates the pipeline.
Torch's default thread count is used (printed).
--smoke: preset tiny, 3 photos per class of data/sample, 1 warm-up + 2 timed batches in 2 rounds,
all stages; the same tables (seconds; numbers meaningless) plus sanity checks (every loop timed every
batch, finite losses); exit 1 if one fails.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Per-batch wall and CPU times of one loop, from clock readings taken at each batch's start."""

    def __init__(self, device):
        self.device = device
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.recording = False
        self._last: tuple[float, float] | None = None

    def mark(self) -> None:
        """A batch starts (and the one before it, if any, has ended)."""
        sync(self.device)
        now = (time.perf_counter(), _common.cpu_seconds())
        if self._last is not None and self.recording:
            self.times.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
        self._last = now

    def stop(self) -> None:
        """The last batch of a slice has ended."""
        self.mark()
        self._last = None

    @property
    def running(self) -> bool:
        """A batch has started and not ended."""
        return self._last is not None

    def summary(self, bs: int) -> dict:
        import numpy as np

        t = np.array(self.times)
        q25 = float(np.percentile(t, 25))
        return {"images_per_s": bs / q25, "ms_per_batch": 1000 * q25,
                "images_per_s_median": bs / float(np.median(t)),
                "images_per_s_mean": bs * len(t) / float(t.sum()), "ms_per_batch_min": 1000 * float(t.min()),
                "cpu_cores_busy": float(np.sum(self.cpu) / t.sum()), "batches": len(t),
                "ms_per_batch_all": [round(1000 * x, 1) for x in t]}


def timed_augmenter(base: type, clock: Clock, premade: list | None = None):
    """An Augmenter whose training batches tell ``clock`` when `train_stage` asks for them; with
    ``premade``, it hands out those batches (made before the clock started) instead of making new ones.
    Evaluation batches end the running batch's time and are made as usual."""

    class Timed(base):
        served = 0

        def batch(self, idx, leaf, train):
            if not train:
                if clock.running:
                    clock.stop()  # train_stage validates after the epoch: the last batch is over
                return super().batch(idx, leaf, train)
            clock.mark()
            if premade is None:
                return super().batch(idx, leaf, train)
            self.served += 1
            return premade[(self.served - 1) % len(premade)]

    return Timed


def paired_ratio(a: Clock, b: Clock) -> float:
    """Median over aligned batches of (b's batch time / a's batch time): a's speed relative to b's."""
    import numpy as np

    n = min(len(a.times), len(b.times))
    return float(np.median(np.array(b.times[:n]) / np.array(a.times[:n])))


def slices(n: int, parts: int) -> list[int]:
    """``n`` batches split into ``parts`` slices of (nearly) equal size."""
    parts = max(1, min(parts, n))
    return [n // parts + (i < n % parts) for i in range(parts)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help=f"image folder (default {_common.DEFAULT_DATA})")
    ap.add_argument("--preset", default="quick", help="training preset (quick, full, tiny)")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per loop (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up batches per loop (default 2)")
    ap.add_argument("--rounds", type=int, default=4, help="slices the timed batches run in, interleaved (default 4)")
    ap.add_argument("--stages", default="1,2,3", help="stages to measure (default 1,2,3)")
    ap.add_argument("--device", default=None, help="auto, cpu or cuda (default: the preset's, auto)")
    ap.add_argument("--workers", type=int, default=1, help="pose extraction workers for the setup")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "--preset tiny --warmup 1 --batches 2 --rounds 2")
    args = ap.parse_args(argv)
    tmpdir = _common.setup_env()
    tmp = Path(tmpdir.name)
    _common.apply_smoke(args, preset="tiny", warmup=1, batches=2, rounds=2)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from hybridpose.branches.image import Preprocessing
    from hybridpose.nets.network import autocast, build_model, pick_device
    from hybridpose.pose.frontend import summarize
    from hybridpose.train.config import make_config
    from hybridpose.train.data import Augmenter, build_crop_bank
    from hybridpose.train.fit import bank_size, load_prepared, prepare
    from hybridpose.train.stages import train_stage

    data = _common.resolve_data(args.data, args.smoke)
    W, N = args.warmup, args.batches
    stages = [int(s) for s in args.stages.split(",") if s.strip()]
    n_classes = sum(1 for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
    bs = make_config(args.preset).batch_size
    per_class = max(2, math.ceil((W + N) * bs / max(1, n_classes)))

    # ---- setup, as `hybridpose fit` prepares a run: subset, poses (fresh temp cache), folds, crop bank
    busy_start = _common.cpu_busy_share()
    t0 = time.perf_counter()
    subset = _common.subset_folder(data, per_class, tmp / "data")
    run = prepare(subset, tmp / "run", folds=2, preset=args.preset, workers=args.workers, cache_dir=tmp / "poses",
                  show_progress=False, device=args.device, seed=args.seed)
    t_prepare = time.perf_counter() - t0
    p = load_prepared(run)
    cfg = p.cfg
    device = pick_device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"
    bank = build_crop_bank(p.poses, bank_size(cfg), cfg.train_margin[1], p.skeleton, run.crops(bank_size(cfg)),
                           show_progress=False)  # the prepared crop cache, read back
    labels, sizes = p.labels, p.hierarchy.level_sizes()
    torch.manual_seed(args.seed)
    model, info = build_model(cfg.backbone, sizes, weights=cfg.weights, pretrained=cfg.pretrained,
                              freeze_fraction=cfg.freeze_fraction)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    init_state = copy.deepcopy(model.state_dict())
    prep = Preprocessing(cfg.input_size, cfg.eval_margin, tuple(info["mean"]), tuple(info["std"]))
    n_trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    n_total = sum(q.numel() for q in model.parameters())
    print(f"{len(bank)} photos ({per_class} per class) from {data}; preset {cfg.preset} (input {cfg.input_size} px, "
          f"batch {bs}, freeze {cfg.freeze_fraction}); device {device}; torch threads {torch.get_num_threads()}; "
          f"{W} warm-up + {N} timed batches per loop in {len(slices(N, args.rounds))} rounds\n")
    print(_common.busy_warning("at start", busy_start) + "\n")

    def make_aug(seed: int, cls: type = Augmenter) -> Augmenter:
        return cls(bank, prep, p.skeleton, device, train_margin=cfg.train_margin, rotation=cfg.rotation_degrees,
                   flip_map=p.flip_map(), seed=seed)

    def fresh_model():
        m = copy.deepcopy(model)
        m.load_state_dict(init_state)
        return m.train()

    rng = np.random.default_rng(args.seed)
    plan = [rng.choice(len(bank), size=bs, replace=len(bank) < bs) for _ in range(W + N)]  # batch i's photos
    val_idx = np.arange(min(len(bank), max(2, bs // 2)))

    # ---- bare loop: random tensors, same network and frozen blocks, plain AdamW (+ GradScaler on CUDA)
    gen = torch.Generator().manual_seed(args.seed)
    n_pre = min(4, W + N)
    xs = [torch.randn(bs, 3, cfg.input_size, cfg.input_size, generator=gen).to(device) for _ in range(n_pre)]
    if device.type == "cuda":
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, sizes[model.levels[0]], (bs,), generator=gen).to(device) for _ in range(n_pre)]
    bare_model = fresh_model()
    bare_opt = torch.optim.AdamW([q for q in bare_model.parameters() if q.requires_grad], lr=cfg.stage(1).lr,
                                 weight_decay=cfg.weight_decay)
    bare_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    bare_clock, aug_clock = Clock(device), Clock(device)
    aug_only = make_aug(args.seed)

    def run_bare(first: int, count: int) -> None:
        for i in range(first, first + count):
            bare_clock.mark()
            with autocast(device, use_amp):
                logits = bare_model(xs[i % n_pre])
            loss = F.cross_entropy(logits.float(), ys[i % n_pre])
            bare_opt.zero_grad(set_to_none=True)
            bare_scaler.scale(loss).backward()
            bare_scaler.step(bare_opt)
            bare_scaler.update()
            float(loss.detach())
        bare_clock.stop()

    def run_augment(first: int, count: int) -> None:
        for i in range(first, first + count):
            aug_clock.mark()
            aug_only.batch(plan[i], labels.leaf[plan[i]], train=True)
        aug_clock.stop()

    # ---- per stage: the real train_stage, with live and with pre-made batches
    pre_aug = make_aug(args.seed + 100)
    premade = [pre_aug.batch(plan[i], labels.leaf[plan[i]], train=True) for i in range(min(W + N, 8))]
    stage_runs: dict[int, dict] = {}
    for stage in stages:
        for kind, made in (("loop", None), ("premade", premade)):
            clock = Clock(device)
            aug = make_aug(args.seed + stage, timed_augmenter(Augmenter, clock, made))
            stage_runs.setdefault(stage, {})[kind] = {"clock": clock, "aug": aug, "model": fresh_model(), "logged": []}
    one_epoch = {s: replace(cfg, **{f"stage{s}": replace(cfg.stage(s), epochs=1)}) for s in stages}

    def stage_runner(stage: int, kind: str):
        r = stage_runs[stage][kind]

        def run(first: int, count: int) -> None:
            idx = np.concatenate(plan[first:first + count])
            out = train_stage(stage, r["model"], r["aug"], labels, idx, val_idx, one_epoch[stage], device,
                              seed=args.seed + first)
            if r["clock"].running:  # no validation batch came to end the last one
                r["clock"].stop()
            r["logged"] += out.history
        return run

    loops = [("bare", bare_clock, run_bare), ("augment", aug_clock, run_augment)]
    loops += [(f"stage{s}_{kind}", stage_runs[s][kind]["clock"], stage_runner(s, kind))
              for s in stages for kind in ("loop", "premade")]

    t0 = time.perf_counter()
    for _, clock, run_slice in loops:  # warm-up slice, untimed
        if W:
            run_slice(0, W)
    first = W
    for r, count in enumerate(slices(N, args.rounds)):
        k = r % len(loops)
        for _, clock, run_slice in loops[k:] + loops[:k]:
            clock.recording = True
            run_slice(first, count)
            clock.recording = False
        first += count
    t_measure = time.perf_counter() - t0

    if args.smoke:
        for name, clock, _ in loops:
            _common.smoke_check(len(clock.times) == N and all(t > 0 for t in clock.times),
                                f"{name}: {len(clock.times)} batch times for {N} batches")
        for stage in stages:
            for kind, r in stage_runs[stage].items():
                losses = [row["train_loss"] for row in r["logged"]]
                _common.smoke_check(bool(losses) and all(np.isfinite(losses)), f"stage {stage} {kind}: losses {losses}")

    bare, augment_only = bare_clock.summary(bs), aug_clock.summary(bs)
    results: dict[int, dict] = {}
    for stage in stages:
        lp, pre = stage_runs[stage]["loop"], stage_runs[stage]["premade"]
        res = {"stage_loop": lp["clock"].summary(bs), "same_loss_premade": pre["clock"].summary(bs)}
        res["ratio_vs_bare"] = res["stage_loop"]["images_per_s"] / bare["images_per_s"]
        res["ratio_vs_bare_paired"] = paired_ratio(lp["clock"], bare_clock)
        res["ratio_vs_same_loss"] = res["stage_loop"]["images_per_s"] / res["same_loss_premade"]["images_per_s"]
        res["ratio_vs_same_loss_paired"] = paired_ratio(lp["clock"], pre["clock"])
        logged = [row["images_per_s"] for row in lp["logged"][1 if W else 0:]]  # the timed slices
        res["train_stage_logged_images_per_s"] = float(np.median(logged))
        results[stage] = res

    # ---- report
    rows = [["bare loop fwd+bwd (random tensors)", bare["images_per_s"], bare["ms_per_batch"], bare["cpu_cores_busy"],
             None, None, None],
            ["Augmenter.batch alone", augment_only["images_per_s"], augment_only["ms_per_batch"],
             augment_only["cpu_cores_busy"], None, None, None]]
    for stage, res in results.items():
        s, q = res["stage_loop"], res["same_loss_premade"]
        rows.append([f"stage {stage} train_stage (augment+loss+step)", s["images_per_s"], s["ms_per_batch"],
                     s["cpu_cores_busy"], round(res["ratio_vs_bare"], 3), round(res["ratio_vs_same_loss"], 3), None])
        rows.append([f"stage {stage} same loss, pre-made batches", q["images_per_s"], q["ms_per_batch"],
                     q["cpu_cores_busy"], round(q["images_per_s"] / bare["images_per_s"], 3), None, None])
        rows.append([f"stage {stage} train_stage's own log", res["train_stage_logged_images_per_s"], None, None,
                     round(res["train_stage_logged_images_per_s"] / bare["images_per_s"], 3), None,
                     "median per slice, first batch included"])
    _common.print_table(f"Training throughput: lower quartile of {N} batch times per loop, {len(slices(N, args.rounds))} "
                        f"interleaved rounds after a {W}-batch warm-up",
                        ["loop", "images/s", "ms/batch", "cores busy", "/ bare", "/ same loss", "note"], rows)
    _common.print_table("Goal: stage loop / bare loop >= 0.8", ["ratio", "value", "goal", "", "paired median"],
                        [[*_common.goal_line(f"stage {s} / bare", r["ratio_vs_bare"], 0.8),
                          round(r["ratio_vs_bare_paired"], 3)] for s, r in results.items()]
                        + [[f"stage {s} / same loss (pipeline only)", round(r["ratio_vs_same_loss"], 3), "(info)", "",
                            round(r["ratio_vs_same_loss_paired"], 3)] for s, r in results.items()])
    print(f"measurement took {t_measure:.0f} s ({len(loops)} loops interleaved slice by slice); "
          "'paired median' = median over batches of the per-batch ratio")
    print(f"setup (not measured): prepare {t_prepare:.1f} s ({summarize(p.poses)}; crop bank {len(bank)} x "
          f"{bank.size} px); trainable parameters {n_trainable:,} of {n_total:,} ({info['frozen_blocks']} blocks "
          f"frozen); weights: {info['weights_source']}")

    print(_common.busy_warning("at end"))
    payload = {"benchmark": "train", "smoke": args.smoke, "cpu_busy_share_at_start": busy_start,
               "data": str(data), "preset": cfg.preset, "device": str(device),
               "batch_size": bs, "input_size": cfg.input_size, "warmup_batches": W, "timed_batches": N,
               "rounds": len(slices(N, args.rounds)), "n_photos": len(bank), "machine": _common.machine_info(),
               "setup_seconds": {"prepare": t_prepare},
               "trainable_parameters": n_trainable, "parameters": n_total, "frozen_blocks": info["frozen_blocks"],
               "method": "interleaved slices; images/s from the lower-quartile batch time",
               "measure_seconds": t_measure, "bare_loop": bare, "augment_only": augment_only,
               "stages": {str(k): v for k, v in results.items()}, "goals": {"stage_over_bare": 0.8}}
    return _common.finish(args, payload)


if __name__ == "__main__":
    main()
