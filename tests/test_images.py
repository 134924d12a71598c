"""Tests of hybridpose.data.images: statuses, orientation, modes and downscaling."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corpus import PHOTO, make_bad_corpus
from hybridpose.data.images import (
    HEIF_EXTENSIONS,
    HEIF_SUPPORTED,
    IMAGE_EXTENSIONS,
    MIN_SIDE,
    ImageLoadError,
    LoadedImage,
    load_image,
    open_rgb,
)

LOADER_STATUSES = {"unreadable", "too_small", "too_large"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("corpus")
    return directory, make_bad_corpus(directory)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return load_image(PHOTO).rgb


def _status_of(path: Path, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    return info.value


def _assert_rgb(loaded: LoadedImage, width: int, height: int) -> None:
    assert loaded.rgb.dtype == np.uint8
    assert loaded.rgb.shape == (height, width, 3)
    assert (loaded.width, loaded.height) == (width, height)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height but holds almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


# --- the bad-input corpus -------------------------------------------------------------


def test_corpus_has_every_case(corpus):
    directory, expected = corpus
    assert len(expected) == 11
    assert set(expected.values()) == {"unreadable", "too_small", "ok", "no_person"}
    assert all((directory / name).is_file() for name in expected)


def test_corpus_loader_statuses(corpus):
    directory, expected = corpus
    for name, status in expected.items():
        if status in LOADER_STATUSES:
            error = _status_of(directory / name)
            assert (name, error.status) == (name, status)
            assert error.reason.strip(), name
        else:
            loaded = load_image(directory / name, max_side=1024)
            assert loaded.rgb.dtype == np.uint8, name
            assert loaded.rgb.ndim == 3 and loaded.rgb.shape[2] == 3, name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.jpg", "zero-byte file"),
        ("truncated.jpg", "truncated or corrupt JPEG data"),
        ("text.jpg", "not an image (cannot identify format)"),
        ("one_pixel.png", f"1x1 px is smaller than {MIN_SIDE} px"),
    ],
)
def test_corpus_reasons(corpus, name, reason):
    directory, _ = corpus
    assert _status_of(directory / name).reason == reason


def test_missing_file_and_directory_are_unreadable(tmp_path):
    missing = _status_of(tmp_path / "nope.jpg")
    assert (missing.status, missing.reason) == ("unreadable", "file not found")
    folder = _status_of(tmp_path)
    assert (folder.status, folder.reason) == ("unreadable", "not a regular file")


def test_error_carries_status_and_reason():
    error = ImageLoadError("too_small", "2x2 px is smaller than 32 px")
    assert (error.status, error.reason) == ("too_small", "2x2 px is smaller than 32 px")
    assert "2x2" in str(error)


def test_open_rgb_raises_load_error(corpus):
    directory, _ = corpus
    with pytest.raises(ImageLoadError) as info:
        open_rgb(directory / "truncated.jpg")
    assert info.value.status == "unreadable"


# --- size limits ------------------------------------------------------------------------


# images.py silences this warning at import; pytest resets warning filters per test.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(30_000, 15_000), (40_000, 30_000)])  # 450 MP and 1.2 GP
def test_too_large_is_refused_before_decoding(tmp_path, size):
    path = tmp_path / "big.png"
    _png_header_only(path, *size)
    start = time.perf_counter()
    error = _status_of(path)
    assert error.status == "too_large"
    assert error.reason
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(("size", "status"), [((31, 400), "too_small"), ((400, 31), "too_small")])
def test_too_small(tmp_path, size, status):
    path = tmp_path / "thin.png"
    Image.new("RGB", size).save(path)
    assert _status_of(path).status == status


def test_min_side_is_accepted(tmp_path):
    path = tmp_path / "square.png"
    Image.new("RGB", (MIN_SIDE, MIN_SIDE), (10, 20, 30)).save(path)
    loaded = load_image(path)
    _assert_rgb(loaded, MIN_SIDE, MIN_SIDE)
    assert loaded.rgb[0, 0].tolist() == [10, 20, 30]


def test_huge_photo_loads_fast_with_max_side(corpus):
    directory, _ = corpus
    start = time.perf_counter()
    loaded = load_image(directory / "huge.jpg", max_side=1024)
    elapsed = time.perf_counter() - start
    assert (loaded.width, loaded.height) == (12000, 9000)
    assert loaded.rgb.shape == (768, 1024, 3)
    assert elapsed < 2.0
    # The top-to-bottom grey gradient survives the reduced decode.
    column = loaded.rgb[:, 512, 0].astype(int)
    assert column[0] < column[-1] - 80


# --- orientation ------------------------------------------------------------------------


def test_exif_rotated_matches_upright(corpus, photo):
    directory, _ = corpus
    path = directory / "exif_rotated.jpg"
    with Image.open(path) as raw:  # stored sideways: the test is not vacuous
        assert raw.size == (photo.shape[0], photo.shape[1])
    loaded = load_image(path)
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])
    diff = np.abs(loaded.rgb.astype(int) - photo.astype(int))
    assert diff.mean() < 3.0


def test_exif_rotation_with_max_side_reports_oriented_size(tmp_path):
    # Wide stored pixels + Orientation=6 -> a tall image; draft() shrinks the decode.
    stored = Image.new("RGB", (2000, 1000), (200, 30, 30))
    stored.paste((30, 30, 200), (0, 0, 1000, 1000))  # left half blue -> top after rotation
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "tall.jpg"
    stored.save(path, "JPEG", quality=90, exif=exif)
    loaded = load_image(path, max_side=300)
    assert (loaded.width, loaded.height) == (1000, 2000)
    assert loaded.rgb.shape == (300, 150, 3)
    assert loaded.rgb[20, 75, 2] > 150 and loaded.rgb[280, 75, 0] > 150  # blue top, red bottom


# --- pixel modes ------------------------------------------------------------------------


def test_palette_photo(corpus, photo):
    loaded = load_image(corpus[0] / "palette.png")
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])
    assert np.abs(loaded.rgb.astype(int) - photo.astype(int)).mean() < 8.0


def test_rgba_photo_is_flattened_on_white(corpus, photo):
    loaded = load_image(corpus[0] / "rgba.png")
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])
    assert (loaded.rgb[:16, :16] == 255).all()  # transparent corner
    np.testing.assert_array_equal(loaded.rgb[16:, 16:], photo[16:, 16:])  # opaque rest unchanged


def test_cmyk_photo(corpus, photo):
    loaded = load_image(corpus[0] / "cmyk.jpg")
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])
    assert np.abs(loaded.rgb.astype(int) - photo.astype(int)).mean() < 10.0


def test_sixteen_bit_photo_uses_full_range(corpus, photo):
    loaded = load_image(corpus[0] / "sixteen_bit.png")
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])
    grey = np.asarray(Image.fromarray(photo).convert("L"), dtype=int)
    assert np.abs(loaded.rgb[..., 0].astype(int) - grey).max() <= 1
    assert (loaded.rgb[..., 0] == loaded.rgb[..., 2]).all()


def test_sixteen_bit_with_small_values_is_not_darkened(tmp_path):
    values = np.tile(np.arange(0, 256, 4, dtype=np.uint16), (40, 1))  # 40x64, max 252
    path = tmp_path / "dim16.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    _assert_rgb(loaded, 64, 40)
    np.testing.assert_array_equal(loaded.rgb[..., 1], values.astype(np.uint8))


def _save_mode(tmp_path: Path, mode: str) -> Path:
    """A 64x48 image in `mode`: left half 0, right half full scale (half scale for 16/32-bit)."""
    left_right = np.zeros((48, 64), dtype=np.float32)
    left_right[:, 32:] = 1.0
    if mode == "F":
        img, suffix = Image.fromarray(left_right), ".tif"
    elif mode == "I;16B":
        img, suffix = Image.fromarray((left_right * 128 * 257).astype(">u2")), ".tif"
    elif mode == "I":
        img, suffix = Image.fromarray((left_right * 128 * 257).astype(np.int32)), ".tif"
    elif mode == "PA-like":  # palette with a transparent index, as GIF/PNG store it
        img = Image.fromarray((left_right * 255).astype(np.uint8)).convert("P")
        img.info["transparency"] = 0  # the dark half is transparent -> white
        suffix = ".png"
    else:
        img, suffix = Image.fromarray((left_right * 255).astype(np.uint8)).convert(mode), ".png"
    path = tmp_path / f"img{suffix}"
    extra = {"transparency": img.info["transparency"]} if "transparency" in img.info else {}
    img.save(path, **extra)
    return path


@pytest.mark.parametrize(
    ("mode", "left", "right"),
    [("L", 0, 255), ("1", 0, 255), ("LA", 0, 255), ("F", 0, 255),
     ("I;16B", 0, 128), ("I", 0, 128), ("PA-like", 255, 255)],
)
def test_modes_become_rgb_uint8(tmp_path, mode, left, right):
    loaded = load_image(_save_mode(tmp_path, mode))
    _assert_rgb(loaded, 64, 48)
    assert loaded.rgb[10, 5].tolist() == [left] * 3
    assert loaded.rgb[10, 60].tolist() == [right] * 3


def test_la_transparency_goes_white(tmp_path):
    la = Image.new("LA", (40, 40), (0, 0))
    la.paste((0, 255), (20, 0, 40, 40))  # right half opaque black
    path = tmp_path / "la.png"
    la.save(path)
    rgb = load_image(path).rgb
    assert rgb[5, 5].tolist() == [255, 255, 255]
    assert rgb[5, 35].tolist() == [0, 0, 0]


@pytest.mark.parametrize("suffix", sorted(IMAGE_EXTENSIONS))
def test_every_extension_loads(tmp_path, photo, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(photo).save(path)
    loaded = load_image(path)
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])


# --- downscaling --------------------------------------------------------------------------


@pytest.mark.parametrize("max_side", [64, 100, 255])
def test_max_side_keeps_original_size(photo, max_side):
    loaded = load_image(PHOTO, max_side=max_side)
    height, width = photo.shape[:2]
    assert (loaded.width, loaded.height) == (width, height)
    assert max(loaded.rgb.shape[:2]) == max_side
    assert loaded.rgb.shape[1] / loaded.rgb.shape[0] == pytest.approx(width / height, rel=0.03)


def test_max_side_larger_than_image_is_a_no_op(photo):
    loaded = load_image(PHOTO, max_side=4096)
    np.testing.assert_array_equal(loaded.rgb, photo)


def test_open_rgb_is_full_resolution(corpus):
    img = open_rgb(corpus[0] / "exif_rotated.jpg")
    assert img.mode == "RGB"
    with Image.open(PHOTO) as upright:
        assert img.size == upright.size


# --- HEIC / HEIF (iPhone photos, through pillow-heif) ------------------------------------------------------


def test_heif_extensions_only_with_a_decoder():
    assert (HEIF_EXTENSIONS <= IMAGE_EXTENSIONS) == HEIF_SUPPORTED
    assert HEIF_SUPPORTED or not (HEIF_EXTENSIONS & IMAGE_EXTENSIONS)


heif_only = pytest.mark.skipif(not HEIF_SUPPORTED, reason="pillow-heif is not installed")


@heif_only
@pytest.mark.parametrize("suffix", [".heic", ".heif"])
def test_heic_photo_loads(tmp_path, photo, suffix):
    path = tmp_path / f"iphone{suffix}"
    Image.fromarray(photo).save(path, format="HEIF", quality=95)
    loaded = load_image(path)
    _assert_rgb(loaded, photo.shape[1], photo.shape[0])
    assert np.abs(loaded.rgb.astype(int) - photo.astype(int)).mean() < 8  # lossy, but the same picture


@heif_only
def test_broken_heic_is_unreadable(tmp_path, photo):
    good = tmp_path / "good.heic"
    Image.fromarray(photo).save(good, format="HEIF")
    garbage, truncated = tmp_path / "garbage.heic", tmp_path / "truncated.heic"
    garbage.write_bytes(bytes(range(256)) * 10)
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert (_status_of(garbage).status, _status_of(garbage).reason) == ("unreadable", "not an image (cannot identify format)")
    assert (_status_of(truncated).status, _status_of(truncated).reason) == ("unreadable", "truncated or corrupt HEIF data")



@pytest.mark.parametrize("size,fmt", [((2600, 2100), "JPEG"), ((1500, 900), "JPEG"), ((1500, 1200), "PNG"),
                                      ((640, 480), "JPEG")])
def test_predict_sees_a_photo_as_extract_does(tmp_path, size, fmt):
    """predict decodes a photo once at full size (for its crop) and derives the pose model's input from it:
    exactly the pixels extract's reduced decode gives, so a cold and a warm pose cache give the same keypoints."""
    from hybridpose.data.images import open_rgb
    from hybridpose.pose.result import analyse, analyse_loaded

    class Seen:  # a pose model that records what it is shown
        def __init__(self):
            self.seen = []

        def landmarks(self, rgb):
            self.seen.append(np.array(rgb))
            return None

    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([(x * 7 + y) % 256, (y * 3) % 256, (x ^ y) % 256], -1).astype(np.uint8)
    path = tmp_path / f"photo.{fmt.lower()}"
    Image.fromarray(rgb).save(path, fmt)
    extract, predict = Seen(), Seen()
    analyse(path, extract)
    analyse_loaded(open_rgb(path), path, predict)
    want, got = extract.seen[0], predict.seen[0]
    assert got.shape == want.shape and max(got.shape[:2]) <= 1024
    np.testing.assert_array_equal(got, want)
