"""Person crops: square around the box with a margin, whole-photo fallback, padding, point mapping."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridpose.data.crops import DEFAULT_MARGIN, Square, crop_person, crop_square, cut, random_margin


@pytest.mark.parametrize("margin", [0.0, 0.15, 0.35])
def test_crop_square_around_box_with_margin(margin):
    box = (10.0, 20.0, 50.0, 100.0)  # 40 wide, 80 tall
    sq = crop_square(box, 640, 480, margin)
    assert (sq.cx, sq.cy) == (30.0, 60.0)
    assert sq.side == pytest.approx(80 * (1 + 2 * margin))
    assert sq.y0 == pytest.approx(20 - 80 * margin)
    assert sq.x0 == pytest.approx(30 - sq.side / 2)


def test_crop_square_wide_box_uses_the_width():
    sq = crop_square(np.array([0.0, 0.0, 200.0, 50.0]), 640, 480, 0.1)
    assert sq.side == pytest.approx(240.0)
    assert (sq.cx, sq.cy) == (100.0, 25.0)


@pytest.mark.parametrize("box", [None, (np.nan,) * 4, (10.0, np.nan, 50.0, 90.0), (50.0, 10.0, 50.0, 90.0),
                                 (60.0, 90.0, 10.0, 10.0)])
def test_whole_image_fallback(box):
    sq = crop_square(box, 300, 200, margin=0.3)
    assert (sq.cx, sq.cy, sq.side) == (150.0, 100.0, 300.0)  # the margin is not applied


def test_tiny_box_still_gives_a_usable_square():
    sq = crop_square((5.0, 5.0, 5.2, 5.1), 100, 100, 0.0)
    assert sq.side >= 1.0


def test_random_margin_in_range():
    rng = np.random.default_rng(0)
    values = [random_margin(rng, 0.05, 0.35) for _ in range(200)]
    assert min(values) >= 0.05 and max(values) <= 0.35
    assert max(values) - min(values) > 0.2


def test_to_crop_maps_box_corners():
    box = (10.0, 20.0, 50.0, 100.0)
    m, size = 0.25, 150
    sq = crop_square(box, 640, 480, m)
    corners = np.array([[10.0, 20.0], [50.0, 100.0]])
    got = sq.to_crop(corners, size)
    # the tall side spans the middle 1 / (1 + 2m) of the crop
    assert got[0, 1] == pytest.approx(size * m / (1 + 2 * m))
    assert got[1, 1] == pytest.approx(size * (1 + m) / (1 + 2 * m))
    # the narrow side is centred
    assert got[0, 0] + got[1, 0] == pytest.approx(size)
    assert got[1, 0] - got[0, 0] == pytest.approx(size * 40 / sq.side)


def test_to_crop_keeps_extra_columns_and_does_not_modify_input():
    pts = np.array([[[10.0, 20.0, 0.7, 0.9]]])
    sq = Square(30.0, 60.0, 100.0)
    out = sq.to_crop(pts, 50)
    assert out.shape == pts.shape
    assert tuple(out[0, 0, 2:]) == (0.7, 0.9)
    assert pts[0, 0, 0] == 10.0
    assert tuple(out[0, 0, :2]) == pytest.approx(((10 - (-20)) / 100 * 50, (20 - 10) / 100 * 50))


def _two_colour(width=200, height=100) -> Image.Image:
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_cut_pads_outside_the_photo_with_the_mean_colour():
    img = _two_colour()
    sq = Square(cx=0.0, cy=50.0, side=100.0)  # half of it hangs off the left edge
    out = np.asarray(cut(img, sq, 100)).astype(int)
    assert out.shape == (100, 100, 3)
    pad, inside = out[:, :45], out[:, 55:]
    assert np.abs(pad - pad[0, 0]).max() <= 2           # uniform fill
    assert abs(pad[0, 0, 0] - pad[0, 0, 2]) <= 10           # ... the purple mean of red and blue
    assert 100 < pad[0, 0, 0] < 160
    assert (inside[..., 0] > 240).all() and (inside[..., 2] < 15).all()  # the red half of the photo


def test_cut_inside_the_photo_is_the_pixels_resized():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    out = np.asarray(cut(img, Square(cx=60.0, cy=50.0, side=40.0), 40))
    np.testing.assert_array_equal(out, arr[30:70, 40:80])


def test_cut_point_lands_where_to_crop_says(tmp_path):
    arr = np.zeros((300, 400, 3), np.uint8)
    y, x = 210, 130
    arr[y - 2 : y + 3, x - 2 : x + 3] = 255  # a bright 5x5 dot centred on pixel (130, 210)
    img = Image.fromarray(arr)
    sq = crop_square((100.0, 80.0, 220.0, 260.0), img.width, img.height, margin=0.3)
    size = 128
    crop = np.asarray(cut(img, sq, size)).astype(float).sum(-1)
    ys, xs = np.nonzero(crop > crop.max() * 0.5)
    found = np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centres
    want = sq.to_crop(np.array([[x + 0.5, y + 0.5]]), size)[0]
    np.testing.assert_allclose(found, want, atol=1.0)


def test_crop_person_size_and_default_margin():
    img = _two_colour(300, 200)
    out = crop_person(img, (20.0, 30.0, 80.0, 150.0), size=64)
    assert out.size == (64, 64) and out.mode == "RGB"
    assert DEFAULT_MARGIN == pytest.approx(0.15)
    whole = crop_person(img, None, size=64)
    # the whole 300x200 photo fills the width: rows at the very top and bottom are padding
    top, mid = np.asarray(whole)[0, 32].astype(int), np.asarray(whole)[32, 5].astype(int)
    assert mid[0] > 240 and mid[2] < 15
    assert abs(top[0] - top[2]) < 20
