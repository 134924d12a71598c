"""The fused classifier a run produces: K fold CNNs + keypoint model + fusion + rules.

    clf = HybridPoseClassifier.load("runs/yoga8")
    table = clf.predict(["photo1.jpg", "photo2.png"])
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from . import atomic
from .crops import crop_square, cut
from .errors import RunError
from .features import features
from .fusion import Fusion, to_level
from .hierarchy import Hierarchy
from .images import ImageLoadError, open_rgb
from .keypoint_model import KeypointClassifier
from .pose import PoseCache, PoseEstimator, PoseResult, analyse_loaded, file_sha256, keypoints_array, make_table
from .refine import RuleSet
from .train.checkpoint import load_checkpoint
from .train.model import build_model, pick_device
from .train.stages import autocast

TOP_K = 5


@dataclass
class Branches:
    """Everything known about a batch of photos, for predict, evaluate and explain."""
    poses: pd.DataFrame
    image: dict[str, np.ndarray]
    keypoint_leaf: np.ndarray
    fused: dict[str, np.ndarray]
    leaf: list[str]
    rule: list[str]
    features: pd.DataFrame


class HybridPoseClassifier:
    def __init__(self, run: Path, hierarchy: Hierarchy, models: list[torch.nn.Module], meta: dict,
                 keypoint: KeypointClassifier, fusion: Fusion, rules: RuleSet | None, device: torch.device):
        self.run, self.hierarchy, self.models, self.meta = run, hierarchy, models, meta
        self.keypoint, self.fusion, self.rules, self.device = keypoint, fusion, rules, device
        self.mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
        self.cache_dir: Path | None = None
        self._estimator: PoseEstimator | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, run: str | Path, *, rules: str | Path | None = None, use_rules: bool = True,
             device: str = "auto") -> "HybridPoseClassifier":
        run = Path(run)
        config = _read_config(run)
        hierarchy = Hierarchy.from_dict(config["hierarchy"])
        dev = pick_device(device)
        models, meta = _load_fold_models(run, config, hierarchy, dev)
        keypoint = KeypointClassifier.load(run / "keypoint_model.json")
        fusion_path = run / "fusion.json"
        if not fusion_path.exists():
            raise RunError(f"{fusion_path}: missing; the run did not finish: run the same `hybridpose fit` command again.")
        fusion = Fusion.from_dict(hierarchy, atomic.read_json(fusion_path))
        ruleset = _load_rules(run, rules, use_rules, hierarchy)
        return cls(run, hierarchy, models, meta, keypoint, fusion, ruleset, dev)

    @property
    def levels(self) -> list[str]:
        return self.hierarchy.levels

    # ------------------------------------------------------------------ prediction
    def branches(self, paths: Sequence[str | Path]) -> Branches:
        return self.branches_from(*self.poses_and_crops(paths))

    def branches_from(self, poses: pd.DataFrame, crops: torch.Tensor) -> Branches:
        image = self.image_proba(crops)
        kp = keypoints_array(poses)
        kp_leaf = self.keypoint.predict_proba(kp)
        fused = self.fusion.predict_proba(image, kp_leaf)
        feats = features(kp)
        leaf_p = fused[self.hierarchy.leaf_level]
        leaves = self.hierarchy.leaves
        leaf = [leaves[i] for i in leaf_p.argmax(1)]
        rule = [""] * len(leaf)
        if self.rules is not None and self.rules.rules:
            decided, names = self.rules.apply(leaf_p, leaves, feats)
            for i, (d, n) in enumerate(zip(decided, names)):
                if d is not None:
                    leaf[i], rule[i] = d, n
        return Branches(poses, image, kp_leaf, fused, leaf, rule, feats)

    def predict_proba(self, paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
        """Hierarchy-consistent fused probabilities per level (before rules)."""
        return self.branches(paths).fused

    def predict(self, paths: Sequence[str | Path], batch_size: int = 32, show_progress: bool = False) -> pd.DataFrame:
        return pd.concat(list(self.iter_predict(paths, batch_size, show_progress)), ignore_index=True)

    def iter_predict(self, paths: Sequence[str | Path], batch_size: int = 32, show_progress: bool = False,
                     detailed: bool = False) -> Iterator[pd.DataFrame]:
        """predictions.csv rows, one DataFrame per batch (memory stays flat however many photos)."""
        from .progress import progress_bar

        paths = [str(p) for p in paths]
        with progress_bar("predict", total=len(paths), enabled=show_progress) as advance:
            for i in range(0, len(paths), batch_size):
                chunk = paths[i : i + batch_size]
                b = self.branches(chunk)
                rows = self._rows(b)
                yield pd.concat([rows, self._detail(b)], axis=1) if detailed else rows
                advance(len(chunk))

    def _rows(self, b: Branches) -> pd.DataFrame:
        h, leaves = self.hierarchy, self.hierarchy.leaves
        leaf_p = b.fused[h.leaf_level]
        frame = pd.DataFrame({"path": b.poses["path"], "status": b.poses["status"], "reason": b.poses["reason"]})
        for lv in h.levels:
            frame[lv] = [h.ancestor(leaf, lv) for leaf in b.leaf]
        index = {c: j for j, c in enumerate(leaves)}
        frame["confidence"] = np.round([leaf_p[r, index[leaf]] for r, leaf in enumerate(b.leaf)], 4)
        order = np.argsort(-leaf_p, axis=1)[:, :TOP_K]
        for k in range(min(TOP_K, len(leaves))):
            frame[f"top{k + 1}"] = [leaves[j] for j in order[:, k]]
            frame[f"top{k + 1}_prob"] = np.round(leaf_p[np.arange(len(order)), order[:, k]], 4)
        frame["rule"] = b.rule
        frame["image_top"] = [leaves[j] for j in b.image[h.leaf_level].argmax(1)]
        ok = np.isfinite(b.keypoint_leaf).all(1)
        frame["keypoint_top"] = [leaves[j] if o else "" for j, o in zip(np.nan_to_num(b.keypoint_leaf).argmax(1), ok)]
        unreadable = ~b.poses["status"].isin(["ok", "no_person"]).to_numpy()
        for col in [*h.levels, "confidence", "image_top", *[c for c in frame if c.startswith("top")]]:
            frame.loc[unreadable, col] = None  # nothing to label in a file that is not an image
        return frame

    def _detail(self, b: Branches) -> pd.DataFrame:
        """Per-branch probabilities in the oof_predictions.csv layout (for evaluate)."""
        h = self.hierarchy
        kp = {lv: to_level(b.keypoint_leaf, h, lv) for lv in h.levels}
        cols = {}
        for name, probs in (("image", b.image), ("keypoint", kp), ("fused", b.fused)):
            for lv in h.levels:
                for j, c in enumerate(h.classes(lv)):
                    cols[f"{name}:{lv}:{c}"] = probs[lv][:, j]
        for lv in h.levels:
            cols[f"rules_{lv}"] = [h.ancestor(leaf, lv) for leaf in b.leaf]
        return pd.DataFrame(cols, index=b.poses.index)

    # ------------------------------------------------------------------ parts
    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 B x 3 x H x W crops -> the backbone's normalised input, on the model's device."""
        return ((crops.float() / 255 - self.mean) / self.std).to(self.device)

    def image_proba(self, crops: torch.Tensor) -> dict[str, np.ndarray]:
        """Mean softmax of the K fold models, per level."""
        x = self.normalise(crops)
        sums = {lv: 0.0 for lv in self.levels}
        with torch.inference_mode(), autocast(self.device, True):
            for model in self.models:
                out = model.forward_all(x)
                for lv in self.levels:
                    sums[lv] = sums[lv] + torch.softmax(out.logits[lv].float(), 1).cpu().numpy()
        return {lv: s / len(self.models) for lv, s in sums.items()}

    def poses_and_crops(self, paths: Sequence[str | Path]) -> tuple[pd.DataFrame, torch.Tensor]:
        """Pose table rows and crops for a batch, decoding each photo once."""
        size, margin = self.meta["input_size"], self.meta["eval_margin"]
        shas = [file_sha256(p) for p in paths]
        cache = PoseCache(self.cache_dir)
        try:
            cached = cache.get_many([s for s in shas if s])
            results, crops, fresh = [], np.zeros((len(paths), size, size, 3), np.uint8), []
            for i, (path, sha) in enumerate(zip(paths, shas)):
                result, crops[i] = self._one(path, sha, cached.get(sha) if sha else None, size, margin)
                results.append(result)
                if sha and sha not in cached:
                    fresh.append((sha, result))
            cache.put_many(fresh)
        finally:
            cache.close()
        poses = make_table([str(p) for p in paths], shas, results)
        return poses, torch.from_numpy(crops).permute(0, 3, 1, 2)

    def _one(self, path, sha, cached: PoseResult | None, size: int, margin: float) -> tuple[PoseResult, np.ndarray]:
        blank = np.full((size, size, 3), 127, np.uint8)
        if sha is None:
            return PoseResult("unreadable", "file cannot be read (missing or no permission)"), blank
        try:
            image = open_rgb(path)
        except ImageLoadError as e:
            return cached or PoseResult(e.status, e.reason), blank
        result = cached or analyse_loaded(image, self.estimator)
        return result, np.asarray(cut(image, crop_square(result.box, image.width, image.height, margin), size))

    @property
    def estimator(self) -> PoseEstimator:
        if self._estimator is None:
            self._estimator = PoseEstimator()
        return self._estimator


def _read_config(run: Path) -> dict:
    path = run / "config.json"
    if not path.exists():
        raise RunError(f"{run}: not a run directory (no config.json); give the --out folder of `hybridpose fit`.")
    try:
        config = atomic.read_json(path)
    except ValueError:
        raise RunError(f"{path}: damaged (not JSON); run `hybridpose fit` again.") from None
    if config.get("format") != "hybridpose-run":
        raise RunError(f"{path}: not a hybridpose run.")
    return config


def _load_fold_models(run: Path, config: dict, hierarchy: Hierarchy, device: torch.device):
    models, meta = [], None
    sizes = {lv: len(hierarchy.classes(lv)) for lv in hierarchy.levels}
    for k in range(1, int(config["folds"]) + 1):
        path = run / f"fold_{k}" / "stage3.pt"
        if not path.exists():
            continue
        ckpt = load_checkpoint(path, run_id=config["run_id"], fold=k, stage=3)
        model, _ = build_model(ckpt["meta"]["backbone"], sizes, load_weights=False)
        model.load_state_dict(ckpt["state_dict"])
        models.append(model.to(device).eval())
        meta = ckpt["meta"]
    if not models:
        raise RunError(f"{run}: no finished fold model (fold_*/stage3.pt); run `hybridpose fit` to completion first.")
    return models, meta


def _load_rules(run: Path, rules: str | Path | None, use_rules: bool, hierarchy: Hierarchy) -> RuleSet | None:
    if not use_rules:
        return None
    path = Path(rules) if rules else run / "rules.yaml"
    if not path.exists():
        if rules:
            raise RunError(f"{path}: rules file not found.")
        return None
    ruleset = RuleSet.load(path)
    from .features import feature_names

    ruleset.validate(hierarchy.leaves, feature_names())
    return ruleset
