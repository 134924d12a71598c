"""Training data: person crops cached once per run, augmented in whole batches on the device.

Each photo is cropped once around its keypoint box with the widest training margin and kept as
uint8 in ``RUN/crops_<size>.npy``. A random training margin is then a zoom into that crop, done
together with flip, rotation and shift as one affine warp per batch (grid_sample), so no data
loader process competes with the model for the CPU, and on a GPU the batch never waits for disk.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import atomic
from ..branches.image import Preprocessing
from ..data.crops import crop_photo
from ..data.images import ImageLoadError, open_rgb
from ..pose.frontend import boxes_array, keypoints_array
from ..progress import progress_bar
from ..skeletons import Skeleton


@dataclass
class CropBank:
    images: np.ndarray      # N x S x S x 3 uint8, square crops with margin ``margin``
    keypoints: np.ndarray   # N x n x 3: x, y in crop pixels, visibility (0 where unknown)
    has_person: np.ndarray  # N bool
    margin: float

    @property
    def size(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return len(self.images)


def crop_one(path: str, box: np.ndarray | None, kp: np.ndarray | None, margin: float, size: int,
             n_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop (size x size x 3 uint8) and the keypoints in its pixel coordinates."""
    try:
        image = open_rgb(path)
    except ImageLoadError:
        return np.full((size, size, 3), 127, np.uint8), np.zeros((n_keypoints, 3))
    return crop_photo(image, box, kp, margin, size, n_keypoints)


def build_crop_bank(poses: pd.DataFrame, size: int, margin: float, skeleton: Skeleton, cache: Path | None = None,
                    show_progress: bool = True) -> CropBank:
    """Crops of every row of the poses table; reused from ``cache`` (.npz) when it matches."""
    if cache is not None and cache.exists():
        bank = _load_bank(cache, poses, size, margin)
        if bank is not None:
            return bank
    boxes, kps = boxes_array(poses), keypoints_array(poses, skeleton)
    images = np.zeros((len(poses), size, size, 3), np.uint8)
    points = np.zeros((len(poses), skeleton.n, 3))
    with progress_bar("crops", total=len(poses), enabled=show_progress) as advance:
        for i, path in enumerate(poses["path"]):
            person = poses["status"].iat[i] == "ok"
            images[i], points[i] = crop_one(path, boxes[i] if person else None, kps[i] if person else None, margin, size,
                                            skeleton.n)
            advance()
    bank = CropBank(images, points, (poses["status"] == "ok").to_numpy(), margin)
    if cache is not None:
        with atomic.atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, images=images, keypoints=points, has_person=bank.has_person,
                         meta=json.dumps({"sha256": list(poses["sha256"]), "size": size, "margin": margin}))
    return bank


def _load_bank(cache: Path, poses: pd.DataFrame, size: int, margin: float) -> CropBank | None:
    try:
        with np.load(cache, allow_pickle=False) as z:  # a cache file never runs code
            meta = json.loads(str(z["meta"]))
            if meta["sha256"] != list(poses["sha256"]) or meta["size"] != size or meta["margin"] != margin:
                return None
            return CropBank(z["images"], z["keypoints"], z["has_person"], margin)
    except (OSError, ValueError, KeyError):
        return None  # a stale or damaged cache is rebuilt


@dataclass
class Batch:
    x: torch.Tensor          # B x 3 x s x s, normalised
    kp: torch.Tensor         # B x n x 3, x/y in [-1, 1] of the output crop, visibility
    leaf: torch.Tensor       # B, leaf index after any flip swap
    has_person: torch.Tensor


class Augmenter:
    """Turns bank rows into model batches: random (training) or fixed (evaluation) framing."""

    def __init__(self, bank: CropBank, prep: Preprocessing, skeleton: Skeleton, device: torch.device, *,
                 train_margin: tuple[float, float], rotation: float = 10.0, flip_map: np.ndarray | None = None,
                 seed: int = 0):
        self.bank, self.prep, self.device = bank, prep, device
        self.out_size, self.eval_margin = prep.input_size, prep.eval_margin
        self.skeleton = skeleton
        self.mirror = torch.as_tensor(skeleton.mirror_index, device=device)
        self.train_margin, self.rotation = train_margin, rotation
        self.flip_map = None if flip_map is None else torch.as_tensor(flip_map, device=device)
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, idx: np.ndarray, leaf: np.ndarray, train: bool) -> Batch:
        b = len(idx)
        img = torch.from_numpy(self.bank.images[idx]).to(self.device, non_blocking=True)
        img = img.permute(0, 3, 1, 2).float().div_(255)
        kp = torch.from_numpy(self.bank.keypoints[idx]).to(self.device, torch.float32)
        leaf_t = torch.as_tensor(leaf, device=self.device)
        scale, angle, shift, flip = self._params(b, train)
        theta = self._theta(scale, angle, shift, flip)  # built on the CPU, then moved
        flip = flip.to(self.device)
        grid = F.affine_grid(theta, (b, 3, self.out_size, self.out_size), align_corners=False)
        x = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if train:
            x = self._colour(x)
        kp = self._warp_points(kp, theta, flip)
        if train and self.flip_map is not None:
            leaf_t = torch.where(flip, self.flip_map[leaf_t], leaf_t)
        x = self.prep.normalise(x)
        person = torch.from_numpy(self.bank.has_person[idx]).to(self.device)
        return Batch(x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x, kp, leaf_t, person)

    def _params(self, b: int, train: bool):
        m_max = self.bank.margin
        if not train:
            s = torch.full((b,), (1 + 2 * self.eval_margin) / (1 + 2 * m_max))
            return s, torch.zeros(b), torch.zeros(b, 2), torch.zeros(b, dtype=torch.bool)
        lo, hi = self.train_margin
        margin = lo + (hi - lo) * torch.rand(b, generator=self.gen)
        s = (1 + 2 * margin) / (1 + 2 * m_max) * (0.9 + 0.2 * torch.rand(b, generator=self.gen))
        angle = (torch.rand(b, generator=self.gen) * 2 - 1) * math.radians(self.rotation)
        shift = (torch.rand(b, 2, generator=self.gen) * 2 - 1) * 0.06
        flip = torch.rand(b, generator=self.gen) < 0.5
        return s, angle, shift, flip

    def _theta(self, scale, angle, shift, flip) -> torch.Tensor:
        """Output-to-input affine (normalised coordinates), as F.affine_grid expects."""
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        fx = torch.where(flip, -1.0, 1.0)
        theta = torch.stack([
            torch.stack([cos * fx, -sin, shift[:, 0]], 1),
            torch.stack([sin * fx, cos, shift[:, 1]], 1),
        ], 1)
        return theta.to(self.device)

    def _warp_points(self, kp: torch.Tensor, theta: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        size = self.bank.size
        p_in = kp[..., :2] / size * 2 - 1                    # crop pixels -> [-1, 1]
        A, t = theta[:, :, :2], theta[:, :, 2]
        p_out = torch.linalg.solve(A, (p_in - t[:, None]).transpose(1, 2)).transpose(1, 2)
        out = torch.cat([p_out, kp[..., 2:3]], -1)
        flipped = out[:, self.mirror]  # a mirrored person's left arm is now on the image's other side
        return torch.where(flip.to(kp.device)[:, None, None], flipped, out)

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        r = lambda lo, hi: (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=self.gen)).to(x.device)  # noqa: E731
        x = x * r(0.75, 1.25)                                        # brightness
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * r(0.75, 1.25) + mean                        # contrast
        grey = x.mean(1, keepdim=True)
        x = (x - grey) * r(0.7, 1.3) + grey                          # saturation
        return x.clamp_(0, 1)
