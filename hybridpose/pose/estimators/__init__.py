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

from ...errors import HybridPoseError
from ...registry import Registry

ESTIMATORS: Registry[type] = Registry(
    "pose model", ("hybridpose.pose.estimators.mediapipe_pose", "hybridpose.pose.estimators.mediapipe_hands"),
    error=HybridPoseError)
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
