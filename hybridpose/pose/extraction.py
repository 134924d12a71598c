"""`extract`: the poses table (and a summary) of every file under a folder, from the pose model or a keypoint file."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .. import atomic
from ..data.sources import open_inputs
from ..defaults import DEFAULTS
from ..skeletons import get_skeleton
from .frontend import extract, summarize
from .keypoint_file import keypoint_source


def extract_folder(data: str | Path, out: str | Path, *, workers: int = DEFAULTS.pose_workers, cache_dir: str | Path | None = None,
                   show_progress: bool = True, skeleton: str = DEFAULTS.skeleton, keypoints: str | Path | None = None,
                   keypoint_units: str = "pixels", max_people: int = DEFAULTS.max_people,
                   second_look: bool = False) -> tuple[pd.DataFrame, dict]:
    """Run the keypoint front end on every file under ``data`` (or read ``keypoints`` from a file);
    writes OUT/poses.csv and OUT/summary.json. ``max_people`` > 1: a row per person found (the skeleton's
    multi-person model where it has one; a keypoint file gives one row per file). ``second_look``: a photo
    with nobody found gets the pose model's stricter second look (docs/FORMATS.md)."""
    data, out = Path(data), Path(out)
    paths = [e.path for e in open_inputs(data)]
    sk = get_skeleton(skeleton)
    source = keypoint_source(keypoints, sk, keypoint_units, paths, data)
    start = time.perf_counter()
    if source is not None:
        table = source.extract(paths, show_progress=show_progress)
    else:
        table = extract(paths, cache_dir=cache_dir, workers=workers, show_progress=show_progress, skeleton=sk,
                        max_people=max_people, second_look=second_look)
    summary = {"images": len(paths), "rows": len(table), "skeleton": sk.name, "status": summarize(table),
               "seconds": round(time.perf_counter() - start, 3)}
    if source is not None:
        summary["keypoints"] = source.describe()
    atomic.write_csv(out / "poses.csv", table)
    atomic.write_json(out / "summary.json", summary)
    return table, summary
