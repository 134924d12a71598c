"""Prediction's producer side: photos decoded, posed and cropped in worker processes, delivered in order,
batch by batch, to the process that runs the networks (``HybridPoseClassifier.iter_predict(workers=N)``).

At most ``2 x batch_size`` photos are in flight (submitted, not yet consumed), so memory stays flat
however many photos there are, and the networks of one batch run while the workers pose the next.
Workers are forked before this process runs MediaPipe (a forked child of a process that did crashes in
its graph); the pose cache (SQLite) is read and written here, never in a worker.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from ..data.crops import crop_photo
from ..data.images import ImageLoadError, open_rgb
from ..pose.cache import PoseCache, look_up
from ..pose.frontend import person_rows
from ..pose.result import PoseResult, analyse_loaded
from ..pose.workers import forkable, start_pool, worker_estimator

if TYPE_CHECKING:
    from PIL import Image

# index, path, cached result, crop size, margin, keypoints, people (None: the single-person table)
Item = tuple[int, str, "PoseResult | None", int, float, int, "int | None"]
Done = tuple[int, PoseResult, "list[np.ndarray] | None"]


def pose_and_crop(path: str, cached: PoseResult | None, find: Callable[["Image.Image", str], PoseResult], size: int,
                  margin: float, n_keypoints: int, max_people: int | None = None) -> tuple[PoseResult, list[np.ndarray] | None]:
    """One photo decoded once: its pose result (``cached`` when known, else ``find(image, path)``: the pose
    model, or a keypoint file) and one crop per row of the poses table (``person_rows``: one, or one per
    person up to ``max_people``); None, left grey by the caller, when the photo cannot be decoded."""
    try:
        image = open_rgb(path)
    except ImageLoadError as e:
        return cached or PoseResult(e.status, e.reason), None
    result = cached or find(image, path)
    return result, [crop_photo(image, p.box, None, margin, size, n_keypoints)[0] for p in person_rows(result, max_people)]


def posed_by(estimator: Callable[[], object]) -> Callable[["Image.Image", str], PoseResult]:
    """``find`` for ``pose_and_crop``: the pose model ``estimator()`` (made on first use) on the photo."""
    return lambda image, path: analyse_loaded(image, path, estimator())


# ---------------------------------------------------------------------------------------- worker side
# The networks' process is the one that must never wait: the workers yield a core to it and fill what it
# leaves (with equal shares, three busy processes on two cores left the networks 2/3 of a core).
WORKER_NICENESS = int(os.environ.get("HYBRIDPOSE_WORKER_NICENESS", "5"))


def _work(item: Item) -> Done:
    i, path, cached, size, margin, n, people = item
    result, crops = pose_and_crop(path, cached, posed_by(worker_estimator), size, margin, n, people)
    return i, result, crops


_PRESTARTED: dict[tuple[int, type], object] = {}   # (workers, estimator) -> a pool, or a Stream already posing
_STREAM_KEY = "stream"


def prestart(workers: int, estimator: type, start: "StreamSpec | None" = None) -> None:
    """Fork the workers now, before this process imports PyTorch and loads the networks, so that both start
    up at once; with ``start`` they also begin posing its photos at once. The next ``Producer`` with the same
    workers and estimator takes the pool (and the stream, if it asks for the same photos and crops)."""
    if workers > 0 and (workers, estimator) not in _PRESTARTED and forkable():
        if not _PRESTARTED:
            import atexit

            atexit.register(discard_prestarted)  # e.g. the model failed to load: no Producer took them
        pool = start_pool(workers, estimator, WORKER_NICENESS)
        _PRESTARTED[(workers, estimator)] = Stream(pool, start, estimator, workers) if start else pool


def discard_prestarted() -> None:
    """End workers that ``prestart`` forked and no ``Producer`` took (e.g. the model failed to load)."""
    while _PRESTARTED:
        taken = _PRESTARTED.popitem()[1]
        (taken.close() if isinstance(taken, Stream) else taken.terminate())


# ---------------------------------------------------------------------------------------- main side
def network_threads(workers: int) -> int:
    """The cores the ``workers`` leave to the networks (at least one)."""
    return max(1, (os.cpu_count() or 1) - workers)


def share_cores(branch, workers: int) -> int:
    """Give the networks the cores the ``workers`` leave; returns the branch's thread count before."""
    return branch.set_threads(network_threads(workers))


def can_fork(workers: int) -> bool:
    """Whether worker processes can be forked here; says why not (then the caller works in-process)."""
    if workers <= 0:
        return False
    if not forkable():
        from ..progress import log

        log("[yellow]predict: this process already ran MediaPipe (or cannot fork); decoding and posing in this "
            f"process instead of {workers} worker(s) (start a fresh process to use them).")
        return False
    return True


@dataclass(frozen=True)
class StreamSpec:
    """What a stream poses and crops: the photos, in order, and how each batch is cut."""
    paths: tuple[str, ...]
    size: int
    margin: float
    n_keypoints: int
    batch_size: int
    cache_dir: str | None = None
    max_people: int | None = None  # None: one row per photo; else a row (and a crop) per person, up to this many


class Stream:
    """Photos posed and cropped by a pool's workers, submitted ahead (at most a window of them) and read
    back batch by batch, in order. Submitting starts at creation: the workers pose while the caller loads."""

    def __init__(self, pool, spec: StreamSpec, estimator: type, workers: int):
        self.pool, self.spec = pool, spec
        self.cache = PoseCache(spec.cache_dir, estimator.version)
        self.window = max(2 * spec.batch_size, 2 * workers)
        self.chunks = [list(spec.paths[i : i + spec.batch_size]) for i in range(0, len(spec.paths), spec.batch_size)]
        self.pending: deque = deque()   # (chunk index, AsyncResult or a final result), oldest first
        self.looked: dict[int, tuple] = {}
        self.submitted = 0
        self._fill()

    def _fill(self) -> None:
        while self.submitted < len(self.chunks) and len(self.pending) < self.window:
            self._submit(self.submitted)
            self.submitted += 1

    def _submit(self, c: int) -> None:
        chunk, spec = self.chunks[c], self.spec
        lookup = look_up(chunk, self.cache)
        self.looked[c] = lookup
        for j, path in enumerate(chunk):
            if lookup.first[j] is not None:
                self.pending.append((c, (j, lookup.first[j], None)))
            else:
                item = (j, path, lookup.cached(j), spec.size, spec.margin, spec.n_keypoints, spec.max_people)
                self.pending.append((c, self.pool.apply_async(_work, (item,))))

    def __iter__(self) -> Iterator[tuple[list[str | None], list[PoseResult], list[np.ndarray]]]:
        try:
            for c in range(len(self.chunks)):
                batch = self._collect(c)
                self._fill()  # before the caller runs its networks on this batch: the workers never wait on them
                yield batch
        finally:
            self.close()

    def _collect(self, c: int):
        chunk = self.chunks[c]
        lookup = self.looked.pop(c)
        results: list[PoseResult] = [None] * len(chunk)  # type: ignore[list-item]
        crops: list = [None] * len(chunk)
        for _ in range(len(chunk)):
            _, job = self.pending.popleft()
            j, results[j], crops[j] = job if isinstance(job, tuple) else _get(job, chunk)
        self.cache.put_many(lookup.fresh(results))
        return lookup.shas, results, stack_crops(results, crops, self.spec.size, self.spec.max_people)

    def close(self) -> None:
        if self.pool is not None:
            self.cache.close()
            self.pool.terminate()
            self.pool = None


def stack_crops(results: Sequence[PoseResult], crops: Sequence[list[np.ndarray] | None], size: int,
                max_people: int | None) -> np.ndarray:
    """The crops of every row of the poses table (R x S x S x 3 uint8), in order; a photo that could not be
    decoded gets grey ones."""
    out = []
    for r, cs in zip(results, crops):
        rows = len(person_rows(r, max_people))
        out.extend(cs if cs is not None else [np.full((size, size, 3), 127, np.uint8)] * rows)
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


class Producer:
    """Batches of (pose results, uint8 crops R x S x S x 3, one per row of the poses table) for ``paths``, in
    order, from ``workers`` processes."""

    def __init__(self, estimator: type, size: int, margin: float, n_keypoints: int, workers: int,
                 cache_dir: str | Path | None = None, max_people: int | None = None):
        self.estimator, self.size, self.margin, self.n = estimator, size, margin, n_keypoints
        self.workers, self.cache_dir, self.max_people = workers, cache_dir, max_people

    def spec(self, paths: Sequence[str], batch_size: int) -> StreamSpec:
        return StreamSpec(tuple(str(p) for p in paths), self.size, self.margin, self.n, batch_size,
                          str(self.cache_dir) if self.cache_dir else None, self.max_people)

    def batches(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[list[str | None], list[PoseResult], np.ndarray]]:
        """Per batch: content hashes, pose results and crops."""
        spec = self.spec(paths, batch_size)
        taken = _PRESTARTED.pop((self.workers, self.estimator), None)
        if isinstance(taken, Stream):  # prestarted on some photos: these ones, cut the same way?
            if taken.spec == spec:
                return iter(taken)
            taken = (taken.close(), None)[1]
        # fork: workers start in milliseconds and inherit the imported modules
        return iter(Stream(taken or start_pool(self.workers, self.estimator, WORKER_NICENESS), spec, self.estimator,
                           self.workers))


WORKER_TIMEOUT = 600.0  # seconds for one photo: a worker killed mid-photo (out of memory, a crash) never answers


def _get(job, chunk: list[str]) -> Done:
    import multiprocessing

    try:
        return job.get(WORKER_TIMEOUT)
    except multiprocessing.TimeoutError:
        from ..errors import HybridPoseError

        raise HybridPoseError(f"a worker process gave no answer for {WORKER_TIMEOUT:.0f} s on a photo among "
                              f"{chunk[0]} ...; it may have crashed on it: run again with --workers 0 to see which.") from None
