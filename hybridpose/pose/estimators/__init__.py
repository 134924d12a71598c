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
