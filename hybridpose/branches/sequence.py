"""The sequence branch: a small temporal CNN over a clip's keypoint track, scikit-learn style.

X is a list of clips, each a (T, n, 4) array of the skeleton's pixel keypoints in the order the frames came
(NaN rows: no skeleton in that frame). The frames with a skeleton are resampled to ``length`` steps, and each
step is described by

* where every keypoint is, relative to the clip's median centre, in units of the clip's median skeleton size
  (palm, torso), y up: the path, which is where a swipe or a circle lives;
* the same path divided by how far the skeleton moved over the clip: the drawn shape, whatever its size;
* every keypoint relative to its own frame's centre and size: the shape;
* with ``named=True``, the skeleton's named features (angles, distances; the clip keypoint branch has them).

Unlike the clip statistics, the network sees the order of the frames: a clip played backwards is another
clip. Augmentation respects motion: time warping (a random smooth change of pace and a little trimmed at
either end), jitter, small rotation and scale; mirroring only with declared flip pairs (a mirrored left swipe
is a right swipe). A clip with no skeleton in any frame gets a NaN row: the branch abstains.
"""
from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .. import atomic
from ..data.hierarchy import Hierarchy
from ..errors import RunError
from ..skeletons import Skeleton, get_skeleton
from . import leaf_to_levels, register
from ._files import model_path, read_model_file, write_model_file

if TYPE_CHECKING:
    import torch

    from ..run.folder import RunFolder

FILENAME = "sequence_model.json"
WEIGHTS = "sequence_model.pt"
GRAPH = "sequence_model.onnx"  # in an exported bundle: the seeds' networks in one graph, read by ONNX Runtime
FORMAT = "hybridpose-sequence-model"


def resample(kp: np.ndarray, sk: Skeleton, length: int, warp: np.ndarray | None = None) -> np.ndarray | None:
    """(length, n, 4): the track from its first to its last frame with a skeleton, linearly interpolated at
    ``length`` evenly spaced times (or at the monotone positions ``warp`` in [0, 1]) between the frames with a
    skeleton on either side; None when no frame has one. Frames keep their place in time (a clip's frames are
    evenly spaced): a gap where the hand was lost stays a gap, not squeezed out (on egogestar, 5 place folds,
    the branch alone went from 0.918 to 0.927 with this)."""
    kp = np.asarray(kp, dtype=np.float64).reshape(-1, sk.n, 4)
    at = np.flatnonzero(sk.found(kp))
    if not len(at):
        return None
    kp = kp[at]
    pos = at[0] + (np.linspace(0, 1, length) if warp is None else warp) * (at[-1] - at[0])
    lo = np.clip(np.searchsorted(at, pos, side="right") - 1, 0, len(at) - 1)
    hi = np.minimum(lo + 1, len(at) - 1)
    w = np.clip((pos - at[lo]) / np.maximum(at[hi] - at[lo], 1), 0, 1)[:, None, None]
    a, b = kp[lo], kp[hi]
    return np.where(np.isfinite(b), a * (1 - w) + b * w, a)  # a part missing in one of them: the nearer


def step_features(seqs: np.ndarray, sk: Skeleton, named: bool = False) -> np.ndarray:
    """(N, length, C) per-step inputs of (N, length, n, 4) resampled clips: path, path scaled by the clip's motion,
    shape, and with ``named`` the skeleton's named features (NaN where undefined). Without them by default: on
    egogestar's 110 clips (5 group folds) out-of-fold top-1 was 0.900 without and 0.882 with them."""
    seqs = np.asarray(seqs, dtype=np.float64)
    N, L = seqs.shape[:2]
    flat = seqs.reshape(N * L, sk.n, 4)
    xy = seqs[..., :2] * np.array([1.0, -1.0])  # y up
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a part never seen (a hand of two_hands)
        size = sk.pixel_size(flat).reshape(N, L)
        unit = np.nanmedian(size, axis=1)
        unit = np.where(np.isfinite(unit) & (unit > 0), unit, 1.0)[:, None, None, None]
        centre = np.nanmedian(np.nanmean(xy, axis=2), axis=1)[:, None, None, :]
        path = (xy - centre) / unit
        own = np.nanmean(xy, axis=2, keepdims=True)
        size = np.where(np.isfinite(size) & (size > 0), size, unit[:, :, 0, 0])[..., None, None]
        shape = (xy - own) / size
        # the path again, scaled by how far the skeleton moved in the clip (at least one size): the drawn
        # shape whatever its size, as a user draws a small or a large circle
        centres = own[:, :, 0]
        extent = np.nanmax(np.nanmax(centres, axis=1) - np.nanmin(centres, axis=1), axis=-1)[:, None, None, None]
        drawn = path / np.maximum(np.where(np.isfinite(extent), extent / unit, 1.0), 1.0)
    parts = [path.reshape(N, L, -1), drawn.reshape(N, L, -1), shape.reshape(N, L, -1)]
    if named:
        parts.append(sk.features(flat).to_numpy(dtype=np.float64).reshape(N, L, -1))
    return np.concatenate(parts, axis=2)


@contextmanager
def one_thread() -> Iterator[None]:
    """A network this small runs fastest on one thread: with two, any other busy process makes torch's threads
    wait for each other (measured: 5 s on one thread, 47 s on two beside a busy core)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _net(channels: int, classes: int, width: int) -> "torch.nn.Module":
    import torch
    from torch import nn

    class TemporalCNN(nn.Module):
        def __init__(self):
            super().__init__()
            block = lambda i, o, k: [nn.Conv1d(i, o, k, padding=k // 2), nn.BatchNorm1d(o), nn.ReLU()]  # noqa: E731
            self.body = nn.Sequential(*block(channels, width, 5), *block(width, width, 5), nn.MaxPool1d(2),
                                      *block(width, 2 * width, 3), *block(2 * width, 2 * width, 3))
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * width, classes))

        def forward(self, x):
            h = self.body(x)
            return self.head(torch.cat([h.mean(-1), h.amax(-1)], 1))

    return TemporalCNN()


@register
class SequenceClassifier:
    name = "sequence"
    input = "clip_sequence"

    def __init__(self, length: int = 32, width: int = 48, epochs: int = 120, batch_size: int = 32,
                 learning_rate: float = 3e-3, weight_decay: float = 1e-3, seeds: int = 3, named: bool = False,
                 flip_pairs: dict[str, str] | None = None, seed: int = 0, skeleton: str = "body", **_ignored):
        self.params = dict(length=length, width=width, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, weight_decay=weight_decay, seeds=seeds, named=named)
        self.flip_pairs = dict(flip_pairs or {})
        self.seed = seed
        self.skeleton = skeleton
        self.classes_: list[str] = []
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.frames_ = 16  # the training clips' median frame count: the window of a running label
        self.seconds_: float | None = None  # their median length in seconds (fit with seconds): the same, in time
        self.models_: list = []
        self.session_ = None  # an ONNX Runtime session over GRAPH, which replaces models_ (a bundle)

    # ------------------------------------------------------------------ inputs
    @property
    def skeleton_(self) -> Skeleton:
        return get_skeleton(self.skeleton)

    def _inputs(self, seqs: list[np.ndarray]) -> np.ndarray:
        """(N, C, length) standardised inputs (NaN -> 0, the mean) of resampled clips."""
        f = (step_features(np.stack(seqs), self.skeleton_, self.params["named"]) - self.mean_) / self.std_
        return np.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0).transpose(0, 2, 1).astype(np.float32)

    def _augment(self, kp: np.ndarray, rng: np.random.Generator, mirror: bool) -> np.ndarray | None:
        sk, n = self.skeleton_, self.params["length"]
        a, b = rng.uniform(0, 0.1), 1 - rng.uniform(0, 0.1)
        pace = np.cumsum(rng.uniform(0.6, 1.4, n))
        warp = a + (b - a) * (pace - pace[0]) / (pace[-1] - pace[0])
        seq = resample(kp, sk, n, warp)
        if seq is None:
            return None
        seq = seq.copy()
        centre = np.nanmean(seq[..., :2].reshape(-1, 2), axis=0)
        t = np.radians(rng.uniform(-10, 10))
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * rng.uniform(0.9, 1.1)
        unit = np.nanmedian(sk.pixel_size(seq))
        unit = unit if np.isfinite(unit) else 1.0
        seq[..., :2] = (seq[..., :2] - centre) @ rot.T + centre + rng.normal(0, 0.02 * unit, seq[..., :2].shape)
        return sk.mirror_keypoints(seq, 2 * centre[0]) if mirror else seq

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Sequence[np.ndarray], y: Sequence[str], classes: Sequence[str] | None = None,
            seconds: Sequence[float] | None = None) -> "SequenceClassifier":
        """``seconds``: each clip's length, so that a running label looks back as far as a training clip lasts
        whatever the sampling (a short clip gets more frames per second than a long one)."""
        sk, n = self.skeleton_, self.params["length"]
        self.classes_ = sorted(classes if classes is not None else set(y))
        index = {c: i for i, c in enumerate(self.classes_)}
        seqs = [resample(k, sk, n) for k in X]
        keep = [i for i, s in enumerate(seqs) if s is not None]
        if not keep:
            raise RunError("the sequence branch has no clip with a skeleton to train on.")
        f = step_features(np.stack([seqs[i] for i in keep]), sk, self.params["named"])
        f = f.reshape(-1, f.shape[-1])
        with np.errstate(all="ignore"):
            self.mean_ = np.nan_to_num(np.nanmean(f, 0))
            std = np.nanstd(f, 0)
        self.std_ = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        clips = [np.asarray(X[i], dtype=np.float64) for i in keep]
        self.frames_ = int(np.median([len(c) for c in clips]))
        if seconds is not None:
            span = np.asarray([seconds[i] for i in keep], dtype=np.float64)
            self.seconds_ = float(np.median(span[np.isfinite(span)])) if np.isfinite(span).any() else None
        labels = np.array([index[str(y[i])] for i in keep])
        mirrored = np.array([index.get(self.flip_pairs.get(self.classes_[c], self.classes_[c]), c) for c in labels])
        with one_thread():
            self.models_ = [self._train(clips, labels, mirrored, self.seed + s) for s in range(self.params["seeds"])]
        return self

    def _train(self, clips: list[np.ndarray], labels: np.ndarray, mirrored: np.ndarray, seed: int):
        import torch

        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        p = self.params
        x0 = self._inputs([resample(c, self.skeleton_, p["length"]) for c in clips[:1]])
        net = _net(x0.shape[1], len(self.classes_), p["width"])
        opt = torch.optim.AdamW(net.parameters(), lr=p["learning_rate"], weight_decay=p["weight_decay"])
        steps = p["epochs"] * max(1, int(np.ceil(len(clips) / p["batch_size"])))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["learning_rate"], total_steps=steps)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        net.train()
        for _ in range(p["epochs"]):
            order = rng.permutation(len(clips))
            for start in range(0, len(order), p["batch_size"]):
                idx = order[start:start + p["batch_size"]]
                if len(idx) < 2:
                    continue  # batch norm needs two
                flip = (rng.random(len(idx)) < 0.5) & bool(self.flip_pairs)
                seqs = [self._augment(clips[i], rng, m) for i, m in zip(idx, flip)]
                x = torch.from_numpy(self._inputs(seqs))
                t = torch.from_numpy(np.where(flip, mirrored[idx], labels[idx]))
                opt.zero_grad()
                loss_fn(net(x), t).backward()
                opt.step()
                sched.step()
        return net.eval()

    def predict_proba(self, X: Sequence[np.ndarray]) -> np.ndarray:
        seqs = [resample(k, self.skeleton_, self.params["length"]) for k in X]
        out = np.full((len(seqs), len(self.classes_)), np.nan)
        ok = [i for i, s in enumerate(seqs) if s is not None]
        if ok:
            out[ok] = self._forward(self._inputs([seqs[i] for i in ok]))
        return out

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """Mean softmax of the seeds' networks on (N, C, length) inputs."""
        if self.session_ is not None:
            return self.session_.run(None, {"steps": x})[0].astype(np.float64)
        import torch

        with torch.no_grad(), one_thread():
            t = torch.from_numpy(x)
            return np.mean([torch.softmax(m(t), 1).numpy() for m in self.models_], axis=0)

    def running_proba(self, kp: np.ndarray, window: int | None = None, times: Sequence[float] | None = None) -> np.ndarray:
        """(T, classes): at each frame of a (T, n, 4) track, the probabilities of its last ``window`` frames
        (default: with the frames' ``times`` and a model that knows its clips' length, the frames of the last
        ``seconds_``; else ``frames_``): a gesture is recognised while it is drawn, from what has been seen."""
        kp = np.asarray(kp, dtype=np.float64)
        if window is None and times is not None and self.seconds_:
            t = np.asarray(times, dtype=np.float64)
            starts = np.searchsorted(t, t - self.seconds_, side="left")
            return self.predict_proba([kp[s:i + 1] for i, s in enumerate(starts)])
        w = window or self.frames_
        return self.predict_proba([kp[max(0, i - w + 1):i + 1] for i in range(len(kp))])

    def predict_level_proba(self, X: Sequence[np.ndarray], hierarchy: Hierarchy) -> dict[str, np.ndarray]:
        return leaf_to_levels(self.predict_proba(X), hierarchy)

    # ------------------------------------------------------------------ files
    def save(self, path: "str | Path | RunFolder") -> None:
        meta = model_path(path, FILENAME)
        atomic.save_torch(meta.with_name(WEIGHTS), [m.state_dict() for m in self.models_])
        write_model_file(meta, FORMAT, {"classes": self.classes_, "params": self.params, "skeleton": self.skeleton,
                                        "flip_pairs": self.flip_pairs, "seed": self.seed, "channels": len(self.mean_),
                                        "frames": self.frames_, "seconds": self.seconds_,
                                        "mean": self.mean_.tolist(), "std": self.std_.tolist()})

    def write_onnx(self, path: "str | Path | RunFolder") -> Path:
        """The seeds' networks as one ONNX graph beside the model file (``GRAPH``): float32 steps N x C x length
        in (``_inputs``), their mean softmax out. ``load`` prefers it where ONNX Runtime is installed."""
        import torch

        graph = model_path(path, FILENAME).with_name(GRAPH)
        nets = torch.nn.ModuleList(self.models_)

        class Seeds(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.nets = nets

            def forward(self, x):
                return sum(torch.softmax(n(x), 1) for n in self.nets) / len(self.nets)

        x = torch.zeros(2, len(self.mean_), self.params["length"])
        with atomic.atomic_path(graph) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            torch.onnx.export(Seeds().eval(), (x,), str(tmp), dynamo=False, input_names=["steps"],
                              output_names=["proba"], opset_version=17,
                              dynamic_axes={"steps": {0: "batch"}, "proba": {0: "batch"}})
        return graph

    @classmethod
    def load(cls, path: "str | Path | RunFolder", config: dict | None = None, **_options) -> "SequenceClassifier":
        meta = model_path(path, FILENAME)
        d, _ = read_model_file(meta, FORMAT, ("classes", "params", "mean", "std", "channels"), "sequence model")
        obj = cls(**d["params"], flip_pairs=d.get("flip_pairs"), seed=d.get("seed", 0),
                  skeleton=d.get("skeleton", "body"))
        obj.classes_, obj.mean_, obj.std_ = d["classes"], np.asarray(d["mean"]), np.asarray(d["std"])
        obj.frames_ = int(d.get("frames", obj.frames_))
        obj.seconds_ = float(d["seconds"]) if isinstance(d.get("seconds"), (int, float)) and d["seconds"] > 0 else None
        graph = meta.with_name(GRAPH)
        if graph.exists() and importlib.util.find_spec("onnxruntime") is not None:
            from ..engines.onnx_graph import check_external_data
            from ..engines.ort import open_session

            check_external_data(graph)  # a bundle's graph reads nothing outside its folder
            obj.session_ = open_session(graph, threads=1)  # as one_thread: this network is small
            return obj
        try:
            states = atomic.load_torch(meta.with_name(WEIGHTS))
            obj.models_ = []
            for s in states:
                net = _net(d["channels"], len(obj.classes_), d["params"]["width"])
                net.load_state_dict(s)
                obj.models_.append(net.eval())
        except Exception:  # missing, damaged, or not plain weights: one answer
            raise RunError(f"{meta.with_name(WEIGHTS)}: not a hybridpose sequence model (missing, corrupt or not "
                           "plain weights; nothing of it ran); run `hybridpose fit` again.") from None
        return obj
