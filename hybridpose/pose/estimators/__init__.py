"""Pose models, one module each, found by name (a skeleton's ``estimator``).

An estimator class has ``name``, ``version`` (part of the pose cache key), ``skeleton_name``, a
``landmarks(rgb) -> (n, 4) array | None`` method, ``close()`` and context-manager support. It calls
``started()`` when it loads MediaPipe: a forked child of a process that ran MediaPipe crashes in its own
graph, so the worker pools ask ``mediapipe_started()`` before they fork.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ...errors import HybridPoseError
from ...registry import Registry
from ...skeletons import Skeleton, get_skeleton

ESTIMATORS: Registry[type] = Registry("pose model", "hybridpose.pose.estimators", error=HybridPoseError)
register = ESTIMATORS.register

_state = {"mediapipe": False}


def started() -> None:
    """This process has loaded MediaPipe (forked children must not run it)."""
    _state["mediapipe"] = True


def mediapipe_started() -> bool:
    return _state["mediapipe"]


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ libraries write there directly), restoring it after."""
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


class MediaPipeEstimator:
    """A MediaPipe legacy solution in static-image mode, the models the ``mediapipe==0.10.21`` wheel bundles;
    a subclass makes its graph (``make_graph``) and turns the graph's result into keypoints."""
    name = version = skeleton_name = ""

    @property
    def skeleton(self) -> Skeleton:
        return get_skeleton(self.skeleton_name)

    def make_graph(self, solutions):
        raise NotImplementedError

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe

        started()
        with quiet_stderr():  # MediaPipe's C++ start-up chatter would cut through the progress bar
            self._graph = self.make_graph(mediapipe.solutions)
        self._warm = False

    def process(self, rgb: np.ndarray):
        """The graph's result for one RGB image (the first call's C++ chatter silenced)."""
        if not self._warm:
            self._warm = True
            with quiet_stderr():
                return self._graph.process(np.ascontiguousarray(rgb))
        return self._graph.process(np.ascontiguousarray(rgb))

    def close(self) -> None:
        self._graph.close()

    def __enter__(self) -> "MediaPipeEstimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TWICE: dict[tuple[type, type], type] = {}


class LookedTwice:
    """``first``, and on a photo where it finds nobody, ``second`` (its second look): one estimator, with a
    cache key of its own. Made by ``looked_twice``."""
    first: type
    second: type
    skeleton = MediaPipeEstimator.skeleton

    def __init__(self) -> None:
        self._first, self._second = self.first(), None

    def _again(self):
        if self._second is None:  # made on the first miss: most photos never need it
            self._second = self.second()
        return self._second

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        found = self._first.landmarks(rgb)
        return found if found is not None else self._again().landmarks(rgb)

    def close(self) -> None:
        for est in (self._first, self._second):
            if est is not None:
                est.close()

    def __enter__(self) -> "LookedTwice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PeopleLookedTwice(LookedTwice):
    def people(self, rgb: np.ndarray) -> list:
        return self._first.people(rgb) or self._again().people(rgb)


def looked_twice(first: type, second: type) -> type:
    """The estimator class of ``first`` then, where it found nobody, ``second``; one class per pair."""
    if (first, second) not in _TWICE:
        base = PeopleLookedTwice if hasattr(first, "people") else LookedTwice
        attrs = {"first": first, "second": second, "name": f"{first.name}+{second.name}",
                 "version": f"{first.version}+{second.version}", "skeleton_name": first.skeleton_name,
                 "__module__": __name__}
        if hasattr(first, "missing"):
            attrs["missing"] = first.missing
        cls = type(f"{first.__name__}Then{second.__name__}", (base,), attrs)
        globals()[cls.__name__] = cls  # found by name when pickled
        _TWICE[(first, second)] = cls
    return _TWICE[(first, second)]
