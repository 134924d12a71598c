"""The bad-input corpora, with the status each entry should get.

- make_bad_corpus: odd, broken and extreme image files (the loader checks 'unreadable' / 'too_small';
  'ok' / 'no_person' need the pose model).
- make_entry_corpus: every kind of folder entry that is not a photo (links, loops, a FIFO, folders named
  like photos, other formats, HEIC) next to real photos: each must get a row and nothing may be opened
  but regular files.

Not a test module: tests call these with a temporary folder and check their part of the pipeline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
# A portrait (171x256) full-body photo in which MediaPipe finds the person.
PHOTO = SAMPLE_DIR / "Vrukshasana" / "v63.jpg"
SECOND_PHOTO = SAMPLE_DIR / "Triangle" / "triangle15.jpg"  # 225x225, a person MediaPipe finds
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


def heif_available() -> bool:
    """Whether pillow-heif is installed (hybridpose then reads .heic / .heif)."""
    from hybridpose.data.images import HEIF_SUPPORTED

    return HEIF_SUPPORTED


def running_as_root() -> bool:
    """Whether this process reads every file and lists every folder whatever the permission bits say
    (root, unless run without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH): found out by trying."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_bytes(b"x")
        probe.chmod(0)
        try:
            probe.read_bytes()
        except PermissionError:
            return False
        return True


def make_entry_corpus(directory: Path) -> dict[str, str]:
    """Write the folder-entry corpus; returns {path relative to `directory`: expected status}.

    The permission cases (a file and a sub-folder nobody may read) are left out when running as root."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    heif = heif_available()
    expected: dict[str, str] = {}

    def add(name: str, status: str) -> Path:
        expected[name] = status
        return directory / name

    shutil.copyfile(PHOTO, add("photo_a.jpg", "ok"))
    shutil.copyfile(SECOND_PHOTO, add("photo_b.jpg", "ok"))
    os.symlink("missing.jpg", add("broken_link.jpg", "broken_link"))
    os.symlink("loop_b.jpg", add("loop_a.jpg", "broken_link"))  # a -> b -> a
    os.symlink("loop_a.jpg", add("loop_b.jpg", "broken_link"))
    (directory / "sub").mkdir()
    os.symlink("..", add("sub/up", "broken_link"))  # a link to a folder that links back up: a loop through folders
    shutil.copyfile(PHOTO, add("sub/nested_copy.jpg", "ok"))  # same content as photo_a: served from the cache
    os.mkfifo(add("fifo.jpg", "not_a_file"))
    _write_heic(add("iphone.heic", "ok" if heif else "unsupported"))
    add("garbage.heic", "unreadable" if heif else "unsupported").write_bytes(os.urandom(3000))
    add("clip.mp4", "unsupported").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    add("notes.txt", "unsupported").write_text("not a photo\n")
    add("empty.jpg", "unreadable").write_bytes(b"")
    _write_truncated(add("truncated.jpg", "unreadable"), _photo())
    add("folder.jpg", "not_a_file").mkdir()
    if not running_as_root():
        no_read = add("no_read.jpg", "unreadable")
        shutil.copyfile(PHOTO, no_read)
        no_read.chmod(0)
        locked = add("locked", "unreadable")  # a sub-folder that cannot be listed
        locked.mkdir()
        shutil.copyfile(PHOTO, locked / "inside.jpg")
        locked.chmod(0)
    return expected


def _write_heic(path: Path) -> None:
    """A real HEIC photo of PHOTO (made with pillow-heif); without it a file with a HEIC header only."""
    if heif_available():
        _photo().save(path, format="HEIF", quality=90)
    else:
        path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(1000))


def sample_subset(dest: Path, per_class: int, source: Path = SAMPLE_DIR) -> Path:
    """The first ``per_class`` photos of each class folder of ``source`` (data/sample), with its hierarchy."""
    for cls in sorted(p for p in source.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True)
        for photo in sorted(cls.iterdir())[:per_class]:
            shutil.copy(photo, dest / cls.name / photo.name)
    if (source / "hierarchy.csv").exists():
        shutil.copy(source / "hierarchy.csv", dest / "hierarchy.csv")
    return dest


def digest(folder: Path) -> dict[str, str]:
    """The content hash of every file under ``folder``, by relative path (to show nothing was rewritten)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
