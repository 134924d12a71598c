"""Image-branch training: losses, batch augmentation, one stage, checkpoints and the files of a run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import standing_keypoints
from hybridpose.branches.image import Preprocessing
from hybridpose.errors import RunError
from hybridpose.nets.network import build_model, load_checkpoint, save_checkpoint
from hybridpose.skeletons.body import BODY, KEYPOINT_NAMES, MIRROR_INDEX
from hybridpose.train.config import PRESETS, StageConfig, TrainConfig, make_config
from hybridpose.train.data import Augmenter, CropBank, build_crop_bank, crop_one
from hybridpose.train.fit import bank_size
from hybridpose.train.losses import multitask_ce, supcon_loss
from hybridpose.train.stages import Labels, evaluate, train_stage

CPU = torch.device("cpu")
K = {n: i for i, n in enumerate(KEYPOINT_NAMES)}


# --- losses -----------------------------------------------------------------------------


def test_supcon_lower_for_clustered_embeddings():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 32, generator=g) * 3
    labels = torch.arange(4).repeat_interleave(8)
    z = centres[labels] + 0.3 * torch.randn(32, 32, generator=g)
    clustered = supcon_loss(z, labels)
    shuffled = supcon_loss(z, labels[torch.randperm(32, generator=g)])
    assert torch.isfinite(clustered) and torch.isfinite(shuffled)
    assert clustered < shuffled - 0.5


def test_supcon_without_positives_is_zero_and_differentiable():
    z = torch.randn(5, 8, requires_grad=True)
    loss = supcon_loss(z, torch.arange(5))
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None


def test_supcon_is_scale_invariant():
    z = torch.randn(12, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2] * 4)
    assert supcon_loss(z, labels).item() == pytest.approx(supcon_loss(5 * z, labels).item(), rel=1e-5)


def test_multitask_ce_weights_levels():
    logits = {"class": torch.tensor([[4.0, 0.0]]), "group": torch.tensor([[0.0, 4.0]])}
    targets = {"class": torch.tensor([0]), "group": torch.tensor([0])}
    good = multitask_ce(logits, targets, {"class": 1.0, "group": 0.0})
    bad = multitask_ce(logits, targets, {"class": 0.0, "group": 1.0})
    both = multitask_ce(logits, targets, {"class": 1.0, "group": 1.0})
    assert good < both < bad
    assert both.item() == pytest.approx((good.item() + bad.item()) / 2)


# --- augmentation -----------------------------------------------------------------------

S, OUT = 88, 64


def _dot_bank(n: int = 24, seed: int = 0) -> tuple[CropBank, np.ndarray]:
    """Black crops with one bright blob at each photo's left wrist; every keypoint a distinct visibility."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, S, S, 3), np.uint8)
    kps = np.zeros((n, 33, 3))
    yy, xx = np.mgrid[0:S, 0:S] + 0.5  # pixel centres
    for i in range(n):
        kps[i, :, :2] = rng.uniform(28, 60, (33, 2))
        kps[i, :, 2] = (np.arange(33) + 1) / 34
        x, y = kps[i, K["left_wrist"], :2]
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        images[i] = (255 * blob)[..., None].astype(np.uint8)
    return CropBank(images, kps, np.ones(n, bool), margin=0.35), kps


def _augmenter(bank, flip_map=None, seed=0) -> Augmenter:
    return Augmenter(bank, Preprocessing(OUT, 0.15, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), BODY, CPU,
                     train_margin=(0.05, 0.35), rotation=10.0, flip_map=flip_map, seed=seed)


def _blob_centre(img: torch.Tensor) -> np.ndarray:
    """Intensity-weighted centre (x, y) of the bright blob, in continuous pixel coordinates."""
    v = img.mean(0).numpy()
    w = np.clip(v - (v.min() + 0.5 * (v.max() - v.min())), 0, None)
    ys, xs = np.mgrid[0 : v.shape[0], 0 : v.shape[1]] + 0.5
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_flip_swaps_leaf_labels_and_mirrors_keypoints():
    bank, kps = _dot_bank()
    flip_map = np.array([1, 0, 2])  # classes 0 and 1 mirror into each other, 2 is symmetric
    aug = _augmenter(bank, flip_map)
    idx = np.arange(len(bank))
    leaf = np.array([0, 1, 2] * 8)
    flips = 0
    for _ in range(4):
        b = aug.batch(idx, leaf, train=True)
        assert b.x.shape == (len(idx), 3, OUT, OUT) and b.kp.shape == (len(idx), 33, 3)
        vis = b.kp[..., 2].numpy()
        for i in range(len(idx)):
            flipped = not np.allclose(vis[i], kps[i, :, 2])
            if flipped:
                np.testing.assert_allclose(vis[i], kps[i, MIRROR_INDEX, 2], atol=1e-6)
            assert int(b.leaf[i]) == (flip_map[leaf[i]] if flipped else leaf[i])
            flips += flipped
    assert 0.25 < flips / (4 * len(idx)) < 0.75  # about half the photos are mirrored


def test_warped_keypoints_stay_on_the_person():
    bank, _ = _dot_bank()
    aug = _augmenter(bank, np.array([0]))
    idx = np.arange(len(bank))
    for train in (True, False):
        b = aug.batch(idx, np.zeros(len(idx), int), train=train)
        img = b.x * 0.5 + 0.5  # undo the normalisation
        for i in range(len(idx)):
            flipped = not np.allclose(b.kp[i, :, 2].numpy(), bank.keypoints[i, :, 2])
            # the drawn left wrist is the person's right wrist once the photo is mirrored
            j = K["right_wrist"] if flipped else K["left_wrist"]
            want = (b.kp[i, j, :2].numpy() + 1) / 2 * OUT
            np.testing.assert_allclose(_blob_centre(img[i]), want, atol=1.0, err_msg=f"photo {i} train={train}")


def test_evaluation_batches_are_fixed_framing():
    bank, kps = _dot_bank(6)
    aug = _augmenter(bank)
    idx = np.arange(6)
    a = aug.batch(idx, np.zeros(6, int), train=False)
    b = aug.batch(idx, np.zeros(6, int), train=False)
    torch.testing.assert_close(a.x, b.x)
    s = (1 + 2 * 0.15) / (1 + 2 * 0.35)  # eval margin inside the bank's widest margin
    expect = (kps[..., :2] / S * 2 - 1) / s
    np.testing.assert_allclose(a.kp[..., :2].numpy(), expect, atol=1e-5)


def test_crop_one_puts_keypoints_on_the_crop(tmp_path):
    from PIL import Image

    arr = np.zeros((300, 200, 3), np.uint8)
    kp = np.zeros((33, 4))
    kp[:, :2] = (100, 150)
    kp[:, 3] = 0.9
    kp[K["nose"], :2] = (80.5, 60.5)
    arr[58:63, 78:83] = 255
    path = tmp_path / "p.png"
    Image.fromarray(arr).save(path)
    crop, pts = crop_one(str(path), np.array([50.0, 40.0, 150.0, 260.0]), kp, 0.2, 64, BODY.n)
    assert crop.shape == (64, 64, 3)
    v = crop.astype(float).sum(-1)
    ys, xs = np.nonzero(v > v.max() / 2)
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], pts[K["nose"], :2], atol=1.0)
    assert pts[0, 2] == pytest.approx(0.9)
    bad, none = crop_one(str(tmp_path / "missing.jpg"), None, None, 0.2, 64, BODY.n)
    assert bad.shape == (64, 64, 3) and (none == 0).all()


def test_crop_bank_cache_is_reused_and_invalidated(sample_poses, tmp_path):
    poses = sample_poses.iloc[:4].reset_index(drop=True)
    cache = tmp_path / "crops.npz"
    bank = build_crop_bank(poses, 32, 0.35, BODY, cache, show_progress=False)
    assert bank.images.shape == (4, 32, 32, 3) and cache.exists()
    mtime = cache.stat().st_mtime_ns
    again = build_crop_bank(poses, 32, 0.35, BODY, cache, show_progress=False)
    np.testing.assert_array_equal(again.images, bank.images)
    assert cache.stat().st_mtime_ns == mtime
    other = build_crop_bank(poses, 40, 0.35, BODY, cache, show_progress=False)  # other size: rebuilt
    assert other.size == 40
    cache.write_bytes(b"garbage")
    assert build_crop_bank(poses, 32, 0.35, BODY, cache, show_progress=False).size == 32


# --- one stage ----------------------------------------------------------------------------


def _two_class_bank(n: int = 16, seed: int = 0) -> tuple[CropBank, np.ndarray]:
    """Reddish horizontal stripes (class 0) against bluish vertical stripes (class 1), with a skeleton."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, S, S, 3), np.uint8)
    leaf = np.array([0, 1] * (n // 2))
    for i in range(n):
        if leaf[i] == 0:
            images[i, :, :, 0] = 200
            images[i, ::8] = 255
        else:
            images[i, :, :, 2] = 200
            images[i, :, ::8] = 255
        images[i] = np.clip(images[i].astype(int) + rng.integers(-20, 20, images[i].shape), 0, 255)
    skel = standing_keypoints(width=600, height=600, cx=300)
    kp = np.concatenate([skel[:, :2] / 600 * S, skel[:, 3:]], 1)
    return CropBank(images, np.repeat(kp[None], n, 0), np.ones(n, bool), 0.35), leaf


@pytest.mark.parametrize("stage", [1, 3])
def test_train_stage_reduces_the_loss(stage):
    torch.manual_seed(0)
    bank, leaf = _two_class_bank()
    cfg = make_config("tiny", batch_size=8, **{f"stage{stage}": StageConfig(5, 1e-3)})
    model, info = build_model(cfg.backbone, {"class": 2}, freeze_fraction=cfg.freeze_fraction)
    aug = Augmenter(bank, Preprocessing(cfg.input_size, cfg.eval_margin, info["mean"], info["std"]), BODY, CPU,
                    train_margin=cfg.train_margin, seed=0)
    labels = Labels(leaf, {"class": np.arange(2)})
    idx = np.arange(len(bank))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen  # the tiny preset freezes the early blocks
    before = evaluate(model, aug, labels, idx, cfg, CPU).metrics["val_loss"]
    seen = []
    result = train_stage(stage, model, aug, labels, idx, idx, cfg, CPU, seed=0, on_epoch=seen.append)
    after = evaluate(model, aug, labels, idx, cfg, CPU).metrics["val_loss"]
    assert after < before
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == len(seen) == 5 and losses[-1] < losses[0]
    assert {"stage", "epoch", "train_loss", "val_loss", "val_acc", "val_macro_f1", "lr", "images_per_s"} <= set(result.history[0])
    assert result.best == result.history[result.best_epoch - 1]
    for name, p in model.named_parameters():
        if name in frozen:
            torch.testing.assert_close(p, frozen[name])
    if stage == 3:  # share of CAM energy on the body; NaN only where every map is all zero
        assert all(np.isnan(r["cam_inside"]) or 0 <= r["cam_inside"] <= 1 for r in result.history)


def test_train_stage_survives_one_warmup_step():
    """40 training photos, batch 8, 1 epoch: 5 steps, warmup 0.2 x 5 = 1 step (the tiny preset on a
    2-fold split of data/sample). OneCycleLR divides by zero when pct_start * total_steps == 1."""
    bank, leaf = _two_class_bank(48)
    cfg = make_config("tiny")
    assert cfg.batch_size == 8 and cfg.stage1.epochs == 1 and cfg.stage1.warmup_fraction * 5 == 1
    model, info = build_model(cfg.backbone, {"class": 2}, freeze_fraction=cfg.freeze_fraction, load_weights=False)
    aug = Augmenter(bank, Preprocessing(cfg.input_size, cfg.eval_margin, info["mean"], info["std"]), BODY, CPU,
                    train_margin=cfg.train_margin, seed=0)
    labels = Labels(leaf, {"class": np.arange(2)})
    result = train_stage(1, model, aug, labels, np.arange(40), np.arange(40, 48), cfg, CPU, seed=0)
    assert len(result.history) == 1


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "fold_1" / "stage2.pt"
    state = {"w": torch.arange(4.0)}
    save_checkpoint(path, run_id="abc", fold=1, stage=2, state_dict=state, meta={"best": {"val_acc": 0.5}})
    ckpt = load_checkpoint(path, run_id="abc", fold=1, stage=2)
    torch.testing.assert_close(ckpt["state_dict"]["w"], state["w"])
    assert ckpt["meta"]["best"]["val_acc"] == 0.5
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("content", ["foreign", "garbage", "truncated", "empty"])
def test_checkpoint_foreign_or_corrupt(tmp_path, content):
    path = tmp_path / "stage1.pt"
    if content == "foreign":
        torch.save({"model": {"w": torch.zeros(2)}}, path)
    elif content == "garbage":
        path.write_bytes(b"\x00\x01not a checkpoint" * 50)
    elif content == "truncated":
        save_checkpoint(path, run_id="abc", fold=1, stage=1, state_dict={"w": torch.zeros(1000)}, meta={})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(RunError) as info:
        load_checkpoint(path, run_id="abc", fold=1, stage=1)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key,value", [("run_id", "other"), ("fold", 2), ("stage", 3)])
def test_checkpoint_of_another_run_fold_or_stage(tmp_path, key, value):
    path = tmp_path / "stage1.pt"
    save_checkpoint(path, run_id="abc", fold=1, stage=1, state_dict={}, meta={})
    want = {"run_id": "abc", "fold": 1, "stage": 1, key: value}
    with pytest.raises(RunError) as info:
        load_checkpoint(path, **want)
    assert str(path) in str(info.value) and key in str(info.value)


# --- config ---------------------------------------------------------------------------------


def test_presets_and_overrides():
    assert {"quick", "full", "tiny"} <= set(PRESETS)
    tiny = make_config("tiny", seed=3, batch_size=None)
    assert tiny.input_size == 64 and tiny.seed == 3 and tiny.batch_size == 8
    assert all(tiny.stage(s).epochs == 1 for s in (1, 2, 3))
    assert PRESETS["tiny"].seed == 0  # presets are not modified by overrides
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")
    again = TrainConfig.from_dict(json.loads(json.dumps(tiny.to_dict())))
    assert again == tiny


def test_bank_size_covers_the_eval_framing():
    cfg = make_config("tiny")
    size = bank_size(cfg)
    assert size % 8 == 0
    # the evaluation crop (eval margin) taken from the bank (widest margin) is not upsampled
    assert size * (1 + 2 * cfg.eval_margin) / (1 + 2 * cfg.train_margin[1]) >= cfg.input_size


# --- the tiny run's files (docs/FORMATS.md) --------------------------------------------------------


def test_run_directory_layout(tiny_run):
    for name in ("config.json", "poses.csv", "folds.csv", "keypoint_model.json", "keypoint_linear_model.json",
                 "fusion.json", "oof_predictions.csv", "training_curves.png"):
        assert (tiny_run / name).is_file(), name
    for k in (1, 2):
        fold = tiny_run / f"fold_{k}"
        for name in ("stage1.pt", "stage2.pt", "stage3.pt", "metrics.csv", "oof_image.csv", "done.json"):
            assert (fold / name).is_file(), f"fold_{k}/{name}"
    assert not list(tiny_run.rglob(".*.tmp"))  # atomic writes leave no temporary files
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["format"] == "hybridpose-run" and config["folds"] == 2
    assert config["train"]["preset"] == "tiny"
    assert config["hierarchy"]["levels"] == ["class", "subgroup", "group"]


def test_run_checkpoints_load(tiny_run, sample_dataset):
    config = json.loads((tiny_run / "config.json").read_text())
    ckpt = load_checkpoint(tiny_run / "fold_2" / "stage3.pt", run_id=config["run_id"], fold=2, stage=3)
    h = sample_dataset.hierarchy
    assert ckpt["meta"]["levels"] == {lv: h.classes(lv) for lv in h.levels}
    sizes = {lv: len(c) for lv, c in ckpt["meta"]["levels"].items()}
    model, _ = build_model(ckpt["meta"]["backbone"], sizes, load_weights=False)
    model.load_state_dict(ckpt["state_dict"])


def test_run_folds_and_metrics(tiny_run, sample_dataset):
    folds = pd.read_csv(tiny_run / "folds.csv")
    assert list(folds.columns) == ["path", "label", "group", "fold"]
    assert list(folds["path"]) == [str(p) for p in sample_dataset.paths]
    assert set(folds["fold"]) == {1, 2}
    for k in (1, 2):
        metrics = pd.read_csv(tiny_run / f"fold_{k}" / "metrics.csv")
        assert {"stage", "epoch", "train_loss", "val_loss", "val_acc", "val_macro_f1", "lr", "images_per_s"} <= set(metrics.columns)
        assert sorted(metrics["stage"].unique()) == [1, 2, 3]
        oof = pd.read_csv(tiny_run / f"fold_{k}" / "oof_image.csv")
        assert sorted(oof["path"]) == sorted(folds.loc[folds["fold"] == k, "path"])
        done = json.loads((tiny_run / f"fold_{k}" / "done.json").read_text())
        assert done["n_out_of_fold"] == len(oof)
        assert done["n_train"] + done["n_early_stopping"] + done["n_out_of_fold"] == 80
        assert 0 < done["n_early_stopping"] < done["n_train"]
        assert set(done["cam_inside"]) == {"1", "2", "3"}


def test_run_oof_predictions_complete(tiny_run, sample_dataset):
    oof = pd.read_csv(tiny_run / "oof_predictions.csv", keep_default_na=False, na_values=[""])
    h = sample_dataset.hierarchy
    assert list(oof["path"]) == [str(p) for p in sample_dataset.paths]
    assert list(oof["true_class"]) == sample_dataset.labels
    folds = pd.read_csv(tiny_run / "folds.csv")
    assert list(oof["fold"]) == list(folds["fold"])
    for lv in h.levels:
        assert list(oof[f"true_{lv}"]) == sample_dataset.level_labels(lv)
        for branch in ("image", "keypoint", "keypoint_linear", "fused"):
            cols = [f"{branch}:{lv}:{c}" for c in h.classes(lv)]
            p = oof[cols].to_numpy(float)
            answered = np.isfinite(p).all(1)
            if branch.startswith("keypoint"):
                assert (answered == (oof["status"] == "ok")).all()  # abstains where no person was found
            else:
                assert answered.all()
            np.testing.assert_allclose(p[answered].sum(1), 1, atol=1e-4)
            pred = oof[f"pred_{branch}_{lv}"].fillna("")
            assert set(pred[answered]) <= set(h.classes(lv))
    fusion = json.loads((tiny_run / "fusion.json").read_text())
    assert set(fusion["levels"]) == set(h.levels)
    for lf in fusion["levels"].values():
        assert set(lf["weights"]) == set(lf["temperatures"]) == {"image", "keypoint", "keypoint_linear"}
        assert abs(sum(lf["weights"].values()) - 1) < 1e-6 and min(lf["weights"].values()) >= 0
        assert min(lf["temperatures"].values()) > 0


def test_inner_split_keeps_early_stopping_away_from_out_of_fold_photos():
    from hybridpose.train.fit import inner_split

    leaf = np.repeat(np.arange(4), 20)
    groups = np.arange(80)
    groups[[0, 1, 2]] = 0  # three near-duplicates
    train_idx = np.setdiff1d(np.arange(80), np.arange(5, 80, 5))  # the out-of-fold photos left out
    fit_rows, stop_rows = inner_split(train_idx, leaf, groups, 0.15, seed=0)
    assert set(fit_rows) | set(stop_rows) == set(train_idx) and not set(fit_rows) & set(stop_rows)
    assert 0.08 * len(train_idx) <= len(stop_rows) <= 0.25 * len(train_idx)
    assert set(np.unique(leaf[stop_rows])) == {0, 1, 2, 3}  # stratified
    assert ({0, 1, 2} <= set(fit_rows)) or ({0, 1, 2} <= set(stop_rows))  # duplicates stay together


def test_inner_split_with_one_photo_per_class_stops_on_the_training_photos():
    """2 photos per class and 2 folds leave one training photo per class: no early-stopping split exists
    (scikit-learn raised "n_splits=2 cannot be greater than the number of members in each class")."""
    from hybridpose.train.fit import inner_split

    leaf, groups = np.arange(3).repeat(2), np.arange(6)
    train_idx = np.array([0, 2, 4])
    fit_rows, stop_rows = inner_split(train_idx, leaf, groups, 0.15, seed=0)
    assert list(fit_rows) == list(stop_rows) == [0, 2, 4]
    fit_rows, stop_rows = inner_split(np.arange(6), leaf, np.zeros(6, int), 0.15, seed=0)  # one group
    assert list(fit_rows) == list(stop_rows) == list(range(6))


@pytest.mark.slow
def test_a_fold_is_reproducible(tiny_run, tmp_path):
    """The same fold trained again (another process could do it) gives the same out-of-fold predictions."""
    import shutil

    from hybridpose.train.fit import train_fold

    again = tmp_path / "again"
    shutil.copytree(tiny_run, again, ignore=shutil.ignore_patterns("fold_*"))
    train_fold(again, 1, show_progress=False)
    first = pd.read_csv(tiny_run / "fold_1" / "oof_image.csv")
    second = pd.read_csv(again / "fold_1" / "oof_image.csv")
    pd.testing.assert_frame_equal(first, second, rtol=0, atol=1e-6)


def test_a_branch_at_chance_is_named_in_one_line(capsys):
    from hybridpose.train.prepared import chance_level, warn_branches_at_chance

    labels = ["a"] * 6 + ["b"] * 2 + ["c"] * 2
    assert chance_level(labels) == pytest.approx(0.6)
    top1 = {"image": {"class": 0.58}, "sequence": {"class": 0.95}, "fused": {"class": 0.5}}
    assert warn_branches_at_chance(top1, labels, "class") == ["image"]
    out = capsys.readouterr()
    text = out.out + out.err
    assert "image branch" in text and "no better than chance (0.600" in text and "sequence" not in text
