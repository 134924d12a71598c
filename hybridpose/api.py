"""High-level jobs that the CLI wraps, one function per command."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import atomic
from .pose import extract, summarize
from .sources import open_inputs


def extract_folder(data: str | Path, out: str | Path, *, workers: int = 1, cache_dir: str | Path | None = None,
                   show_progress: bool = True, skeleton: str = "body") -> tuple[pd.DataFrame, dict]:
    """Run the keypoint front end on every file under ``data``; writes OUT/poses.csv and OUT/summary.json."""
    data, out = Path(data), Path(out)
    paths = [e.path for e in open_inputs(data)]
    start = time.perf_counter()
    table = extract(paths, cache_dir=cache_dir, workers=workers, show_progress=show_progress, skeleton=skeleton)
    summary = {"images": len(table), "skeleton": skeleton, "status": summarize(table),
               "seconds": round(time.perf_counter() - start, 3)}
    atomic.write_csv(out / "poses.csv", table)
    atomic.write_json(out / "summary.json", summary)
    return table, summary
