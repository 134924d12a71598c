"""Shared helpers of the benchmark scripts: photo selection, temp caches, tables, JSON, machine info.

Nothing here times anything; each script measures its own loops.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "yoga8"
SAMPLE_DATA = REPO / "data" / "sample"


def setup_env() -> tempfile.TemporaryDirectory:
    """Quiet progress bars and a throwaway pose cache, so a benchmark never touches the user's cache.

    Returns the TemporaryDirectory (keep a reference; it is removed at exit). Every measurement
    also passes its own explicit fresh cache directory; this only guards code paths that fall back
    to HYBRIDPOSE_CACHE.
    """
    os.environ.setdefault("HYBRIDPOSE_NO_PROGRESS", "1")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tmp = tempfile.TemporaryDirectory(prefix="hybridpose-bench-")
    if "HYBRIDPOSE_CACHE" not in os.environ:
        os.environ["HYBRIDPOSE_CACHE"] = str(Path(tmp.name) / "default-cache")
    return tmp


SMOKE_NOTE = ("SMOKE MODE (--smoke): a handful of photos, tiny settings, one OpenMP thread. It only checks that "
              "this benchmark\nstill runs end to end; every number below is meaningless.")


def add_smoke_arg(ap, what: str) -> None:
    ap.add_argument("--smoke", action="store_true",
                    help=f"seconds-long check that the benchmark runs ({what}); numbers are meaningless. "
                         f"--data defaults to {SAMPLE_DATA.relative_to(REPO)}")


def apply_smoke(args, **settings: object) -> None:
    """With --smoke: print the banner, override the options named in ``settings`` and go single-threaded.

    One OpenMP thread (PyTorch, XGBoost), unless OMP_NUM_THREADS is set: with another job on a 2-core
    machine, two threads that wait on each other made the smoke runs 8-10 times slower (4 minutes
    instead of 30 s); one thread keeps them at seconds whatever else runs. Call before importing torch.
    """
    if not args.smoke:
        return
    print(f"{'=' * 100}\n{SMOKE_NOTE}\n{'=' * 100}\n")
    for name, value in settings.items():
        setattr(args, name, value)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def smoke_footer() -> None:
    print("smoke run finished: every step ran and passed its sanity checks; the numbers above are meaningless.")


def smoke_check(ok: bool, what: str) -> None:
    """A sanity check of the smoke run (never a timing): exit non-zero when it fails."""
    if not ok:
        sys.exit(f"smoke check failed: {what}")


def resolve_data(data: str | None, smoke: bool = False) -> Path:
    if smoke and data is None:
        data = str(SAMPLE_DATA)
    path = Path(data) if data else DEFAULT_DATA
    if not path.exists() and data is None and SAMPLE_DATA.exists():
        print(f"note: {path} not found; using {SAMPLE_DATA}", file=sys.stderr)
        path = SAMPLE_DATA
    if not path.exists():
        sys.exit(f"{path}: no such folder (give --data DIR)")
    return path


def smoke_clips(tmp: Path) -> Path:
    """The tests' tiny clips (tests/clipdata.py), cut from ../shared/data/exercise_clips into ``tmp``; the
    repository holds no clip of that unlicensed set, so a smoke run without it stops with a line saying so."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from clipdata import SHARED, make_clips

    folder = make_clips(tmp / "clips")
    if folder is None:
        sys.exit(f"--smoke needs {SHARED} (clips are not kept in the repository)")
    return folder


def spread(items: Sequence, n: int | None) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when n is None or too big).

    The photo lists are sorted by class folder, so taking the first n would test one class only.
    """
    items = list(items)
    if n is None or n >= len(items):
        return items
    if n <= 0:
        return []
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def photo_list(data: Path, limit: int | None, repeat: int, tmp: Path) -> tuple[list[str], Path, float | None]:
    """(photos, a file listing them for child processes, the CPU busy share at start) for ``limit`` photos
    spread over ``data``; prints what is measured and warns if the machine is busy. Exits on no photos."""
    from hybridpose.data.datasets import list_images

    paths = [str(p) for p in spread(list_images(data), limit)]
    if not paths:
        sys.exit(f"{data}: no images")
    print(f"{len(paths)} photos from {data}; {os.cpu_count()} CPUs; repeat {repeat} (fastest kept)\n")
    busy = cpu_busy_share()
    print(busy_warning("at start", busy) + "\n")
    paths_file = tmp / "paths.txt"
    paths_file.write_text("\n".join(paths), encoding="utf-8")
    return paths, paths_file, busy


def in_child(script: str, mode: str, paths_file: Path, cache: Path | None = None, *extra: str) -> dict:
    """Run one measurement (``script --child MODE``) in a fresh interpreter and return the JSON it prints
    (with ``stderr_alerts``: malloc or traceback lines it printed on stderr, if any).

    Each measurement gets a clean process: MediaPipe graphs created earlier in a process corrupt the heap
    of fork()ed pool workers (they abort with "malloc(): unaligned tcache chunk detected"), and a clean
    process also keeps one run's warm state out of the next one's time."""
    import subprocess

    cmd = [sys.executable, script, "--child", mode, "--paths-file", str(paths_file), *extra]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        sys.exit(f"measurement {mode} {' '.join(extra)} failed with exit code {proc.returncode}")
    result = json.loads(lines[-1])
    noise = [ln for ln in proc.stderr.splitlines() if "malloc()" in ln or "Traceback" in ln]
    if noise:  # a run that succeeded but whose workers crashed or retried says so
        result["stderr_alerts"] = noise
    return result


def subset_folder(data: Path, per_class: int, dest: Path) -> Path:
    """A smaller copy of the image folder ``data`` made of links: ``per_class`` photos of every class
    (spread over each class folder), with its ``hierarchy.csv`` and ``flip_pairs.csv``."""
    import shutil

    from hybridpose.data.datasets import list_images

    dest.mkdir(parents=True)
    for folder in sorted(d for d in data.iterdir() if d.is_dir() and not d.name.startswith(".")):
        (dest / folder.name).mkdir()
        for photo in spread(list_images(folder), per_class):
            (dest / folder.name / photo.name).symlink_to(photo.resolve())
    for name in ("hierarchy.csv", "flip_pairs.csv"):
        if (data / name).is_file():
            shutil.copyfile(data / name, dest / name)
    return dest


def machine_info() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min_at_end": load_average(),
    }
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_busy_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over the next ``seconds`` (Linux /proc/stat), while this process sleeps."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values[:8]), values[3] + values[4]  # total, idle + iowait

    try:
        t1, i1 = sample()
        time.sleep(seconds)
        t2, i2 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (i2 - i1) / max(1, t2 - t1), 3)


def busy_warning(label: str, busy: float | None = None) -> str:
    """A line to print at the start and end of a run: other jobs on the CPU skew every ratio."""
    busy, cpus = busy if busy is not None else cpu_busy_share(), os.cpu_count() or 1
    line = f"CPU busy {label} (1 s sample, before/after this run's work): "
    line += "unknown" if busy is None else f"{100 * busy:.0f}% of {cpus} CPUs"
    if busy is not None and busy > 0.15:
        line += "  <- other work on this machine: ratios may be skewed"
    return line


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its reaped children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(header)]
    print(title)
    print("  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    print()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return "" if v is None else str(v)


def goal_line(name: str, value: float, goal: float) -> list[object]:
    return [name, round(value, 3), f">= {goal}", "met" if value >= goal else "NOT met"]


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def _json_default(o: object):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


def finish(args, payload: dict) -> dict:
    """Write the JSON (if asked) and, in smoke mode, say the numbers mean nothing."""
    write_json(args.json, payload)
    if args.smoke:
        smoke_footer()
    return payload
