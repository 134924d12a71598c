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

from ..errors import ConfigError
from ..pose import PoseCache, analyse, estimator_class, first_look
from ..skeletons import Skeleton

EXECUTORS: dict[str, type] = {}


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


def register(cls: type) -> type:
    EXECUTORS[cls.name] = cls
    return cls


def available() -> list[str]:
    _load_builtin()
    return sorted(EXECUTORS)


def get_executor(name: str | Executor = "local", **options: object) -> Executor:
    """An executor by name (``options``: its settings, e.g. ``address`` for ray); an instance passes through."""
    if isinstance(name, Executor):
        return name
    _load_builtin()
    name = getattr(name, "value", name)
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r}: choose one of {', '.join(sorted(EXECUTORS))}.")
    return EXECUTORS[name](**{k: v for k, v in options.items() if v is not None})


def _load_builtin() -> None:
    from . import local, ray  # noqa: F401  (ray is imported by the executor only when used)


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
    known, shas = first_look(paths)
    cache = PoseCache(cache_dir, estimator.version)
    try:
        hits = cache.get_many(sorted({s for s in shas if s}))
        todo, seen = [], set()
        for p, sha, k in zip(paths, shas, known):
            if k is None and sha and sha not in hits and sha not in seen:
                seen.add(sha)
                todo.append((p, sha))
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
