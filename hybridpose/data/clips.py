"""Clips: a video file or a folder of frames is one sample.

* ``list_samples(path)``: what a path given to ``predict`` holds: clips and loose photos;
* ``load_clip_dataset(root)``: a class-folder tree whose samples are clips (``DATA/<class>/<clip>.mp4``,
  ``DATA/<class>/<clip>/*.jpg``) or photos (a one-frame clip);
* ``FrameCache``: the sampled frames of a video as JPEG files in the cache, keyed by (content hash of
  the video, sampling), so that a rerun decodes nothing and the training code reads frames like photos.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import DatasetError
from .hierarchy import Hierarchy, read_hierarchy_csv
from .images import IMAGE_EXTENSIONS, ImageLoadError, load_image
from .sources import DATASET_FILES, classify, link_loops, loop_entry, walk
from .video import FRAME_MAX_SIDE, Sampling, VideoError, is_video, iter_frames, probe


def natural_key(path: Path) -> list:
    """frame2 before frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """The photos directly in ``folder``, in natural order (hidden files skipped)."""
    try:
        files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
                 and p.is_file()]
    except OSError:
        return []
    return sorted(files, key=natural_key)


# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One input: a clip (``video`` or ``frames``) or a ``photo`` (a clip of one frame)."""
    path: Path
    kind: str              # video | frames | photo
    status: str = ""       # "" = readable; otherwise why not (as a photo's)
    reason: str = ""

    @property
    def is_clip(self) -> bool:
        return self.kind != "photo"


def sample_of(path: Path) -> Sample:
    if path.is_dir():
        return Sample(path, "frames")
    entry = classify(path)
    if is_video(path):
        return Sample(path, "video", *(("", "") if entry.status == "unsupported" else (entry.status, entry.reason)))
    return Sample(path, "photo", entry.status, entry.reason)


def list_samples(path: str | Path, *, frames_folder: bool = False) -> list[Sample]:
    """A video, a frame folder (``frames_folder``: the given folder itself is one clip), or a folder holding
    videos, frame folders (sub-folders of photos) and photos; sorted. Files that are neither get their row.
    Links to folders are followed; one to a folder that holds it (a loop) gets a ``broken_link`` row."""
    path = Path(path)
    if not path.is_dir():
        return [sample_of(path)]
    if frames_folder and frame_files(path):
        return [Sample(path, "frames")]
    out: list[Sample] = []
    for child in sorted(path.iterdir(), key=natural_key):
        if child.name.startswith(".") or child.name in DATASET_FILES:
            continue
        if child.is_dir() and link_loops(child):
            loop = loop_entry(child)
            out.append(Sample(child, "frames", loop.status, loop.reason))
        elif child.is_dir():
            if frame_files(child):
                out.append(Sample(child, "frames"))
            else:
                out += list_samples(child)
        else:
            out.append(sample_of(child))
    return out


def has_videos(root: str | Path) -> bool:
    """Whether a data folder holds a video anywhere (the data set is then one of clips)."""
    return any(is_video(p) for p in walk(Path(root)))


# --------------------------------------------------------------------------- labelled clips


@dataclass
class ClipDataset:
    root: Path
    samples: list[Sample]
    labels: list[str]
    hierarchy: Hierarchy
    flip_pairs: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)


def load_clip_dataset(root: str | Path, hierarchy: str | Path | None = None) -> ClipDataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; give a folder with one sub-folder per class holding clips.")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders found; put each class's clips in a folder named after the class.")
    samples, labels, empty = [], [], []
    for d in class_dirs:
        found = [s for s in list_samples(d) if s.kind != "photo" or not s.status]
        if not found:
            empty.append(d.name)
        samples += found
        labels += [d.name] * len(found)
    if empty:
        raise DatasetError(f"{root}: class folders {empty} hold no clips (videos {', '.join(sorted(_video_ext()))} "
                           "or folders of frames) and no photos; add clips or remove the folders.")
    leaves = [d.name for d in class_dirs]
    hfile = Path(hierarchy) if hierarchy else root / "hierarchy.csv"
    h = read_hierarchy_csv(hfile, leaves) if hfile.exists() else Hierarchy.flat(leaves)
    return ClipDataset(root, samples, labels, h)


def _video_ext():
    from .video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


# --------------------------------------------------------------------------- frames of a clip


@dataclass
class ClipFrames:
    """The sampled frames of one clip: files the photo pipeline reads, their index and time."""
    status: str
    reason: str
    paths: list[str]
    index: list[int]
    time: list[float]


def clip_frames(sample: Sample, sampling: Sampling, cache: "FrameCache") -> ClipFrames:
    """Frames of any sample as files: a video's from the frame cache, a frame folder's and a photo's as they are."""
    if sample.status:
        return ClipFrames(sample.status, sample.reason, [], [], [])
    if sample.kind == "video":
        return cache.frames(sample.path, sampling)
    files = [sample.path] if sample.kind == "photo" else frame_files(sample.path)
    pick = select_frames(len(files), sampling, rate=sampling.fps) if sample.kind == "frames" else [0]
    if not files:
        return ClipFrames("unreadable", "the folder holds no photos", [], [], [])
    # a frame folder has no clock: its frames are taken as sampled at --fps (every one, unless --frames N)
    return ClipFrames("ok", "", [str(files[i]) for i in pick], list(pick), [i / sampling.fps for i in pick])


def select_frames(n: int, sampling: Sampling, rate: float) -> list[int]:
    """Which of ``n`` frames (at ``rate`` per second) a sampling keeps."""
    if n <= 0:
        return []
    even = sampling.count(n, rate)
    if even:
        return np.unique(np.linspace(0, n - 1, even).round().astype(int)).tolist()
    step = max(1, int(round(rate / sampling.fps)))
    return list(range(0, n, step))


class FramePicker:
    """``per_clip`` frames spread evenly over a stream of frames whose length is not known in advance, in
    bounded memory: every ``stride``-th frame offered is kept (the stride doubling, and the kept thinned, when
    more than ``4 * per_clip`` are held), then ``per_clip`` are spread over those kept. Up to ``4 * per_clip``
    frames this is exactly ``linspace`` over all of them. ``per_clip`` 0: every frame. ``fit`` (``pick_frames``)
    and ``predict`` pick with it, so the image branch sees the same frames of a clip in both."""

    def __init__(self, per_clip: int):
        self.per_clip, self.cap = per_clip, 4 * per_clip
        self.stride, self.seen = 1, 0
        self.kept: list[tuple[int, object]] = []

    def offer(self, make) -> None:
        """The next frame; ``make()`` (its crop, ...) is called only where it is kept."""
        j, self.seen = self.seen, self.seen + 1
        if j % self.stride:
            return
        self.kept.append((j, make()))
        if self.per_clip and len(self.kept) > self.cap:
            self.stride *= 2
            self.kept = [(i, x) for i, x in self.kept if i % self.stride == 0]

    def chosen(self) -> list[tuple[int, object]]:
        """(position among the offered frames, what ``make`` gave) of the frames picked."""
        if not self.per_clip or len(self.kept) <= self.per_clip:
            return list(self.kept)
        at = np.unique(np.linspace(0, len(self.kept) - 1, self.per_clip).round().astype(int))
        return [self.kept[i] for i in at]


def pick_frames(found, per_clip: int) -> np.ndarray:
    """Which of a clip's frames the image branch uses: ``per_clip`` spread over the frames with a skeleton
    (``found``), or over all of them where none has one (``FramePicker``; 0: every such frame)."""
    found = np.asarray(found, dtype=bool)
    rows = np.flatnonzero(found) if found.any() else np.arange(len(found))
    picker = FramePicker(per_clip)
    for r in rows:
        picker.offer(lambda r=r: r)
    keep = np.zeros(len(found), dtype=bool)
    keep[[r for _, r in picker.chosen()]] = True
    return keep


class FrameCache:
    """``<cache>/frames/<sha256>-<sampling>-<side>/`` holds a video's sampled frames (JPEG) and ``frames.json``,
    written last, so a folder without it is an interrupted decode and is redone."""

    def __init__(self, directory: str | Path | None = None) -> None:
        from .content import default_cache_dir

        self.root = (Path(directory) if directory else default_cache_dir()) / "frames"

    def frames(self, video: Path, sampling: Sampling) -> ClipFrames:
        from .content import file_sha256

        sha = file_sha256(video)
        if sha is None:
            return ClipFrames("unreadable", "cannot read file", [], [], [])
        folder = self.root / f"{sha}-{sampling.key}-{FRAME_MAX_SIDE}"
        index_file = folder / "frames.json"
        if index_file.exists():
            try:
                d = json.loads(index_file.read_text())
                return ClipFrames(d["status"], d["reason"], [str(folder / f) for f in d["files"]], d["index"], d["time"])
            except (ValueError, KeyError, OSError):
                pass  # damaged: decode again
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        files, index, times, status, reason = [], [], [], "ok", ""
        try:
            info = probe(video)
            for fr in iter_frames(video, sampling, info):
                name = f"f{fr.index:06d}.jpg"
                _save_jpeg(fr.rgb, folder / name)
                files.append(name), index.append(fr.index), times.append(fr.time)
            reason = info.truncated
        except VideoError as e:
            status, reason = e.status, e.reason
        atomic.write_json(index_file, {"video": str(video), "status": status, "reason": reason, "files": files,
                                       "index": index, "time": times})
        return ClipFrames(status, reason, [str(folder / f) for f in files], index, times)


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    tmp = path.with_suffix(".tmp")
    Image.fromarray(rgb).save(tmp, format="JPEG", quality=92)
    tmp.replace(path)


def load_frame(path: str | Path, max_side: int = FRAME_MAX_SIDE) -> np.ndarray:
    """A frame-folder frame as RGB scaled like a video frame; ImageLoadError when it cannot be read."""
    return load_image(path, max_side=max_side).rgb


def preview(path: str):
    """What a contact sheet shows for a sample: a photo's path as it is; a clip's first frame (a PIL image), or
    its path when that frame cannot be read (the sheet then draws a tile saying why)."""
    from PIL import Image

    p = Path(path)
    try:
        if is_video(p) and p.is_file():
            return Image.fromarray(next(iter_frames(p, Sampling(n=1))).rgb)
        if p.is_dir() and frame_files(p):
            return Image.fromarray(load_frame(frame_files(p)[0]))
    except (VideoError, ImageLoadError, StopIteration):
        pass
    return path


__all__ = ["ClipDataset", "ClipFrames", "FrameCache", "ImageLoadError", "Sample",
           "clip_frames", "frame_files", "has_videos", "list_samples", "load_clip_dataset", "load_frame", "preview"]
