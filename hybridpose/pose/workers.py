"""The one pool of pose-model worker processes: forked (they start in milliseconds and inherit the imported
modules), each holding its own estimator (MediaPipe graphs are not shareable), log lines silenced.

A forked child of a process that already ran MediaPipe crashes in its own graph, and "spawn" re-imports
the caller's main module, so a pool is only forked where ``forkable()``; otherwise the work runs in-process.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Iterator

from .estimators import mediapipe_started
from .result import PoseResult, analyse

_STATE: dict = {}


def forkable() -> bool:
    return os.name == "posix" and not mediapipe_started()


def start_pool(workers: int, estimator: type, niceness: int = 0):
    """A pool of ``workers`` processes, each with its own ``estimator()`` (see ``worker_estimator``)."""
    return mp.get_context("fork").Pool(workers, initializer=_init, initargs=(estimator, niceness))


def worker_estimator():
    """The estimator of the worker process this runs in."""
    return _STATE["estimator"]


def _init(estimator: type, niceness: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)  # workers report problems as statuses; C++ log lines would
    os.dup2(devnull, 2)                         # only break the progress bar
    os.close(devnull)
    if niceness:
        os.nice(niceness)
    _STATE["estimator"] = estimator()  # now: the pose graph starts while the main process goes on


def _analyse(item: tuple[int, str]) -> tuple[int, PoseResult]:
    i, path = item
    return i, analyse(path, worker_estimator())


def run_pose(paths: list[str], workers: int, estimator: type) -> Iterator[tuple[int, PoseResult]]:
    """(index, result) of every path, in ``workers`` processes (in any order) or in this one."""
    items = list(enumerate(paths))
    if not items:
        return
    if workers > 1 and not forkable():
        from ..progress import log

        log("[yellow]pose: this process already ran MediaPipe; running one worker instead of "
            f"{workers} (start a fresh process to use several).")
        workers = 1
    if workers <= 1:
        with estimator() as est:
            for i, p in items:
                yield i, analyse(p, est)
        return
    with start_pool(workers, estimator) as pool:
        yield from pool.imap_unordered(_analyse, items, chunksize=4)
