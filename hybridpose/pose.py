"""Pose front end: MediaPipe's 33 keypoints per photo, cached by the photo's content hash.

`extract` turns a list of image paths into the poses table (docs/FORMATS.md), one row per
image whatever happens to it: bad files get a status and a reason, never an exception.
"""
from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import sqlite3
import stat
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .images import ImageLoadError, load_image, pose_view
from .progress import progress_bar
from .skeletons import Skeleton, get_skeleton

if TYPE_CHECKING:
    from PIL import Image

BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
HEAD_COLUMNS = ["path", "sha256", "status", "reason", "width", "height"]

# Bump when anything that changes the stored result changes (model, resizing, box rule).
POSE_VERSION = "mediapipe-0.10.21-c1-v2"  # the body estimator's; each estimator names its own
POSE_MAX_SIDE = 1024  # the pose model works at 256 px; larger input only costs decode time


@dataclass
class PoseResult:
    status: str
    reason: str = ""
    width: int = 0
    height: int = 0
    box: tuple[float, float, float, float] | None = None
    keypoints: list[list[float]] | None = None  # one [x, y, z, visibility] per keypoint, pixels of the original

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PoseResult":
        """Parse a stored result; ValueError unless ``text`` is a complete, well-formed one."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(d, dict) or set(d) != _RESULT_FIELDS:
            raise ValueError("missing or unknown fields")
        box, kp = d["box"], d["keypoints"]
        if not (isinstance(d["status"], str) and d["status"] and isinstance(d["reason"], str)
                and type(d["width"]) is int and type(d["height"]) is int):
            raise ValueError("bad status, reason or size")
        if box is not None and not _numbers(box, 4):
            raise ValueError("bad box")
        if kp is not None and not (isinstance(kp, list) and kp and all(_numbers(row, 4) for row in kp)):
            raise ValueError("bad keypoints")
        if d["status"] == "ok" and (box is None or kp is None):
            raise ValueError("a person without box or keypoints")
        d["box"] = tuple(box) if box is not None else None
        return cls(**d)


_RESULT_FIELDS = frozenset({"status", "reason", "width", "height", "box", "keypoints"})


def _numbers(values: object, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(type(v) in (int, float) for v in values)


class PoseEstimator:
    """MediaPipe Pose in static-image mode. Complexity 1 is the model the wheel bundles."""

    name = "mediapipe_pose"
    version = POSE_VERSION
    skeleton_name = "body"

    @property
    def skeleton(self) -> Skeleton:
        return get_skeleton(self.skeleton_name)

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mediapipe

        global _MEDIAPIPE_STARTED
        _MEDIAPIPE_STARTED = True
        with quiet_stderr():  # MediaPipe's C++ start-up chatter would cut through the progress bar
            self._pose = mediapipe.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, enable_segmentation=False
            )
        self._warm = False

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """n x 4 array (x, y normalised to [0, 1], z, visibility), or None if no person."""
        if not self._warm:
            self._warm = True
            with quiet_stderr():
                result = self._pose.process(np.ascontiguousarray(rgb))
        else:
            result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_landmarks is None:
            return None
        return np.array([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark], dtype=np.float64)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ libraries write there directly), restoring it after."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def analyse(path: str | Path, estimator: PoseEstimator) -> PoseResult:
    """Load one image and find its person; bad input becomes a status, never an exception."""
    try:
        image = load_image(path, max_side=POSE_MAX_SIDE)
    except ImageLoadError as e:
        return PoseResult(status=e.status, reason=e.reason)
    return analyse_array(image.rgb, image.width, image.height, estimator)


def analyse_loaded(image: "Image.Image", path: str | Path, estimator: PoseEstimator) -> PoseResult:
    """Same as ``analyse(path)`` for its full-size RGB PIL image already in memory: the same pose input,
    so the same keypoints."""
    return analyse_array(pose_view(image, path, POSE_MAX_SIDE), image.width, image.height, estimator)


def analyse_array(rgb: np.ndarray, width: int, height: int, estimator: PoseEstimator) -> PoseResult:
    """Keypoints in pixels of the original ``width`` x ``height`` photo, from a (maybe smaller) ``rgb``."""
    try:
        norm = estimator.landmarks(rgb)
    except Exception as e:  # the pose graph rejecting an odd frame must not end the run
        return PoseResult("unreadable", f"pose model failed: {e}", width, height)
    if norm is None:
        return PoseResult(*getattr(estimator, "missing", ("no_person", "MediaPipe found no person")), width, height)
    kp = norm.copy()
    kp[:, 0] *= width
    kp[:, 1] *= height
    kp[:, 2] *= width  # MediaPipe's z uses roughly the scale of x
    kp = kp.round(3)  # the box from the stored values: keypoints read back from poses.csv give the same crop
    return PoseResult("ok", "", width, height, estimator.skeleton.keypoint_box(kp, width, height), kp.tolist())


def first_look(paths: Sequence[str]) -> tuple[list[PoseResult | None], list[str | None]]:
    """Per path: a final result where the file cannot be read (decided without opening anything that is
    not a regular file), else None; and the content hash of each readable file."""
    from .sources import classify

    results: list[PoseResult | None] = []
    shas: list[str | None] = []
    for p in paths:
        entry = classify(Path(p))
        sha = None
        if not entry.readable:
            results.append(PoseResult(entry.status, entry.reason))
        else:
            try:
                sha = _sha256_of_regular_file(p)
                results.append(None)
            except OSError as e:
                results.append(PoseResult("unreadable", f"cannot read file ({e.strerror or e})"))
        shas.append(sha)
    return results, shas


def file_sha256(path: str | Path) -> str | None:
    """Content hash of a regular file; None when it cannot be read or is not a regular file."""
    try:
        return _sha256_of_regular_file(path)
    except OSError:
        return None


def _sha256_of_regular_file(path: str | Path) -> str:
    # O_NONBLOCK: opening a FIFO (swapped in after it was classified) returns at once instead of waiting for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        h = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYBRIDPOSE_CACHE") or Path.home() / ".cache" / "hybridpose")


class PoseCache:
    """Results keyed by (content hash, estimator version) in one SQLite file: each commit is atomic.

    A cache problem never stops a run. An entry that does not parse is a miss (recomputed, then replaced by
    ``put_many``); a damaged database file is moved aside to ``poses.sqlite.corrupt-<time>`` in the same folder
    and a fresh one started; a cache that cannot be opened or written (read-only folder, locked, disk full)
    is switched off for the run. Each is said in one yellow line naming the cache file.
    """

    def __init__(self, directory: str | Path | None = None, version: str = POSE_VERSION) -> None:
        self.version = version
        self.directory = Path(directory) if directory else default_cache_dir()
        self.path = self.directory / "poses.sqlite"
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._guarded(self._open, None)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(self.path) and not self.path.is_file():  # never open a FIFO or a folder
            raise OSError(errno.EINVAL, f"{self.path.name} is not a regular file")
        try:  # which file this run saw: a damaged one is moved aside only if no other run replaced it since
            self._inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            self._inode = None
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS pose (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
            db.commit()
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            db.close()
            raise
        self._db = db

    def key(self, sha: str) -> str:
        return f"{self.version}:{sha}"

    def get_many(self, shas: Sequence[str]) -> dict[str, PoseResult]:
        return self._guarded(lambda: self._get_many(shas), {})

    def _get_many(self, shas: Sequence[str]) -> dict[str, PoseResult]:
        assert self._db is not None
        out: dict[str, PoseResult] = {}
        bad = 0
        keys = [self.key(s) for s in shas]
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, result FROM pose WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for key, text in rows:
                try:
                    out[key[len(self.version) + 1:]] = PoseResult.from_json(text)
                except ValueError:
                    bad += 1  # a miss: recomputed, then replaced by put_many
        if bad:
            _note(f"pose cache {self.path}: {bad} damaged entr{'y' if bad == 1 else 'ies'}; recomputing "
                  f"{'it' if bad == 1 else 'them'}.")
        return out

    def put_many(self, items: Iterable[tuple[str, PoseResult]]) -> None:
        rows = [(self.key(sha), r.to_json()) for sha, r in items]

        def put() -> None:
            assert self._db is not None
            self._db.executemany("INSERT OR REPLACE INTO pose (key, result) VALUES (?, ?)", rows)
            self._db.commit()

        if rows:
            self._guarded(put, None)

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _guarded(self, action, default):
        """``action()``; a damaged file is moved aside and ``action`` tried once more on a fresh cache;
        anything else that goes wrong turns the cache off. Never raises for cache trouble."""
        if self._db is None and action != self._open:
            return default  # switched off
        try:
            return action()
        except sqlite3.DatabaseError as e:
            if not _damaged(e):
                return self._switch_off(e, default)
            error: BaseException = e
        except OSError as e:
            return self._switch_off(e, default)
        try:
            self._move_aside(error)
            self._open()
            return default if action == self._open else action()
        except (sqlite3.Error, OSError) as e:
            return self._switch_off(e, default)

    def _move_aside(self, error: BaseException) -> None:
        seen = self._inode
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            if seen is not None and os.stat(self.path).st_ino != seen:
                return  # another run already replaced the damaged file
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        for part in ("-wal", "-shm"):  # SQLite's side files belong to the damaged file
            try:
                os.replace(f"{self.path}{part}", f"{aside}{part}")
            except FileNotFoundError:
                pass
        _note(f"pose cache {self.path} was damaged ({error}); moved it to {aside} and started a new one.")

    def _switch_off(self, error: BaseException, default):
        self.close()
        reason = getattr(error, "strerror", None) or str(error)
        if self.directory not in _SWITCHED_OFF:
            _SWITCHED_OFF.add(self.directory)
            _note(f"pose cache {self.path} cannot be used ({reason}); running without it, "
                  "poses are not saved for the next run (--cache DIR or $HYBRIDPOSE_CACHE picks another folder).")
        return default


_SWITCHED_OFF: set[Path] = set()  # caches this process already said it runs without


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign database file (rather than a locked, read-only or full one)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None and (code & 0xFF) in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    text = str(error)
    return any(s in text for s in ("malformed", "not a database", "no such column", "no such table"))


def _note(message: str) -> None:
    """One yellow line, not wrapped, paths not taken for markup."""
    from rich.markup import escape

    from .progress import console

    console.print(f"[yellow]{escape(message)}[/]", soft_wrap=True, highlight=False)


ESTIMATORS: dict[str, type] = {PoseEstimator.name: PoseEstimator}


def estimator_class(skeleton: Skeleton | str | None = None) -> type:
    """The pose front end class that finds ``skeleton``'s keypoints."""
    sk = get_skeleton(skeleton)
    from . import hand_pose  # noqa: F401  (registers the MediaPipe Hands estimators)

    if sk.estimator not in ESTIMATORS:
        from .errors import HybridPoseError

        raise HybridPoseError(f"skeleton {sk.name!r} has no pose model here; give its keypoints with --keypoints FILE.")
    return ESTIMATORS[sk.estimator]


# Worker processes each hold their own estimator (MediaPipe graphs are not shareable).
_MEDIAPIPE_STARTED = False  # a forked child of a process that ran MediaPipe crashes in its own graph
_WORKER_ESTIMATOR: PoseEstimator | None = None


def _worker_init(estimator: type) -> None:
    global _WORKER_ESTIMATOR
    # Workers report problems as statuses; their C++ log lines would only break the progress bar.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _WORKER_ESTIMATOR = estimator()


def _worker_analyse(item: tuple[int, str]) -> tuple[int, PoseResult]:
    i, path = item
    assert _WORKER_ESTIMATOR is not None
    return i, analyse(path, _WORKER_ESTIMATOR)


def _run_pose(paths: list[str], workers: int, estimator: type) -> Iterator[tuple[int, PoseResult]]:
    items = list(enumerate(paths))
    if workers > 1 and (_MEDIAPIPE_STARTED or os.name != "posix"):
        # A forked child of a process that ran MediaPipe crashes in its own graph, and "spawn"
        # re-imports the caller's main module (a script without a __main__ guard would run again).
        from .progress import log

        log("[yellow]pose: this process already ran MediaPipe; running one worker instead of "
            f"{workers} (start a fresh process to use several).")
        workers = 1
    if workers <= 1:
        with estimator() as est:
            for i, p in items:
                yield i, analyse(p, est)
        return
    # fork: workers start in milliseconds and inherit the imported modules
    with mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=(estimator,)) as pool:
        yield from pool.imap_unordered(_worker_analyse, items, chunksize=4)


def extract(
    paths: Sequence[str | Path],
    *,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    show_progress: bool = True,
    use_cache: bool = True,
    skeleton: Skeleton | str | None = None,
) -> pd.DataFrame:
    """Poses table for ``paths`` (one row each, in order). Cached results cost no pose model run."""
    estimator = estimator_class(skeleton)
    paths = [str(p) for p in paths]
    results, shas = first_look(paths)
    cache = PoseCache(cache_dir, estimator.version) if use_cache else None
    try:
        if cache is not None:
            hits = cache.get_many(sorted({s for s in shas if s}))
            for i, sha in enumerate(shas):
                if sha in hits:
                    results[i] = hits[sha]
        todo = _first_of_each_hash([i for i, r in enumerate(results) if r is None], shas)
        _compute(paths, shas, todo, results, cache, workers, show_progress, estimator)
    finally:
        if cache is not None:
            cache.close()
    return make_table(paths, shas, results, estimator.skeleton_name)


def _first_of_each_hash(indices: list[int], shas: list[str | None]) -> list[int]:
    seen: set[str] = set()
    out = []
    for i in indices:
        if shas[i] not in seen:
            seen.add(shas[i])  # type: ignore[arg-type]
            out.append(i)
    return out


def _compute(paths, shas, todo, results, cache, workers, show_progress, estimator) -> None:
    if not todo:
        _fill_duplicates(shas, results)
        return
    pending: list[tuple[str, PoseResult]] = []
    with progress_bar("pose", total=len(todo), enabled=show_progress) as advance:
        for j, result in _run_pose([paths[i] for i in todo], workers, estimator):
            i = todo[j]
            results[i] = result
            pending.append((shas[i], result))
            if cache is not None and len(pending) >= 32:
                cache.put_many(pending)
                pending.clear()
            advance()
    if cache is not None and pending:
        cache.put_many(pending)
    _fill_duplicates(shas, results)


def _fill_duplicates(shas, results) -> None:
    by_sha = {s: r for s, r in zip(shas, results) if r is not None and s}
    for i, r in enumerate(results):
        if r is None:
            results[i] = by_sha[shas[i]]


def make_table(paths: list[str], shas: list[str | None], results: list[PoseResult | None],
               skeleton: Skeleton | str | None = None) -> pd.DataFrame:
    """The poses table (docs/FORMATS.md): one row per path, keypoint columns named by the skeleton."""
    skeleton = get_skeleton(skeleton)
    rows = np.full((len(paths), 4 + len(skeleton.columns)), np.nan)
    for i, r in enumerate(results):
        assert r is not None
        if r.box is not None:
            rows[i, :4] = r.box
        if r.keypoints is not None:
            rows[i, 4:] = np.asarray(r.keypoints).reshape(-1)
    head = pd.DataFrame({
        "path": paths, "sha256": [s or "" for s in shas],
        "status": [r.status for r in results], "reason": [r.reason for r in results],  # type: ignore[union-attr]
        "width": [r.width for r in results], "height": [r.height for r in results],  # type: ignore[union-attr]
    })
    return pd.concat([head, pd.DataFrame(rows, columns=[*BOX_COLUMNS, *skeleton.columns])], axis=1)


def table_skeleton(table: pd.DataFrame) -> Skeleton:
    """The skeleton whose keypoint columns the poses table holds."""
    from .skeletons import SKELETONS, available

    for name in available():
        if set(SKELETONS[name].columns) <= set(table.columns):
            return SKELETONS[name]
    raise ValueError("the poses table has no complete set of keypoint columns of a known skeleton")


def keypoints_array(table: pd.DataFrame, skeleton: Skeleton | str | None = None) -> np.ndarray:
    """(N, n, 4) keypoints from a poses table; NaN where none were found."""
    sk = get_skeleton(skeleton) if skeleton is not None else table_skeleton(table)
    return table[sk.columns].to_numpy(dtype=np.float64).reshape(len(table), sk.n, 4)


def boxes_array(table: pd.DataFrame) -> np.ndarray:
    return table[BOX_COLUMNS].to_numpy(dtype=np.float64)


def summarize(table: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in table["status"].value_counts().items()}
