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

Item = tuple[int, str, "PoseResult | None"]
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


def _init(estimator: type, size: int, margin: float, n_keypoints: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)  # MediaPipe's C++ log lines would break the progress bar
    os.dup2(devnull, 2)
    os.close(devnull)
    _STATE.update(estimator_class=estimator, size=size, margin=margin, n=n_keypoints, estimator=None)


def _estimator():
    if _STATE["estimator"] is None:
        _STATE["estimator"] = _STATE["estimator_class"]()
    return _STATE["estimator"]


def _work(item: Item) -> Done:
    i, path, cached = item
    result, crop = pose_and_crop(path, cached, _estimator, _STATE["size"], _STATE["margin"], _STATE["n"])
    return i, result, crop


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
    from . import pose

    if workers <= 0:
        return False
    if os.name != "posix" or pose._MEDIAPIPE_STARTED:
        from .progress import log

        log("[yellow]predict: this process already ran MediaPipe (or cannot fork); decoding and posing in this "
            f"process instead of {workers} worker(s) (start a fresh process to use them).")
        return False
    return True


class Producer:
    """Batches of (pose results, uint8 crops B x S x S x 3) for ``paths``, in order, from ``workers`` processes."""

    def __init__(self, estimator: type, size: int, margin: float, n_keypoints: int, workers: int,
                 cache_dir: str | Path | None = None):
        self.estimator, self.size, self.margin, self.n = estimator, size, margin, n_keypoints
        self.workers, self.cache_dir = workers, cache_dir

    def batches(self, paths: Sequence[str], batch_size: int) -> Iterator[tuple[list[str | None], list[PoseResult], np.ndarray]]:
        """Per batch: content hashes, pose results and crops."""
        ctx = mp.get_context("fork")  # workers start in milliseconds and inherit the imported modules
        with ctx.Pool(self.workers, initializer=_init, initargs=(self.estimator, self.size, self.margin, self.n)) as pool:
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
                    pending.append((c, pool.apply_async(_work, ((j, path, cached.get(sha)),))))

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
                j, result, crop = job if isinstance(job, tuple) else job.get()
                results[j] = result
                if crop is not None:
                    crops[j] = crop
                if known[j] is None and shas[j] and shas[j] not in cached:
                    fresh.append((shas[j], result))
            cache.put_many(fresh)
            yield shas, results, crops
