"""The image branch: the K fold networks of a run, averaged, on person crops.

Its input preprocessing (crop size, evaluation margin, pixel normalisation) is one
``Preprocessing``, read from the checkpoints, that training uses too. The branch is fitted per
fold by the fold runner (``hybridpose.train``), which writes ``fold_k/stage3.pt``; ``load`` reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..data.hierarchy import Hierarchy
from ..errors import RunError
from ..run.folder import RunFolder
from . import register

if TYPE_CHECKING:  # PyTorch is imported when a network is loaded: a bundle predicts without it
    import torch

    from ..nets.network import PoseNet

FINAL_STAGE = 3


@dataclass(frozen=True)
class Preprocessing:
    """How a crop becomes the network's input: the one definition for training and prediction."""
    input_size: int
    eval_margin: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalise(self, x01: "torch.Tensor") -> "torch.Tensor":
        """B x 3 x H x W floats in [0, 1] -> the backbone's normalised input (same device)."""
        import torch

        mean = torch.as_tensor(self.mean, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        return (x01 - mean) / std

    @classmethod
    def from_meta(cls, meta: dict) -> "Preprocessing":
        return cls(int(meta["input_size"]), float(meta["eval_margin"]), tuple(meta["mean"]), tuple(meta["std"]))


def final_folds(run: RunFolder, config: dict, partial: bool = False) -> list[int]:
    """The folds whose final-stage network is there; a fold missing is an error unless ``partial``."""
    k = int(config["folds"])
    missing = [f for f in range(1, k + 1) if not run.checkpoint(f, FINAL_STAGE).exists()]
    if len(missing) == k:
        raise RunError(f"{run.root}: no finished fold model (fold_*/stage{FINAL_STAGE}.pt); run "
                       f"`{run.fit_command(config)}` to completion first.")
    if missing and not partial:
        raise RunError(f"{run.root}: folds {missing} of {k} have no model (fold_<k>/stage{FINAL_STAGE}.pt); run "
                       f"`{run.fit_command(config)}` to finish them, or pass --partial to predict with the other folds.")
    return [f for f in range(1, k + 1) if f not in missing]


@register
class ImageBranch:
    name = "image"
    input = "crops"

    def __init__(self, models: Sequence[PoseNet] = (), preprocessing: Preprocessing | None = None,
                 folds: Sequence[int] = (), n_folds: int = 0, device: "str | torch.device" = "cpu"):
        import torch

        self.models_ = list(models)
        self.preprocessing_ = preprocessing
        self.folds_ = list(folds)                       # the folds whose network was loaded
        self.n_folds_ = n_folds or max(self.folds_, default=0)  # the folds of the run
        self.device = torch.device(device)

    @classmethod
    def load(cls, run: RunFolder, config: dict, *, device: str = "auto", partial: bool = False) -> "ImageBranch":
        """The final-stage network of every fold; a fold missing is an error unless ``partial``."""
        import torch

        from ..nets.network import build_model, load_checkpoint, pick_device

        sizes = Hierarchy.from_dict(config["hierarchy"]).level_sizes()
        dev = pick_device(device)
        k = int(config["folds"])
        models, meta, folds = [], {}, final_folds(run, config, partial)
        for f in folds:
            ckpt = load_checkpoint(run.checkpoint(f, FINAL_STAGE), run_id=config["run_id"], fold=f, stage=FINAL_STAGE,
                                   fix=run.fit_command(config))
            meta = ckpt["meta"]
            model, _ = build_model(meta["backbone"], sizes, load_weights=False, input_size=int(meta["input_size"]),
                                   timm_kwargs=meta.get("timm_kwargs"))
            model.load_state_dict(ckpt["state_dict"])
            # channels-last: PyTorch's CPU convolutions (oneDNN) run it ~1.6x faster here, as cuDNN's do
            models.append(model.to(dev, memory_format=torch.channels_last).eval())
        return cls(models, Preprocessing.from_meta(meta), folds, k, dev)

    @property
    def missing_folds(self) -> list[int]:
        return [f for f in range(1, self.n_folds_ + 1) if f not in self.folds_]

    def set_threads(self, threads: int) -> int:
        """Run the networks on ``threads`` CPU threads (PyTorch's, process-wide); returns the count before."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        return before

    def normalise(self, crops: "torch.Tensor | np.ndarray") -> "torch.Tensor":
        """uint8 B x 3 x H x W crops (tensor or array) -> normalised input on the branch's device."""
        import torch

        x = self.preprocessing_.normalise(torch.as_tensor(crops).to(self.device).float() / 255)
        return x.contiguous(memory_format=torch.channels_last)

    def predict_level_proba(self, crops: "torch.Tensor | np.ndarray", hierarchy: Hierarchy | None = None) -> dict[str, np.ndarray]:
        """Mean softmax of the fold networks, per level."""
        import torch

        from ..nets.network import level_probs

        x = self.normalise(crops)
        sums: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for model in self.models_:
                probs, _ = level_probs(model, x)
                for lv, p in probs.items():
                    sums[lv] = sums.get(lv, 0.0) + p.cpu().numpy()
        return {lv: s / len(self.models_) for lv, s in sums.items()}

    def predict_proba(self, crops: "torch.Tensor | np.ndarray") -> np.ndarray:
        return self.predict_level_proba(crops)[self.models_[0].levels[0]]

    def embed(self, crops: "torch.Tensor | np.ndarray") -> np.ndarray:
        """Mean pooled backbone embedding over the fold networks."""
        import torch

        x = self.normalise(crops)
        with torch.inference_mode():
            return np.mean([m.forward_all(x).embedding.float().cpu().numpy() for m in self.models_], axis=0)
