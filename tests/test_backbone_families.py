"""Any timm family as the image backbone: CNNs, ConvNeXt, RegNet, MobileNetV3, ViT, Swin.

Fast: the feature map is B x C x h x w at 64 and 160 px, the head is the graph CAMs differentiate,
``cam_layer`` outputs that map, explain's CAMs work, freezing works, the random-weights warning.
Slow: fit, predict and explain end to end with timm's tiny test models (no weights needed).
"""
from __future__ import annotations

import copy
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hybridpose.nets import backbones
from hybridpose.nets.network import build_model

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"

# name -> stride of the feature map; all build in seconds and need no weights
FAMILIES = {
    "test_efficientnet": 32,              # EfficientNet (conv_stem / blocks / conv_head)
    "resnet10t": 32,                      # ResNet (layer1..4)
    "test_convnext": 32,                  # ConvNeXt (stages)
    "regnetx_002": 32,                    # RegNet (s1..s4)
    "mobilenetv3_small_050": 32,          # MobileNetV3 (its conv_head comes after pooling)
    "test_vit": 16,                       # ViT: class token + patch tokens
    "swin_tiny_patch4_window7_224": 32,   # Swin: NHWC output, windows of 7
}


@pytest.fixture(scope="module")
def built():
    """One eval-mode network per family, built once (tests that change it take a deep copy)."""
    torch.manual_seed(0)
    nets = {}
    for name in FAMILIES:
        model, info = build_model(name, {"class": 4, "group": 2}, load_weights=False)
        nets[name] = (model.eval(), info)
    return nets


@pytest.mark.parametrize("size", [64, 160])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_feature_map_is_a_grid_for_every_family(built, name, size):
    model, _ = built[name]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    seen = {}
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        with torch.no_grad():
            out = model.forward_all(x)
            plain = model(x)
    finally:
        handle.remove()
    side = math.ceil(size / FAMILIES[name])
    assert out.fmap.shape == (2, model.backbone.num_features, side, side)
    torch.testing.assert_close(seen["out"], out.fmap)                      # what pytorch-grad-cam hooks
    torch.testing.assert_close(out.embedding, out.fmap.mean((2, 3)))        # HiResCAM stays exact
    torch.testing.assert_close(model.head_logits(out.fmap), plain)          # the graph CAMs differentiate
    torch.testing.assert_close(out.logits["class"], plain)                  # eval: no dropout
    assert out.logits["group"].shape == (2, 2) and out.projection.shape == (2, 128)


def test_vit_feature_map_is_the_patch_tokens_on_their_grid(built):
    model, info = built["test_vit"]
    assert info["timm_kwargs"].get("dynamic_img_size") is True  # any input size, not only timm's 160 px
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.backbone.forward_features(x)
        fmap = model.forward_all(x).fmap
    prefix = model.backbone.num_prefix_tokens
    assert tokens.shape[1] == prefix + 16
    # token (row r, column c) of the 4 x 4 patch grid is cell [r, c] of the map
    torch.testing.assert_close(fmap[0, :, 1, 2], tokens[0, prefix + 1 * 4 + 2])
    torch.testing.assert_close(fmap[0, :, 3, 0], tokens[0, prefix + 3 * 4 + 0])


def test_swin_nhwc_output_is_permuted(built):
    model, info = built["swin_tiny_patch4_window7_224"]
    assert str(getattr(model.backbone.output_fmt, "value", model.backbone.output_fmt)) == "NHWC"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = model.backbone.forward_features(x)
        fmap = model.forward_all(x).fmap
    torch.testing.assert_close(fmap, raw.permute(0, 3, 1, 2))


def _fake_classifier(model):
    """What explain.cam_maps reads of a HybridPoseClassifier: the image branch's models and normalisation."""
    branch = SimpleNamespace(models_=[model], normalise=lambda crops: crops.float() / 127.5 - 1)
    return SimpleNamespace(image_branch=branch)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_explain_cam_maps_work_for_every_family(built, name):
    from hybridpose.explanation.cam import cam_maps

    model, _ = built[name]
    crops = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    with torch.no_grad():
        top = model(_fake_classifier(model).image_branch.normalise(crops)).argmax(1).tolist()
    for method in ("hirescam", "xgradcam"):
        maps = cam_maps(_fake_classifier(model), crops, top, method)
        assert maps.shape == (2, 64, 64)
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
        assert (maps.max(axis=(1, 2)) > 0).all(), method


@pytest.mark.parametrize("name", list(FAMILIES))
def test_freeze_early_works_for_every_family(built, name):
    net = copy.deepcopy(built[name][0].backbone)
    assert backbones.freeze_early(net, 0.0) == 0
    assert all(p.requires_grad for p in net.parameters())
    n = backbones.freeze_early(net, 0.43)
    frozen = [k for k, p in net.named_parameters() if not p.requires_grad]
    trainable = [k for k, p in net.named_parameters() if p.requires_grad]
    assert n >= 1 and frozen and trainable, (n, len(frozen), len(trainable))
    last = list(net.named_parameters())[-1][0]
    assert last in trainable  # the last block / final norm keep learning


def test_random_weights_warning_once_per_process(monkeypatch, tmp_path):
    said = []
    monkeypatch.setattr(backbones, "_WARNED", set())
    monkeypatch.setattr(backbones, "log", said.append)
    build_model("test_convnext", {"class": 3})
    build_model("test_convnext", {"class": 3}, freeze_fraction=0.43)  # the next fold: no second warning
    assert len(said) == 1
    assert "test_convnext" in said[0] and "random weights" in said[0].lower()
    assert "--weights FILE" in said[0] and "--pretrained" in said[0] and "[yellow]" in said[0]
    build_model("test_convnext", {"class": 3}, load_weights=False)  # rebuilding a checkpoint's model: silent
    model, _ = build_model("test_vit", {"class": 3}, load_weights=False)
    path = tmp_path / "vit.pt"
    torch.save(model.backbone.state_dict(), path)
    _, info = build_model("test_vit", {"class": 3}, weights=str(path))  # weights given: silent
    assert info["weights_source"] == str(path)
    build_model("efficientnet_lite0", {"class": 3})  # bundled ImageNet weights: silent
    assert len(said) == 1


def test_pretrained_offline_is_a_clear_error_for_a_vit(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(backbones.WeightsError, match="--weights FILE"):
        build_model("test_vit", {"class": 3}, pretrained=True)


def test_fixed_size_transformer_is_built_for_the_input_size():
    """Models that cannot take any size get timm's img_size; the recorded kwargs rebuild the same model."""
    from hybridpose.train.config import ConfigError

    model, info = build_model("test_vit_relpos", {"class": 3}, load_weights=False, input_size=64)
    assert info["timm_kwargs"] == {"img_size": 64}
    assert info["feature_shape"] == [model.backbone.num_features, 4, 4]
    again, _ = build_model("test_vit_relpos", {"class": 3}, load_weights=False, timm_kwargs=info["timm_kwargs"])
    again.load_state_dict(model.state_dict())
    with pytest.raises(ConfigError, match="--input-size 64"):
        build_model("test_vit_relpos", {"class": 3}, load_weights=False, input_size=64, timm_kwargs={})


# --- end to end ---------------------------------------------------------------------------------


def _small_dataset(root: Path) -> Path:
    """12 photos of 3 classes of data/sample as a class-folder dataset."""
    data = root / "data"
    for c in ("Triangle", "Vrukshasana", "Downward_dog"):
        (data / c).mkdir(parents=True)
        for p in sorted((SAMPLE / c).glob("*.jpg"))[:4]:
            shutil.copy(p, data / c / p.name)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_efficientnet", "test_convnext", "test_vit"])
def test_fit_predict_explain_end_to_end(tmp_path, name):
    from hybridpose.explanation import explain
    from hybridpose.explanation.cam import cam_maps
    from hybridpose.inference.classifier import HybridPoseClassifier
    from hybridpose.train.fit import fit

    data = _small_dataset(tmp_path)
    run = tmp_path / "run"
    fit(data, run, folds=2, preset="tiny", backbone=name, show_progress=False)

    paths = sorted(data.rglob("*.jpg"))
    clf = HybridPoseClassifier.load(run)
    table = clf.predict(paths)
    classes = {"Triangle", "Vrukshasana", "Downward_dog"}
    assert len(table) == len(paths)
    assert (table["status"] == "ok").all()
    assert set(table["top1"]) <= classes
    np.testing.assert_allclose(table[["top1_prob", "top2_prob", "top3_prob"]].sum(axis=1), 1.0, atol=1e-4)
    probs, status = clf.predict_proba(paths)
    for p in probs.values():
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)

    _, crops = clf.poses_and_crops(paths[:4])
    maps = cam_maps(HybridPoseClassifier.load(run, engine="torch"), crops, [0, 1, 2, 0])  # the default: ONNX, no gradients
    assert maps.shape == (4, *crops.shape[-2:])
    assert np.isfinite(maps).all() and maps.max() > 0

    result = explain(data, run, tmp_path / "explain")
    assert result["photos"] == len(paths)
    pngs = list((tmp_path / "explain").glob("*_explain.png"))
    # one figure per photo, or one per person where several were found (NAME_person<k>_explain.png)
    named = {re.sub(r"_person\d+$", "", p.name[:-len("_explain.png")]) for p in pngs}
    assert named == {p.stem for p in paths} and all(p.stat().st_size > 1000 for p in pngs)
    assert len(pngs) >= len(paths)
    assert Path(result["contact_sheet"]).is_file()
