"""Prediction's producer side: photos decoded, posed and cropped in worker processes, delivered in order,
batch by batch, to the process that runs the networks (``HybridPoseClassifier.iter_predict(workers=N)``).

At most ``2 x batch_size`` photos are in flight (submitted, not yet consumed), so memory stays flat
however many photos there are, and the networks of one batch run while the workers pose the next.
Workers are forked before this process runs MediaPipe (a forked child of a process that did crashes in
its graph); the pose cache (SQLite) is read and written here, never in a worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .crops import crop_photo
from .images import ImageLoadError, open_rgb
from .pose import PoseCache, PoseResult, analyse_loaded, first_look

Item = tuple[int, str, "PoseResult | None", int, float, int]  # index, path, cached result, crop size, margin, keypoints
Done = tuple[int, PoseResult, "np.ndarray | None"]


def pose_and_crop(path: str, cached: PoseResult | None, estimator: Callable[[], object], size: int, margin: float,
                  n_keypoints: int) -> tuple[PoseResult, np.ndarray | None]:
    """One photo decoded once: its pose result (``cached`` when known) and its crop (None, left grey by the
    caller, when the photo cannot be decoded). ``estimator()`` gives the pose model, made on first use."""
    try:
        image = open_rgb(path)
    except ImageLoadError as e:
        return cached or PoseResult(e.status, e.reason), None
    result = cached or analyse_loaded(image, estimator())
    crop, _ = crop_photo(image, result.box, None, margin, size, n_keypoints)
    return result, crop


# ---------------------------------------------------------------------------------------- worker side
_STATE: dict = {}


def _init(estimator: type) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)  # MediaPipe's C++ log lines would break the progress bar
    os.dup2(devnull, 2)
    os.close(devnull)
    _STATE["estimator"] = estimator()  # now: the pose graph starts while the main process loads the networks


def _work(item: Item) -> Done:
    i, path, cached, size, margin, n = item
    result, crop = pose_and_crop(path, cached, lambda: _STATE["estimator"], size, margin, n)
    return i, result, crop


_PRESTARTED: dict[tuple[int, type], object] = {}


def prestart(workers: int, estimator: type) -> None:
    """Fork the workers now, before this process imports PyTorch and loads the networks, so that both start
    up at once; the next ``Producer`` with the same workers and estimator takes the pool."""
    if workers > 0 and (workers, estimator) not in _PRESTARTED and _forkable():
        if not _PRESTARTED:
            import atexit

            atexit.register(discard_prestarted)  # e.g. the model failed to load: no Producer took them
        _PRESTARTED[(workers, estimator)] = _pool(workers, estimator)


def discard_prestarted() -> None:
    """End workers that ``prestart`` forked and no ``Producer`` took (e.g. the model failed to load)."""
    while _PRESTARTED:
        _PRESTARTED.popitem()[1].terminate()


def _pool(workers: int, estimator: type):
    return mp.get_context("fork").Pool(workers, initializer=_init, initargs=(estimator,))


# ---------------------------------------------------------------------------------------- main side
def share_cores(branch, workers: int) -> int:
    """Give the networks the cores the ``workers`` leave (at least one); returns that thread count."""
    threads = max(1, (os.cpu_count() or 1) - workers)
    if hasattr(branch, "set_threads"):
        branch.set_threads(threads)
    else:
        import torch

        torch.set_num_threads(threads)
    return threads


def can_fork(workers: int) -> bool:
    """Whether worker processes can be forked here; says why not (then the caller works in-process)."""
    if workers <= 0:
        return False
    if not _forkable():
        from .progress import log

        log("[yellow]predict: this process already ran MediaPipe (or cannot fork); decoding and posing in this "
            f"process instead of {workers} worker(s) (start a fresh process to use them).")
        return False
    return True


def _forkable() -> bool:
    from . import pose

    return os.name == "posix" and not pose._MEDIAPIPE_STARTED


class Producer:
    """Batches of (pose results, uint8 crops B x S x S x 3) for ``paths``, in order, from ``workers`` processes."""

    def __init__(self, estimator: type, size: int, margin: float, n_keypoints: int, workers: int,
                 cache_dir: str | Path | None = None):
        self.estimator, self.size, self.margin, self.n = estimator, size, margin, n_keypoints
        self.workers, self.cache_dir = workers, cache_dir

    def batches(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[list[str | None], list[PoseResult], np.ndarray]]:
        """Per batch: content hashes, pose results and crops."""
        # fork: workers start in milliseconds and inherit the imported modules
        pool = _PRESTARTED.pop((self.workers, self.estimator), None) or _pool(self.workers, self.estimator)
        with pool:
            cache = PoseCache(self.cache_dir, self.estimator.version)
            try:
                yield from self._batches(pool, cache, [str(p) for p in paths], batch_size)
            finally:
                cache.close()

    def _batches(self, pool, cache: PoseCache, paths: list[str], batch_size: int):
        window = max(2 * batch_size, 2 * self.workers)
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        pending: deque = deque()   # (chunk index, AsyncResult or a final result), oldest first
        looked: dict[int, tuple[list, list]] = {}
        submitted = 0

        def submit(c: int) -> None:
            known, shas = first_look(chunks[c])
            cached = cache.get_many([s for s in shas if s])
            looked[c] = (known, shas, cached)
            for j, (path, sha) in enumerate(zip(chunks[c], shas)):
                if known[j] is not None:
                    pending.append((c, (j, known[j], None)))
                else:
                    item = (j, path, cached.get(sha), self.size, self.margin, self.n)
                    pending.append((c, pool.apply_async(_work, (item,))))

        for c in range(len(chunks)):
            while submitted < len(chunks) and len(pending) < window:
                submit(submitted)
                submitted += 1
            known, shas, cached = looked.pop(c)
            results: list[PoseResult] = [None] * len(chunks[c])  # type: ignore[list-item]
            crops = np.full((len(chunks[c]), self.size, self.size, 3), 127, np.uint8)
            fresh = []
            for _ in range(len(chunks[c])):
                _, job = pending.popleft()
                j, result, crop = job if isinstance(job, tuple) else _get(job, chunks[c])
                results[j] = result
                if crop is not None:
                    crops[j] = crop
                if known[j] is None and shas[j] and shas[j] not in cached:
                    fresh.append((shas[j], result))
            cache.put_many(fresh)
            yield shas, results, crops


WORKER_TIMEOUT = 600.0  # seconds for one photo: a worker killed mid-photo (out of memory, a crash) never answers


def _get(job, chunk: list[str]) -> Done:
    import multiprocessing

    try:
        return job.get(WORKER_TIMEOUT)
    except multiprocessing.TimeoutError:
        from .errors import HybridPoseError

        raise HybridPoseError(f"a worker process gave no answer for {WORKER_TIMEOUT:.0f} s on a photo among "
                              f"{chunk[0]} ...; it may have crashed on it: run again with --workers 0 to see which.") from None
