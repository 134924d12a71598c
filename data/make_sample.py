"""Build the small embedded sample from a full class-per-folder yoga data set.

Usage: python data/make_sample.py /path/to/yoga8 data/sample [--per-class 10] [--max-side 256]

For every class folder, takes PER_CLASS photos spread evenly over the sorted file
names, applies the EXIF orientation, flattens transparency onto white, downscales
so the longest side is at most MAX_SIDE px and saves a JPEG (quality 90) under the
same class folder and base name. Copies hierarchy.csv when present.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageOps

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
JPEG_QUALITY = 90


def spread(items: list[Path], count: int) -> list[Path]:
    """`count` items spread over the whole list, then the rest in order as spares."""
    n = len(items)
    picks = [items[i * n // count] for i in range(min(count, n))]
    return picks + [p for p in items if p not in picks]


def to_small_rgb(path: Path, max_side: int) -> Image.Image:
    """Open, orient, flatten on white and downscale one photo."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
    if img.mode in ("P", "PA", "LA", "RGBA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    img = img.convert("RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def sample_class(src: Path, dst: Path, per_class: int, max_side: int) -> int:
    """Write up to `per_class` photos of one class; returns how many were written."""
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in EXTENSIONS)
    dst.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for path in spread(files, per_class):
        if len(written) == per_class:
            break
        name = path.stem + ".jpg"
        if name in written:  # a.png and a.jpg would collide
            continue
        try:
            small = to_small_rgb(path, max_side)
        except (OSError, SyntaxError, ValueError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        small.save(dst / name, "JPEG", quality=JPEG_QUALITY, optimize=True)
        written.add(name)
    return len(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="class-per-folder data set")
    parser.add_argument("dest", type=Path, help="output folder, e.g. data/sample")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--max-side", type=int, default=256)
    args = parser.parse_args(argv)

    classes = sorted(p for p in args.source.iterdir() if p.is_dir())
    if not classes:
        parser.error(f"{args.source} has no class folders")
    total = 0
    for cls in classes:
        total += sample_class(cls, args.dest / cls.name, args.per_class, args.max_side)
    hierarchy = args.source / "hierarchy.csv"
    if hierarchy.is_file():
        shutil.copyfile(hierarchy, args.dest / "hierarchy.csv")
    print(f"wrote {total} photos of {len(classes)} classes to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
