"""explain: why the model decides as it does, drawn per photo (crop, keypoints, CAM, top-5, rule) or per
clip (a strip of frames with their CAMs and the clip's statistics)."""
from __future__ import annotations

from pathlib import Path

from ..defaults import DEFAULTS
from ..run.folder import RunFolder
from .cam import grad_cam_class


def explain(inputs: str | Path, run: str | Path, out: str | Path, *, method: str = DEFAULTS.cam_method,
            tsne: str | Path | None = None, limit: int = DEFAULTS.explain_limit,
            max_people: int = DEFAULTS.max_people) -> dict:
    """PNGs in ``out`` for the photos (or, with a clip run, the clips) of ``inputs``; what was written.
    Photos: every person found, up to ``max_people`` (1: the single-person model)."""
    grad_cam_class(method)  # an unknown method fails before any work
    if RunFolder(run).is_clip_run():
        from .clips import explain_clips

        return explain_clips(inputs, run, out, method=method, limit=limit)
    from .photos import explain_photos

    return explain_photos(inputs, run, out, method=method, tsne=tsne, limit=limit, max_people=max_people)
