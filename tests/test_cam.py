"""In-graph CAMs against pytorch-grad-cam, and the keypoint body region the stage-3 loss uses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, HiResCAM, XGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from conftest import standing_keypoints
from hybridpose.nets.network import build_model
from hybridpose.skeletons.body import BODY, K
from hybridpose.skeletons.body import EDGES as BODY_SEGMENTS
from hybridpose.train.cam import body_coverage, cam_in_graph, energy_inside

SIZE = 96
LIBRARY = {"hirescam": HiResCAM, "xgradcam": XGradCAM, "gradcam": GradCAM}


@pytest.fixture(scope="module", params=["efficientnet_lite0", "test_vit"])
def net(request):
    """A CNN and a vision transformer (its patch tokens on their 6 x 6 grid): the same checks hold for both."""
    torch.manual_seed(0)
    model, _ = build_model(request.param, {"class": 5, "group": 2}, load_weights=False)
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _postprocess(cam: np.ndarray, size: int = SIZE) -> np.ndarray:
    """What pytorch-grad-cam does to a layer's map: relu, min-max and resize per image, then min-max again."""
    cam = np.maximum(cam, 0)
    return scale_cam_image(scale_cam_image(cam, (size, size)))


@pytest.mark.parametrize("method", ["hirescam", "xgradcam", "gradcam"])
def test_in_graph_cam_equals_pytorch_grad_cam(net, inputs, method):
    out = net.forward_all(inputs)
    targets = out.logits["class"].argmax(1)
    targets[1] = (targets[0] + 2) % 5  # also a class that is not the top one
    ours = cam_in_graph(out.fmap, net.head_logits(out.fmap), targets, method, create_graph=False)
    assert ours.shape == (2, *out.fmap.shape[-2:])
    assert (ours >= 0).all()
    ours = _postprocess(ours.detach().numpy())

    with LIBRARY[method](model=net, target_layers=[net.cam_layer]) as cam:
        theirs = cam(input_tensor=inputs.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    assert theirs.shape == ours.shape == (2, SIZE, SIZE)
    assert max(float(theirs[i].std()) for i in range(2)) > 0.05  # not a degenerate, constant map
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


class _FlatHeadNet(torch.nn.Module):
    """A small CNN whose head sees every cell (no global pooling), so the three CAM methods differ."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 6, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * 6 * 6, 4))

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("method", ["hirescam", "xgradcam", "gradcam"])
def test_in_graph_cam_formulas_on_a_spatial_head(method):
    """On PoseNet (mean pooling, linear head) the three maps coincide; here each formula is checked."""
    torch.manual_seed(3)
    model = _FlatHeadNet().eval()
    x = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 2, 3])
    fmap = model.body(x)
    maps = {m: _postprocess(cam_in_graph(fmap, model.head(fmap), targets, m, create_graph=False).detach().numpy(), 24)
            for m in LIBRARY}
    with LIBRARY[method](model=model, target_layers=[model.body[-1]]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    np.testing.assert_allclose(maps[method], theirs, atol=2e-4)
    others = [m for m in LIBRARY if m != method]
    assert all(np.abs(maps[m] - theirs).max() > 0.05 for m in others)  # the comparison tells methods apart


def test_cam_layer_output_is_the_feature_map(net, inputs):
    seen = {}
    handle = net.cam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        with torch.no_grad():
            fmap = net.forward_all(inputs).fmap
    finally:
        handle.remove()
    torch.testing.assert_close(seen["out"], fmap)


def test_forward_is_the_leaf_head_without_dropout(net, inputs):
    with torch.no_grad():
        out = net.forward_all(inputs)
        torch.testing.assert_close(net(inputs), out.logits["class"])  # eval mode: dropout is off


def test_in_graph_cam_is_differentiable(net, inputs):
    out = net.forward_all(inputs)
    cam = cam_in_graph(out.fmap, net.head_logits(out.fmap), torch.tensor([0, 1]), "hirescam", create_graph=True)
    grads = torch.autograd.grad(cam.sum(), [net.heads["class"].weight, *[p for p in net.backbone.parameters()][-3:]],
                                allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_cam_method(net, inputs):
    out = net.forward_all(inputs)
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam_in_graph(out.fmap, net.head_logits(out.fmap), torch.tensor([0, 0]), "scorecam")


# --- body region ------------------------------------------------------------------------------


def _skeleton() -> torch.Tensor:
    """The standing person in a square 600 px crop, as x, y in [-1, 1] and visibility: 1 x 33 x 3."""
    kp = standing_keypoints(width=600, height=600, cx=300)
    xy = kp[:, :2] / 600 * 2 - 1
    return torch.tensor(np.concatenate([xy, kp[:, 3:4]], 1)[None], dtype=torch.float32)


def _cell(point: torch.Tensor, n: int) -> tuple[int, int]:
    col, row = ((point + 1) / 2 * n).floor().long().clamp(0, n - 1).tolist()
    return row, col


def test_body_coverage_follows_the_limbs():
    kp, n = _skeleton(), 12
    cov = body_coverage(kp, (n, n), BODY)[0]
    assert cov.shape == (n, n)
    assert ((cov >= 0) & (cov <= 1)).all()
    for a, b in BODY_SEGMENTS:
        mid = (kp[0, K[a], :2] + kp[0, K[b], :2]) / 2
        assert cov[_cell(mid, n)] > 0.3, (a, b)
    hip = (kp[0, K["left_hip"], :2] + kp[0, K["right_hip"], :2]) / 2
    assert cov[_cell(hip, n)] > 0.9
    for corner in [(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)]:
        assert cov[corner] == 0
    assert 0.1 < cov.mean() < 0.6


def test_body_coverage_leaves_out_invisible_limbs():
    kp, n = _skeleton(), 12
    before = body_coverage(kp, (n, n), BODY)[0]
    hidden = kp.clone()
    hidden[0, K["left_wrist"], 2] = 0.0
    after = body_coverage(hidden, (n, n), BODY)[0]
    forearm = (kp[0, K["left_elbow"], :2] * 0.2 + kp[0, K["left_wrist"], :2] * 0.8)
    cell = _cell(forearm, n)
    assert before[cell] > 0 and after[cell] < before[cell]
    assert (after <= before + 1e-6).all()
    nobody = kp.clone()
    nobody[..., 2] = 0
    assert body_coverage(nobody, (n, n), BODY).sum() == 0


def test_body_coverage_moves_with_the_person():
    kp = _skeleton()
    shifted = kp.clone()
    shifted[..., 0] += 0.5  # half a crop to the right: 3 cells of 12
    a, b = body_coverage(kp, (12, 12), BODY)[0], body_coverage(shifted, (12, 12), BODY)[0]
    torch.testing.assert_close(b[:, 3:], a[:, :-3], atol=1e-6, rtol=0)


def test_energy_inside():
    mask = torch.zeros(1, 6, 6)
    mask[0, 1:4, 2:5] = 1
    inside = torch.zeros(1, 6, 6)
    inside[0, 2, 3] = 5.0
    inside[0, 1, 2] = 1.0
    outside = torch.zeros(1, 6, 6)
    outside[0, 5, 0] = 3.0
    half = inside + torch.zeros(1, 6, 6).index_put_((torch.tensor([0]), torch.tensor([5]), torch.tensor([5])),
                                                   torch.tensor([6.0]))
    cams = torch.cat([inside, outside, half, torch.zeros(1, 6, 6)])
    share = energy_inside(cams, mask.expand(4, 6, 6))
    assert share[0] == pytest.approx(1.0)
    assert share[1] == pytest.approx(0.0)
    assert share[2] == pytest.approx(0.5)
    assert torch.isnan(share[3])
