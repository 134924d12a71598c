"""The bad-input corpus: odd, broken and extreme image files with the status each should get.

Not a test module: tests call make_bad_corpus(tmp_dir) and check their part of the pipeline
(the loader checks 'unreadable' / 'too_small'; 'ok' / 'no_person' need the pose model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
# A portrait (171x256) full-body photo in which MediaPipe finds the person.
PHOTO = SAMPLE_DIR / "Vrukshasana" / "v63.jpg"
HUGE_SIZE = (12000, 9000)
EXIF_ORIENTATION = 0x0112


def make_bad_corpus(directory: Path) -> dict[str, str]:
    """Write the corpus into `directory`; returns {file name: expected status}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    writers = {
        "empty.jpg": ("unreadable", lambda p: p.write_bytes(b"")),
        "truncated.jpg": ("unreadable", lambda p: _write_truncated(p, photo)),
        "text.jpg": ("unreadable", lambda p: p.write_text("this is not an image\n" * 20)),
        "one_pixel.png": ("too_small", lambda p: Image.new("RGB", (1, 1), (128, 128, 128)).save(p)),
        "huge.jpg": ("no_person", _write_huge),
        "cmyk.jpg": ("ok", lambda p: photo.convert("CMYK").save(p, "JPEG", quality=90)),
        "sixteen_bit.png": ("ok", lambda p: _sixteen_bit(photo).save(p)),
        "landscape.jpg": ("no_person", lambda p: _gradient((640, 480), seed=1).save(p, quality=90)),
        "palette.png": ("ok", lambda p: photo.quantize(colors=256).save(p)),
        "rgba.png": ("ok", lambda p: rgba_version(photo).save(p)),
        "exif_rotated.jpg": ("ok", lambda p: _write_exif_rotated(p, photo)),
    }
    expected = {}
    for name, (status, write) in writers.items():
        write(directory / name)
        expected[name] = status
    return expected


def rgba_version(photo: Image.Image) -> Image.Image:
    """The photo with a transparent black 16x16 top-left corner, opaque elsewhere."""
    rgba = photo.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 16))
    return rgba


def _photo() -> Image.Image:
    if not PHOTO.is_file():
        raise FileNotFoundError(f"{PHOTO} is missing: build data/sample with data/make_sample.py")
    with Image.open(PHOTO) as img:
        return img.convert("RGB")


def _write_truncated(path: Path, photo: Image.Image) -> None:
    full = path.with_suffix(".full.tmp")
    photo.save(full, "JPEG", quality=90)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])


def _write_exif_rotated(path: Path, photo: Image.Image) -> None:
    """Store the photo turned 90° counter-clockwise; Orientation=6 turns it back."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95, exif=exif)


def _sixteen_bit(photo: Image.Image) -> Image.Image:
    """16-bit grayscale using the full 0..65535 range."""
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(grey)  # mode I;16


def _gradient(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth sky-to-ground colour gradient with mild noise: no person in it."""
    width, height = size
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    top, bottom = np.array([120, 170, 230]), np.array([70, 120, 60])
    img = np.broadcast_to(top + (bottom - top) * rows, (height, width, 3))
    noise = np.random.default_rng(seed).normal(0.0, 6.0, (height, width, 3))
    return Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))


def _write_huge(path: Path) -> None:
    """12000x9000 plain grey top-to-bottom gradient, low quality so it is small on disk."""
    rows = np.linspace(90, 200, HUGE_SIZE[1], dtype=np.float32)[:, None]
    grey = np.broadcast_to(rows, HUGE_SIZE[::-1]).astype(np.uint8)
    Image.fromarray(grey).convert("RGB").save(path, "JPEG", quality=20)
