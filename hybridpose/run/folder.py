"""The run folder that `fit` writes and every later command reads: its file names, in one place.

    RUN/config.json           every setting (format, run_id, hierarchy, skeleton, branches, training config)
    RUN/poses.csv             the keypoint front end's table of the training photos
    RUN/folds.csv             path, label, group, fold
    RUN/left_out.csv          path, reason: files of the data folder not trained on (when there are any)
    RUN/crops_<size>.npz      training crops (a cache; rebuilt when stale)
    RUN/fold_<k>/             stage<s>.pt, metrics.csv, oof_image.csv, done.json
    RUN/onnx/<key>/           the fold networks as one ONNX graph (a cache predict builds; rebuilt when stale)
    RUN/<branch files>        e.g. keypoint_model.json
    RUN/fusion.json, oof_predictions.csv, training_curves.png, summary.json
    RUN/rules.yaml, calibration.csv   (calibrate)
    RUN/clips.csv, clip_frames.csv, clip_statistics.csv   (clip runs)
"""
from __future__ import annotations

import reprlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..data.hierarchy import Hierarchy
from ..defaults import DEFAULTS
from ..errors import HybridPoseError, RunError

RUN_FORMAT = "hybridpose-run"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    config = property(lambda self: self.root / "config.json")
    poses = property(lambda self: self.root / "poses.csv")
    folds = property(lambda self: self.root / "folds.csv")
    left_out = property(lambda self: self.root / "left_out.csv")
    fusion = property(lambda self: self.root / "fusion.json")
    oof = property(lambda self: self.root / "oof_predictions.csv")
    summary = property(lambda self: self.root / "summary.json")
    curves = property(lambda self: self.root / "training_curves.png")
    rules = property(lambda self: self.root / "rules.yaml")
    calibration = property(lambda self: self.root / "calibration.csv")
    evaluation = property(lambda self: self.root / "evaluation")
    # clip runs (docs/CLIPS.md)
    clips = property(lambda self: self.root / "clips.csv")
    clip_frames = property(lambda self: self.root / "clip_frames.csv")
    clip_statistics = property(lambda self: self.root / "clip_statistics.csv")

    def crops(self, size: int) -> Path:
        return self.root / f"crops_{size}.npz"

    def fold_dir(self, k: int) -> Path:
        return self.root / f"fold_{k}"

    def onnx_graph(self, key: str) -> Path:
        """The folder of the ONNX graph built from the checkpoints that ``key`` names (engines/onnx_graph.py)."""
        return self.root / "onnx" / key

    def checkpoint(self, k: int, stage: int) -> Path:
        return self.fold_dir(k) / f"stage{stage}.pt"

    def fold_metrics(self, k: int) -> Path:
        return self.fold_dir(k) / "metrics.csv"

    def fold_oof(self, k: int) -> Path:
        return self.fold_dir(k) / "oof_image.csv"

    def fold_done(self, k: int) -> Path:
        return self.fold_dir(k) / "done.json"

    def file(self, name: str) -> Path:
        return self.root / name

    def is_run(self) -> bool:
        return self.config.exists()

    def read_config(self) -> dict:
        """config.json, checked; a RunError that says what to do otherwise."""
        if not self.config.exists():
            raise RunError(f"{self.root}: not a run directory (no config.json); give the --out folder of `hybridpose fit`.")
        try:
            config = atomic.read_json(self.config)
        except ValueError:
            raise RunError(f"{self.config}: damaged (not JSON); run `hybridpose fit` again with a fresh --out.") from None
        if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
            raise RunError(f"{self.config}: not a hybridpose run.")
        problem = config_problem(config)
        if problem:
            raise RunError(f"{self.config}: damaged ({problem}); restore it, or run `hybridpose fit` again "
                           "with a fresh --out.")
        return config

    def is_clip_run(self, config: dict | None = None) -> bool:
        """Whether the run's samples are clips (videos or frame folders; docs/CLIPS.md); ``config``: its
        config.json already read (else it is read here)."""
        if config is None:
            if not self.is_run():
                return False
            config = self.read_config()
        return bool(config.get("clips"))

    def fit_command(self, config: dict | None = None) -> str:
        """The `hybridpose fit` command that (re)creates or resumes this run: the data and run folder, the
        settings that are options of their own, and ``--config config.json`` for every training setting, so
        that the command reproduces the run id whatever the run was fitted with."""
        config = config if config is not None else self.read_config()
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        parts = ["hybridpose", "fit", str(config.get("data", "DATA")), "--out", str(self.root),
                 "--folds", str(config.get("folds", DEFAULTS.folds)), "--preset", str(train.get("preset", DEFAULTS.preset))]
        skeleton = config.get("skeleton", DEFAULTS.skeleton)
        if isinstance(skeleton, str) and skeleton != DEFAULTS.skeleton:
            parts += ["--skeleton", skeleton]
        pairs = sorted({tuple(sorted(p)) for p in (config.get("flip_pairs") or {}).items()})
        if pairs:
            parts += ["--flip-pairs", ",".join(f"{a}:{b}" for a, b in pairs)]
        clips = config.get("clips")
        if isinstance(clips, dict):
            parts += ["--clips", *(["--frames", str(clips["frames"])] if clips.get("frames") else
                                   ["--fps", f"{clips.get('fps', DEFAULTS.fps):g}",
                                    "--min-frames", str(clips.get("min_frames", 0))]),
                      "--image-frames", str(clips.get("image_frames", 0))]
        keypoints = config.get("keypoints")
        if isinstance(keypoints, dict) and keypoints.get("file"):
            parts += ["--keypoints", str(keypoints["file"]), "--keypoint-units", str(keypoints.get("units", "pixels"))]
        people = config.get("people")
        if isinstance(people, dict) and people.get("max_people"):
            parts += ["--max-people", str(people["max_people"]), "--person", str(people.get("person", DEFAULTS.person))]
        if config.get("second_look"):
            parts.append("--second-look")
        if self.config.exists():
            parts += ["--config", str(self.config)]
        return " ".join(shlex.quote(p) for p in parts)

    def require(self, path: Path, what: str = "") -> Path:
        """``path`` if it exists, else a RunError naming the fit command that writes it."""
        if path.exists():
            return path
        hint = ""
        try:
            hint = f": run `{self.fit_command()}` to finish it"
        except RunError:
            pass
        raise RunError(f"{path}: missing{(' (' + what + ')') if what else ''}; the run did not finish{hint}.")


# The types of config.json's settings that commands read (a key may be absent in older runs), and in words.
_CONFIG_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "version": ((int,), "a whole number"), "data": ((str,), "a path"), "n_images": ((int,), "a whole number"),
    "folds": ((int,), "a whole number of at least 2"), "skeleton": ((str, dict, type(None)), "a skeleton name or description"),
    "branches": ((list,), "a list of branch names"), "train": ((dict,), "a mapping of training settings"),
    "flip_pairs": ((dict,), "a mapping of classes"), "clips": ((dict, type(None)), "a mapping of clip settings"),
    "keypoints": ((dict,), "a mapping"), "run_id": ((str,), "a text id"), "people": ((dict,), "a mapping"),
}
_TRAIN_TYPES: dict[str, tuple[tuple[type, ...], str]] = {  # what prediction reads of the training settings
    "input_size": ((int,), "a whole number of pixels"), "eval_margin": ((int, float), "a number"),
}


def config_problem(config: dict) -> str:
    """What is wrong with a run's settings ("" if nothing): a value of the wrong type, or a broken hierarchy."""
    train = config.get("train")
    problem = _type_problem(config, _CONFIG_TYPES) or (
        _type_problem(train, _TRAIN_TYPES, "train.") if isinstance(train, dict) else "")
    if problem:
        return problem
    if config.get("folds", 2) < 2:
        return f"folds is {config['folds']}, expected {_CONFIG_TYPES['folds'][1]}"
    if not all(isinstance(b, str) for b in config.get("branches", [])):
        return f"branches is {config['branches']!r}, expected {_CONFIG_TYPES['branches'][1]}"
    if "hierarchy" not in config:
        return "no hierarchy"
    try:
        Hierarchy.from_dict(config["hierarchy"])
    except (KeyError, TypeError, AttributeError, ValueError, HybridPoseError):
        return "the hierarchy is not a mapping of levels and each class's ancestors"
    return ""


def _type_problem(values: dict, types: dict[str, tuple[tuple[type, ...], str]], prefix: str = "") -> str:
    for key, (allowed, words) in types.items():
        value = values.get(key)
        if key in values and (isinstance(value, bool) or not isinstance(value, allowed)):
            return f"{prefix}{key} is {reprlib.repr(value)}, expected {words}"
    return ""
