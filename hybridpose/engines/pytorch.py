"""The ``torch`` engine: the image branch's K fold networks from a run's checkpoints (PyTorch)."""
from __future__ import annotations

import importlib.util

from . import Engine, register


def _load(run, config: dict, *, device: str = "auto", partial: bool = False, threads: int = 0):
    """``threads`` is left to ``ImageBranch.set_threads`` (PyTorch's count is process-wide)."""
    from ..branches.image import ImageBranch

    return ImageBranch.load(run, config, device=device, partial=partial)


ENGINE = register(Engine("torch", lambda: importlib.util.find_spec("torch") is not None, _load, reads=("run",)))
