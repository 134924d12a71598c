"""Stage checkpoints: written atomically, checked on load so a foreign or damaged file is named, not used."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import atomic
from ..errors import RunError

FORMAT = "hybridpose-checkpoint"


def save_checkpoint(path: Path, *, run_id: str, fold: int, stage: int, state_dict: dict, meta: dict) -> None:
    atomic.save_torch(path, {"format": FORMAT, "version": 1, "run_id": run_id, "fold": fold, "stage": stage,
                             "meta": meta, "state_dict": state_dict})


def load_checkpoint(path: Path, *, run_id: str | None = None, fold: int | None = None, stage: int | None = None) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RunError(f"{path}: checkpoint is damaged ({type(e).__name__}); delete it and run the same command to retrain that stage.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise RunError(f"{path}: not a hybridpose checkpoint; remove it from the run directory or use another --out.")
    for key, want in (("run_id", run_id), ("fold", fold), ("stage", stage)):
        if want is not None and ckpt.get(key) != want:
            raise RunError(
                f"{path}: checkpoint belongs to another run or fold ({key} is {ckpt.get(key)!r}, expected {want!r}); "
                "use a fresh --out for a run with other settings."
            )
    return ckpt
