"""Robust image loading: every failure becomes an ImageLoadError with a status and a reason.

Statuses (the `status` column of poses.csv): 'unreadable', 'too_small', 'too_large'.
HEIC/HEIF photos are read when pillow-heif is installed (its opener is registered on import).
Loaded images are RGB uint8 with the EXIF orientation applied and transparency
flattened onto white.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})  # iPhone photos


def _register_heif() -> bool:
    """Teach Pillow HEIC/HEIF through pillow-heif when it is installed; False when it is not."""
    try:
        import pillow_heif
    except ImportError:
        return False
    try:
        pillow_heif.register_heif_opener()
    except Exception:  # a broken install (e.g. a missing libheif) must not stop the other formats
        return False
    return True


HEIF_SUPPORTED: bool = _register_heif()
HEIF_MISSING_REASON = "HEIC/HEIF photo, but its decoder is not installed; run `pip install pillow-heif` to read it"
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
) | (HEIF_EXTENSIONS if HEIF_SUPPORTED else frozenset())
MIN_SIDE = 32
MAX_PIXELS = 400_000_000

# Our own MAX_PIXELS check replaces Pillow's bomb guard (default ~89 MP, which would
# refuse an ordinary 12000x9000 photo). Pillow still raises DecompressionBombError
# above twice this value, which we report as 'too_large'; its warning between 1x and
# 2x only concerns images that _check_size refuses anyway, so it is silenced.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# What Pillow raises on corrupt or truncated data while decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                  struct.error, zlib.error)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_WHITE = (255, 255, 255)


class ImageLoadError(Exception):
    """An image that cannot be used; `status` is machine-readable, `reason` is for people."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class LoadedImage:
    rgb: np.ndarray  # HxWx3 uint8, possibly downscaled
    width: int  # of the full-size, EXIF-oriented image
    height: int


def load_image(path: str | Path, max_side: int | None = None) -> LoadedImage:
    """Load an image as RGB uint8; downscale so the longest side is <= max_side when given."""
    img, width, height = _read(Path(path), max_side)
    if max_side is not None and max(img.size) > max_side:
        img = _downscale(img, max_side)
    return LoadedImage(rgb=np.asarray(img, dtype=np.uint8), width=width, height=height)


def pose_view(image: Image.Image, path: str | Path, max_side: int) -> np.ndarray:
    """The pixels ``load_image(path, max_side)`` gives, reusing ``image`` (``open_rgb(path)``) where it can:
    the pose model sees a photo the same way in ``predict`` (one full decode, for the crop too) as in
    ``extract``. Only a big JPEG that libjpeg decodes at a reduced scale is decoded again, small."""
    if max(image.size) <= max_side:
        return np.asarray(image, dtype=np.uint8)
    if _draft_reduces(Path(path), max_side):
        return load_image(path, max_side=max_side).rgb
    return np.asarray(_downscale(image, max_side), dtype=np.uint8)


def _draft_reduces(path: Path, max_side: int) -> bool:
    try:
        with Image.open(path) as img:
            raw = img.size
            img.draft("RGB", (max_side, max_side))
            return img.size != raw
    except (OSError, ValueError):
        return False


def open_rgb(path: str | Path) -> Image.Image:
    """Full-resolution RGB image with EXIF orientation applied; raises ImageLoadError."""
    return _read(Path(path), None)[0]


def _read(path: Path, max_side: int | None) -> tuple[Image.Image, int, int]:
    """Open, check, decode, orient and convert; returns (rgb, full width, full height)."""
    with _open_checked(path) as img:
        raw_size = img.size
        if max_side is not None and max(raw_size) > max_side:
            # JPEG only (a no-op elsewhere): libjpeg decodes at 1/2, 1/4 or 1/8 scale,
            # never below the requested size, which is much faster for big photos.
            img.draft("RGB", (max_side, max_side))
        _decode(img)
        loaded_size = img.size
        img = _orient(img)
    width, height = raw_size
    if img.size != loaded_size:  # EXIF orientation 5-8 swaps width and height
        width, height = height, width
    return _to_rgb(img), width, height


def check_usable(path: str | Path) -> None:
    """Raise the ImageLoadError ``load_image`` would raise, cheaply: the file, the header and the size are
    checked, and the pixels decoded small (a JPEG at 1/8 scale; other formats in full), so a truncated or
    corrupt file is caught too. No orientation or colour conversion."""
    with _open_checked(Path(path)) as img:
        img.draft("RGB", (MIN_SIDE, MIN_SIDE))
        _decode(img)


def _open_checked(path: Path) -> Image.Image:
    """The opened (not decoded) image of a regular, non-empty file of an allowed size; raises ImageLoadError."""
    _check_file(path)
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:
        limit = MAX_PIXELS // 1_000_000
        raise ImageLoadError("too_large", f"more than {2 * limit} MP (limit {limit} MP)") from None
    except UnidentifiedImageError:
        raise ImageLoadError("unreadable", "not an image (cannot identify format)") from None
    except PermissionError:
        raise ImageLoadError("unreadable", "cannot read file (permission denied)") from None
    except _DECODE_ERRORS:
        raise ImageLoadError("unreadable", "corrupt image header") from None
    try:
        _check_size(*img.size)
    except ImageLoadError:
        img.close()
        raise
    return img


def _decode(img: Image.Image) -> None:
    try:
        img.load()
    except _DECODE_ERRORS:
        fmt = img.format or "image"
        raise ImageLoadError("unreadable", f"truncated or corrupt {fmt} data") from None


def _check_file(path: Path) -> None:
    """Reject missing, non-regular and zero-byte files with a clear reason."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageLoadError("unreadable", "file not found") from None
    except OSError as exc:
        raise ImageLoadError("unreadable", f"cannot access file ({exc.strerror})") from None
    if not path.is_file():
        raise ImageLoadError("unreadable", "not a regular file")
    if stat.st_size == 0:
        raise ImageLoadError("unreadable", "zero-byte file")


def _check_size(width: int, height: int) -> None:
    """Refuse images too large to decode safely or too small to hold a pose."""
    if width * height > MAX_PIXELS:
        megapixels = width * height / 1e6
        raise ImageLoadError(
            "too_large",
            f"{width}x{height} px ({megapixels:.0f} MP) is more than {MAX_PIXELS // 1_000_000} MP",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageLoadError("too_small", f"{width}x{height} px is smaller than {MIN_SIDE} px")


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(img)
    except _DECODE_ERRORS:
        return img.copy()


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    if img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _flatten_on_white(img.convert("RGBA"))
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # P, L, 1, CMYK, YCbCr, LAB, HSV


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    """Composite an RGBA image onto a white background."""
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float grayscale image to 8-bit 'L'."""
    values = np.asarray(img).astype(np.float64)
    if values.size == 0:
        return Image.new("L", img.size)
    low, high = float(values.min()), float(values.max())
    if img.mode == "F":
        if low < 0.0 or high > 1.0:  # not a 0..1 image: stretch its own range
            values = (values - low) / (high - low or 1.0)
        values *= 255.0
    elif high > 65535:
        values = values * (255.0 / high)
    elif high > 255:  # true 16-bit data; 8-bit data stored in 16 bits is kept as is
        values /= 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Resize keeping the aspect ratio so the longest side is max_side.

    Bilinear with a reducing gap: the pose model sees 256 px anyway, and LANCZOS here cost more
    than the pose model itself on 1.5k px photos."""
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
