"""Executors: where the independent pieces of a long job run (folds of `fit`, trials of `tune`,
chunks of pose extraction, batches of `predict`).

An executor is one module registered by name (``local``: this process, one piece after the other;
``ray``: tasks on a Ray cluster). It knows nothing about training: a caller hands it a function and
the items to call it on, and gets ``(item, result)`` pairs back as the pieces finish. The function
must be importable by name (a module-level function, or a ``functools.partial`` of one) so that a
worker on another machine can run it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..pose.cache import PoseCache, look_up
from ..pose.frontend import estimator_class
from ..pose.result import analyse
from ..registry import Registry
from ..skeletons import Skeleton

EXECUTORS: Registry[type] = Registry("executor", "hybridpose.executors",
                                   unknown="--executor {name!r}: choose one of {known}.")


@dataclass
class Resources:
    """What one piece needs on a worker (Ray schedules by it; ``local`` ignores it)."""
    cpus: float = 1.0
    gpus: float = 0.0


class Executor:
    """Runs ``fn(item)`` for every item; subclasses say where."""
    name = "?"
    distributed = False  # True: pieces run in other processes, possibly on other machines

    def map(self, fn: Callable, items: Sequence, *, resources: Resources | None = None, retries: int = 0,
            desc: str = "", show_progress: bool = True) -> Iterator[tuple[object, object]]:
        raise NotImplementedError

    @property
    def slots(self) -> int:
        """How many pieces can run at once."""
        return 1

    def check(self, resources: Resources, what: str = "task") -> None:
        """A ConfigError, before any work, when no worker could ever hold a piece needing ``resources``."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


register = EXECUTORS.register


def available() -> list[str]:
    return EXECUTORS.names()


def get_executor(name: str | Executor = "local", **options: object) -> Executor:
    """An executor by name (``options``: its settings, e.g. ``address`` for ray); an instance passes through."""
    if isinstance(name, Executor):
        return name
    cls = EXECUTORS.get(getattr(name, "value", name))
    return cls(**{k: v for k, v in options.items() if v is not None})


# --------------------------------------------------------------------------- pose extraction


def pose_chunk(paths: list[str], estimator: type) -> list:
    """Pose results of ``paths`` with one estimator (a task: one model load per chunk)."""
    with estimator() as est:
        return [analyse(p, est) for p in paths]


def warm_pose_cache(executor: Executor, paths: Iterable[str | Path], *, skeleton: Skeleton | str | None = None,
                    cache_dir: str | Path | None = None, chunk: int = 64, show_progress: bool = True) -> int:
    """Run the pose model on the executor's workers for every photo the pose cache lacks; the results
    go into this process's cache, so the ordinary ``pose.extract`` that follows finds them all.
    Returns the number of photos computed."""
    from functools import partial

    estimator = estimator_class(skeleton)
    paths = [str(p) for p in paths]
    cache = PoseCache(cache_dir, estimator.version)
    try:
        lookup = look_up(paths, cache)
        todo = [(paths[i], lookup.shas[i]) for i in lookup.todo()]
        chunk = max(1, min(chunk, -(-len(todo) // max(1, executor.slots))))
        pieces = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
        sha_of = {p: s for p, s in todo}
        fn = partial(_pose_piece, estimator=estimator)
        for piece, results in executor.map(fn, pieces, retries=2, desc="pose", show_progress=show_progress):
            cache.put_many([(sha_of[p], r) for (p, _), r in zip(piece, results)])
    finally:
        cache.close()
    return len(todo)


def _pose_piece(piece: list[tuple[str, str]], estimator: type) -> list:
    return pose_chunk([p for p, _ in piece], estimator)
