"""A finished run (or bundle) loaded once and asked many times: what a long-lived process (``hybridpose serve``)
keeps in memory, one call per request.

    model = LoadedModel.load("runs/yoga8")
    rows = model.predict_files(["a.jpg", "b.png"])   # predictions.csv rows, with each photo's keypoints

A photo run answers one row per photo, a clip run one row per clip (a photo is a clip of one frame), with
the fields of predictions.csv (``docs/FORMATS.md``) plus ``keypoints``. Calls from several threads are run
one at a time: the pose model and the networks are one copy in memory.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.clips import sample_of
from ..data.sources import classify
from ..run.folder import RunFolder
from .classifier import LABELLED, HybridPoseClassifier


class LoadedModel:
    """A run's classifier (photo run) or clip predictor (clip run), loaded once."""

    def __init__(self, run: RunFolder, clf: HybridPoseClassifier, clips=None):
        self.run, self.clf, self.clips = run, clf, clips
        self.lock = threading.Lock()

    @classmethod
    def load(cls, run: str | Path, *, rules: str | Path | None = None, no_rules: bool = False,
             partial: bool = False, engine: str | None = None) -> "LoadedModel":
        """Load ``run`` (its checks are the ones ``predict`` makes: a RunError or RulesError line)."""
        folder = RunFolder(run)
        if folder.is_clip_run():
            from .clips import ClipPredictor

            pred = ClipPredictor(run, rules=rules, use_rules=not no_rules, partial=partial, engine=engine)
            return cls(folder, pred.clf, pred)
        return cls(folder, HybridPoseClassifier.load(run, rules=rules, use_rules=not no_rules, partial=partial,
                                                     engine=engine))

    @property
    def kind(self) -> str:
        """``clips`` (one row per clip) or ``photos`` (one row per photo)."""
        return "clips" if self.clips is not None else "photos"

    def predict_files(self, paths: Sequence[str | Path]) -> list[dict]:
        """One JSON-ready row per file: predictions.csv's fields (``status`` / ``reason`` say why a file got no
        label) and ``keypoints`` (pixels, ``[x, y, z, visibility]`` per keypoint; per frame for a clip)."""
        with self.lock:
            if self.clips is not None:
                return [self._clip_row(Path(p)) for p in paths]
            return self._photo_rows([Path(p) for p in paths])

    def _photo_rows(self, paths: list[Path]) -> list[dict]:
        entries = [classify(p) for p in paths]  # a video given to a photo run: predict's own reason, never opened
        readable = [e.path for e in entries if e.readable]
        found: dict[str, dict] = {}
        if readable:
            rows, batch = self.clf.predict_batch(readable)
            kps = _keypoints(batch.poses, self.clf.skeleton)
            for rec, kp, w, h in zip(rows.to_dict(orient="records"), kps, batch.poses["width"], batch.poses["height"]):
                usable = rec["status"] in LABELLED
                found[rec["path"]] = {**{k: plain(v) for k, v in rec.items()}, "keypoints": kp if usable else None,
                                      "width": plain(w), "height": plain(h)}
        return [found.get(str(e.path)) or {"path": str(e.path), "status": e.status, "reason": e.reason,
                                           "keypoints": None} for e in entries]

    def _clip_row(self, path: Path) -> dict:
        res = self.clips.predict_clip(sample_of(path))
        row = {"path": str(path), "kind": res.sample.kind, "status": res.status, "reason": res.reason,
               **{k: plain(v) for k, v in res.row.items()}}
        row["keypoints"] = [{"frame": f.index, "time": round(f.time, 4), "status": f.status,
                             "keypoints": _points(f.keypoints)} for f in res.frames] or None
        return row

    def describe(self) -> dict:
        """What the model is: classes, hierarchy, branches, skeleton, versions and the rules in force."""
        config, sk, h = self.clf.config, self.clf.skeleton, self.clf.hierarchy
        rules = self.clf.rules
        return {
            "run": str(self.run.root), "run_id": config.get("run_id"), "kind": self.kind,
            "classes": list(h.leaves), "levels": list(h.levels), "hierarchy": config.get("hierarchy"),
            "branches": list(self.clf.branches),
            "skeleton": {"name": sk.name, "keypoints": list(sk.keypoints), "edges": [list(e) for e in sk.edges]},
            "versions": {**_versions(), "run_format": config.get("version"), "pose_model": _estimator_version(sk)},
            "rules": None if rules is None else {
                "file": str(rules.path) if rules.path else None, "level": rules.level,
                "rules": [r.to_mapping() for r in rules.rules]},
        }


def _versions() -> dict:
    """Installed versions of hybridpose and what it predicts with (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hybridpose", "torch", "timm", "xgboost", "mediapipe", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _estimator_version(skeleton) -> str:
    from ..pose.frontend import estimator_class

    cls = estimator_class(skeleton)
    return f"{cls.name} {cls.version}"


def _keypoints(poses, skeleton) -> list[list | None]:
    from ..pose.frontend import keypoints_array

    return [_points(kp) for kp in keypoints_array(poses, skeleton)]


def _points(kp: np.ndarray) -> list | None:
    """(n, 4) keypoints as lists, None where no keypoint was found (NaN)."""
    kp = np.asarray(kp, float)
    if not np.isfinite(kp[:, :2]).any():
        return None
    return [[plain(v) for v in row] for row in np.round(kp, 2)]


def plain(v):
    """A JSON value: NaN and infinities become None, NumPy scalars Python numbers."""
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v
