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
from typing import Callable, Iterator

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


# A second chance before "nobody": the detector again at this threshold, on the photo and on four overlapping
# crops of 2/3 of its sides (a person or hand 1.5 times larger), kept only when the landmark model's own
# presence score reaches SURE (its usual bar is 0.5).
RETRY_DETECTION = 0.1
SURE = 0.7
VIEW = 2 / 3


def second_views(rgb: np.ndarray) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """The photo, then its four corner crops of ``VIEW`` of each side, each with (x0, y0, w, h) in the photo."""
    h, w = rgb.shape[:2]
    yield rgb, (0, 0, w, h)
    cw, ch = max(1, round(w * VIEW)), max(1, round(h * VIEW))
    for y0 in (0, h - ch):
        for x0 in (0, w - cw):
            yield np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw]), (x0, y0, cw, ch)


def to_photo(kp: np.ndarray, where: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """Keypoints normalised to a view back to the photo's normalised coordinates."""
    x0, y0, w, h = where
    out = kp.copy()
    out[:, 0] = (kp[:, 0] * w + x0) / width
    out[:, 1] = (kp[:, 1] * h + y0) / height
    out[:, 2] = kp[:, 2] * w / width  # z on the scale of x
    return out


class MediaPipeEstimator:
    """A MediaPipe legacy solution in static-image mode, the models the ``mediapipe==0.10.21`` wheel bundles;
    a subclass makes its graph (``make_graph(solutions, detection, presence)``) and turns the graph's result
    into keypoints. ``second_look`` is the second chance before "nobody" (``RETRY_DETECTION``)."""
    name = version = skeleton_name = ""
    second_chance = True

    @property
    def skeleton(self) -> Skeleton:
        return get_skeleton(self.skeleton_name)

    def make_graph(self, solutions, detection: float = 0.5, presence: float = 0.5):
        raise NotImplementedError

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe

        started()
        with quiet_stderr():  # MediaPipe's C++ start-up chatter would cut through the progress bar
            self._graph = self.make_graph(mediapipe.solutions)
        self._warm = False
        self._retry = None

    def retry_graph(self):
        """The graph of the second chance: a low detection threshold, a high presence bar (made on first use)."""
        if self._retry is None:
            import mediapipe

            with quiet_stderr():
                self._retry = self.make_graph(mediapipe.solutions, RETRY_DETECTION, SURE)
        return self._retry

    def run(self, graph, rgb: np.ndarray):
        """``graph``'s result for ``rgb`` (a legacy solution's ``process``)."""
        return graph.process(np.ascontiguousarray(rgb))

    def second_look(self, rgb: np.ndarray, read: Callable[[object], list[np.ndarray]]) -> list[np.ndarray]:
        """What the retry graph finds on the photo or, failing that, on the first of its corner crops where it
        finds anything (``read`` turns a graph result into normalised keypoint arrays), in the photo's
        coordinates; [] when nothing, or when this estimator has no second chance."""
        if not self.second_chance:
            return []
        h, w = rgb.shape[:2]
        graph = self.retry_graph()
        for view, where in second_views(rgb):
            found = read(self.run(graph, view))
            if found:
                return [to_photo(kp, where, w, h) for kp in found]
        return []

    def process(self, rgb: np.ndarray):
        """The graph's result for one RGB image (the first call's C++ chatter silenced)."""
        if not self._warm:
            self._warm = True
            with quiet_stderr():
                return self._graph.process(np.ascontiguousarray(rgb))
        return self._graph.process(np.ascontiguousarray(rgb))

    def close(self) -> None:
        self._graph.close()
        if self._retry is not None:
            self._retry.close()

    def __enter__(self) -> "MediaPipeEstimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
