"""The fused classifier a run produces: its branches (K fold CNNs, keypoint model) + fusion + rules.

    clf = HybridPoseClassifier.load("runs/yoga8")
    table = clf.predict(["photo1.jpg", "photo2.png"])
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pandas as pd

from ..branches import DEFAULT_BRANCHES, branch_class
from ..data.hierarchy import Hierarchy
from ..defaults import DEFAULTS
from ..engines import choose, is_bundle
from ..errors import RunError
from ..fusion import Fusion, read_fusion
from ..pose.cache import PoseCache, look_up
from ..pose.frontend import BOX_COLUMNS, PERSON_COLUMNS, estimator_class, keypoints_array, make_table
from ..pose.result import PoseResult
from ..pose.temporal import statistic_names
from ..rules import RuleSet, read_rules
from ..run.folder import RunFolder
from ..run.predtable import prediction_columns, prob_columns, rules_column
from ..skeletons import Skeleton, get_skeleton
from .pipeline import pose_and_crop, posed_by, stack_crops

if TYPE_CHECKING:
    from ..branches.image import ImageBranch

TOP_K = DEFAULTS.top_k
# statuses of photos that get a label (an image branch answer at least)
LABELLED = ("ok", "no_person", "no_hand", "no_keypoints")
PERSON_ROW_COLUMNS = [PERSON_COLUMNS[0], *BOX_COLUMNS, PERSON_COLUMNS[1]]  # predictions.csv's, after reason


@dataclass
class Batch:
    """Everything known about a batch of photos, for predict, evaluate and explain."""
    poses: pd.DataFrame
    crops: np.ndarray                        # uint8 B x 3 x S x S
    branches: dict[str, dict[str, np.ndarray]]  # branch -> level -> probabilities (NaN rows: abstained)
    fused: dict[str, np.ndarray]
    leaf: list[str]
    rule: list[str]
    features: pd.DataFrame

    @property
    def image(self) -> dict[str, np.ndarray]:
        return self.branches["image"]


class HybridPoseClassifier:
    def __init__(self, run: RunFolder, config: dict, branches: dict, fusion: Fusion, rules: RuleSet | None):
        self.run, self.config, self.branches, self.fusion, self.rules = run, config, branches, fusion, rules
        self.hierarchy = fusion.hierarchy
        self.skeleton: Skeleton = get_skeleton(config.get("skeleton"))
        self.cache_dir: Path | None = None
        self.keypoint_source = None  # a keypoint_file.KeypointFile: keypoints from a file, not the pose model
        self.max_people: int | None = None  # None: one row per photo; N: a row per person found, up to N
        self.second_look = bool(config.get("second_look"))  # a photo with nobody found gets a second look
        self._estimator = None

    @classmethod
    def load(cls, run: str | Path, *, rules: str | Path | None = None, use_rules: bool = True,
             device: str = "auto", partial: bool = False, engine: str | None = None,
             threads: int = 0) -> "HybridPoseClassifier":
        """A finished run or an exported bundle; ``partial`` allows a run missing fold models (they are named
        in a warning); ``engine`` runs the image branch (``engines.choose``: by default onnxruntime wherever
        it is installed, a run's graph built on first use; torch reads the checkpoints); ``threads``: CPU
        threads for the networks where the engine takes them at load (0: its default)."""
        folder = RunFolder(run)
        config = folder.read_config()
        hierarchy = Hierarchy.from_dict(config["hierarchy"])
        names = config.get("branches", DEFAULT_BRANCHES)
        fusion = read_fusion(folder.require(folder.fusion), hierarchy, names, _remake(folder, config))  # before the networks
        runtime = choose(folder, config, engine, partial=partial, device=device)
        branches = {name: runtime.load_image_branch(folder, config, device=device, partial=partial, threads=threads)
                    if name == "image" else branch_class(name).load(folder, config, device=device, partial=partial)
                    for name in names}
        skeleton = get_skeleton(config.get("skeleton"))
        return cls(folder, config, branches, fusion, _load_rules(folder, config, rules, use_rules, hierarchy, skeleton))

    @property
    def image_branch(self) -> "ImageBranch":
        return self.branches["image"]

    @property
    def levels(self) -> list[str]:
        return self.hierarchy.levels

    @property
    def missing_folds(self) -> list[int]:
        return self.image_branch.missing_folds

    # ------------------------------------------------------------------ prediction
    def batch(self, paths: Sequence[str | Path]) -> Batch:
        return self.batch_from(*self.poses_and_crops(paths))

    def batch_from(self, poses: pd.DataFrame, crops: np.ndarray) -> Batch:
        inputs = {"crops": crops, "keypoints": keypoints_array(poses, self.skeleton)}
        probs = {name: b.predict_level_proba(inputs[b.input], self.hierarchy) for name, b in self.branches.items()}
        fused = self.fusion.predict_proba(probs)
        feats = self.skeleton.features(inputs["keypoints"])
        leaf_p = fused[self.hierarchy.leaf_level]
        leaves = self.hierarchy.leaves
        leaf = [leaves[i] for i in leaf_p.argmax(1)]
        rule = [""] * len(leaf)
        if self.rules is not None and self.rules.rules:
            decided, names = self.rules.apply(leaf_p, leaves, feats)
            for i, (d, n) in enumerate(zip(decided, names)):
                if d is not None:
                    leaf[i], rule[i] = d, n
        return Batch(poses, crops, probs, fused, leaf, rule, feats)

    def predict_batch(self, paths: Sequence[str | Path]) -> tuple[pd.DataFrame, Batch]:
        """predictions.csv rows of one batch of photos (in this process) and the batch they came from (its poses
        table holds every photo's keypoints)."""
        b = self.batch([str(p) for p in paths])
        return self._rows(b), b

    def predict_proba(self, paths: Sequence[str | Path]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        """Hierarchy-consistent fused probabilities per level (before rules), and each file's status.

        Rows of files that are not usable photos (see the ``status`` column) are NaN."""
        b = self.batch(paths)
        usable = b.poses["status"].isin(LABELLED).to_numpy()
        probs = {lv: np.where(usable[:, None], p, np.nan) for lv, p in b.fused.items()}
        return probs, b.poses[["path", "status", "reason"]].reset_index(drop=True)

    def predict(self, paths: Sequence[str | Path], batch_size: int = DEFAULTS.batch_size, show_progress: bool = False,
                workers: int = 0) -> pd.DataFrame:
        return pd.concat(list(self.iter_predict(paths, batch_size, show_progress, workers=workers)), ignore_index=True)

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int = DEFAULTS.batch_size, show_progress: bool = False,
                     detailed: bool = False, workers: int = 0) -> Iterator[pd.DataFrame]:
        """predictions.csv rows, one DataFrame per batch (memory stays flat however many photos).

        ``workers`` > 0: decode, pose and crop in that many processes (hybridpose.inference.pipeline) while this
        one runs the networks; 0: all in this process."""
        from ..progress import progress_bar

        paths = [str(p) for p in paths]
        with progress_bar("predict", total=len(paths), enabled=show_progress) as advance:
            for chunk, parts in self._batches(paths, batch_size, workers):
                b = self.batch_from(*parts)
                rows = self._rows(b)
                yield pd.concat([rows, self._detail(b)], axis=1) if detailed else rows
                advance(len(chunk))

    def _rows(self, b: Batch) -> pd.DataFrame:
        h = self.hierarchy
        frame = pd.DataFrame({"path": b.poses["path"], "status": b.poses["status"], "reason": b.poses["reason"]})
        if self.max_people is not None:  # which person of the photo, its box and the pose model's confidence
            frame = pd.concat([frame, b.poses[PERSON_ROW_COLUMNS]], axis=1)
        for col, values in prediction_columns(b.leaf, b.fused[h.leaf_level], h, b.rule,
                                         {name: p[h.leaf_level] for name, p in b.branches.items()}, TOP_K).items():
            frame[col] = values
        if self.missing_folds:
            frame["ensemble"] = f"partial: folds {self.missing_folds} missing"
        unusable = ~b.poses["status"].isin(LABELLED).to_numpy()
        for col in [*h.levels, "confidence", *[f"{n}_top" for n in b.branches], *[c for c in frame if c.startswith("top")]]:
            frame.loc[unusable, col] = None  # nothing to label in a file that is not an image
        return frame

    def _detail(self, b: Batch) -> pd.DataFrame:
        """Per-branch probabilities in the oof_predictions.csv layout (for evaluate)."""
        h = self.hierarchy
        cols = prob_columns(h, {**b.branches, "fused": b.fused})
        for lv in h.levels:
            cols[rules_column(lv)] = [h.ancestor(leaf, lv) for leaf in b.leaf]
        return pd.DataFrame(cols, index=b.poses.index)

    def _batches(self, paths: list[str], batch_size: int, workers: int):
        """(chunk, (poses, crops)) per batch of ``paths``."""
        from .pipeline import Producer, can_fork, share_cores

        if self.keypoint_source is not None or not can_fork(workers):  # a keypoint file: no pose model to spread
            for i in range(0, len(paths), batch_size):
                yield paths[i : i + batch_size], self.poses_and_crops(paths[i : i + batch_size])
            return
        threads = share_cores(self.image_branch, workers)  # given back after: a library call leaves the caller's alone
        try:
            prep = self.image_branch.preprocessing_
            producer = Producer(self.estimator_class, prep.input_size, prep.eval_margin, self.skeleton.n,
                                workers, self.cache_dir, self.max_people)
            done = 0
            for shas, results, crops in producer.batches(paths, batch_size):
                chunk = paths[done : done + len(results)]
                done += len(results)
                poses = make_table(chunk, shas, results, self.skeleton, self.max_people)
                yield chunk, (poses, channels_first(crops))
        finally:
            self.image_branch.set_threads(threads)

    # ------------------------------------------------------------------ parts
    def poses_and_crops(self, paths: Sequence[str | Path]) -> tuple[pd.DataFrame, np.ndarray]:
        """Pose table rows and crops for a batch, decoding each photo once."""
        prep = self.image_branch.preprocessing_
        version = self.keypoint_source.version if self.keypoint_source else self.estimator_class.version
        cache = PoseCache(self.cache_dir, version)
        try:
            lookup = look_up(paths, cache)
            results, crops = [], []
            for i, path in enumerate(paths):
                if lookup.first[i] is not None:
                    results.append(lookup.first[i])
                    crops.append(None)
                    continue
                result, crop = self._one(path, lookup.cached(i), prep.input_size, prep.eval_margin)
                results.append(result)
                crops.append(crop)
            cache.put_many(lookup.fresh(results))
        finally:
            cache.close()
        poses = make_table([str(p) for p in paths], lookup.shas, results, self.skeleton, self.max_people)
        return poses, channels_first(stack_crops(results, crops, prep.input_size, self.max_people))

    def _one(self, path, cached: PoseResult | None, size: int, margin: float) -> tuple[PoseResult, list | None]:
        """The photo's pose result and crops, one per row (None, left grey, when the photo cannot be decoded)."""
        if self.keypoint_source is not None:  # the file decides, whatever the cache holds
            found = lambda image, p: self.keypoint_source.result(p, image.width, image.height)  # noqa: E731
            return pose_and_crop(path, None, found, size, margin, self.skeleton.n, self.max_people)
        return pose_and_crop(path, cached, posed_by(lambda: self.estimator), size, margin, self.skeleton.n,
                             self.max_people)

    @property
    def estimator_class(self) -> type:
        """The pose model: the skeleton's, or the multi-person one that stands in for it (``max_people`` > 1),
        with its second look where nobody is found (``second_look``)."""
        return estimator_class(self.skeleton, self.max_people or 1, self.second_look)

    @property
    def estimator(self):
        if type(self._estimator) is not self.estimator_class:  # none yet, or max_people / second_look changed
            self._estimator = self.estimator_class()
        return self._estimator


def channels_first(crops: np.ndarray) -> np.ndarray:
    """B x S x S x 3 -> B x 3 x S x S (the networks' layout), contiguous."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


def _remake(folder: RunFolder, config: dict) -> str:
    """What remakes a damaged file of a run (its fit) or of an exported bundle (the export)."""
    if is_bundle(folder):
        return f"export the run again: `hybridpose export RUN --out {folder.root}`"
    return f"run `{folder.fit_command(config)}` again (it rewrites the file)"


def _load_rules(run: RunFolder, config: dict, rules: str | Path | None, use_rules: bool, hierarchy: Hierarchy,
                skeleton: Skeleton) -> RuleSet | None:
    """The rules in force (``rules``, else the run's rules.yaml when there is one), checked against the run's
    classes and statistics (a clip run's rules read clip statistics, a photo run's keypoint features)."""
    if not use_rules:
        return None
    path = Path(rules) if rules else run.rules
    if not path.exists():
        if rules:
            raise RunError(f"{path}: rules file not found.")
        return None
    ruleset = read_rules(path)
    ruleset.validate(hierarchy.leaves, statistic_names(skeleton) if run.is_clip_run(config) else skeleton.feature_names())
    return ruleset
