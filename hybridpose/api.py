"""High-level jobs that the CLI wraps, one function per command."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import atomic
from .datasets import list_images
from .errors import DatasetError
from .pose import extract, summarize


def extract_folder(data: str | Path, out: str | Path, *, workers: int = 1, cache_dir: str | Path | None = None,
                   show_progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Run the pose front end on every image under ``data``; writes OUT/poses.csv and OUT/summary.json."""
    data, out = Path(data), Path(out)
    if not data.exists():
        raise DatasetError(f"{data}: no such file or folder.")
    paths = list_images(data)
    if not paths:
        raise DatasetError(f"{data}: no images found (looked for .jpg, .jpeg, .png, .bmp, .webp, .tif, .gif).")
    start = time.perf_counter()
    table = extract(paths, cache_dir=cache_dir, workers=workers, show_progress=show_progress)
    summary = {"images": len(table), "status": summarize(table), "seconds": round(time.perf_counter() - start, 3)}
    atomic.write_csv(out / "poses.csv", table)
    atomic.write_json(out / "summary.json", summary)
    return table, summary
