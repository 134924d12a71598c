"""Video decoding: the sampled frames of a video file, as RGB arrays, with a status when it cannot be read.

Decoding uses PyAV (FFmpeg). Frames are sampled while decoding (never all held in memory), either at
``fps`` frames per second of video time or ``n`` frames spread evenly over the video, and scaled so
that their longer side is at most ``FRAME_MAX_SIDE`` (the pose model works at 256 px and the image
branch on a crop of ~250 px; larger frames only cost time and disk).

A video that cannot be opened, has no video stream or no decodable frame raises ``VideoError``
(status ``unreadable``, a reason in words). A video whose decoding stops half way, or that ends before the
frame count its container promises (a file cut short), keeps the frames read so far; ``VideoInfo.truncated``
then says how many frames were read of how many were promised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..defaults import DEFAULTS

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
DEFAULT_FPS = DEFAULTS.fps
FRAME_MAX_SIDE = 720


class VideoError(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Sampling:
    """How frames are picked from a clip: ``fps`` per second of video, or ``n`` evenly (n wins when set); with
    fps, a clip too short to give ``min_frames`` that way gives ``min_frames`` evenly (all, if it has fewer)."""
    fps: float = DEFAULT_FPS
    n: int = 0
    min_frames: int = 0

    def __post_init__(self) -> None:
        if self.n < 0 or self.min_frames < 0 or (not self.n and not self.fps > 0):
            raise ValueError("sampling needs fps > 0 or frames >= 1")

    @property
    def key(self) -> str:
        if self.n:
            return f"n{self.n}"
        return f"fps{self.fps:g}" + (f"min{self.min_frames}" if self.min_frames else "")

    def count(self, total: int, rate: float) -> int:
        """How many evenly spread frames of ``total`` (at ``rate`` per second) to take; 0: sample by fps."""
        if self.n:
            return min(self.n, total)
        if self.min_frames and total > 0 and rate > 0 and total / rate * self.fps < self.min_frames:
            return min(self.min_frames, total)
        return 0


@dataclass
class Frame:
    index: int      # position among the video's decoded frames (0 = first)
    time: float     # seconds from the start
    rgb: np.ndarray
    sampled: bool = True


@dataclass
class VideoInfo:
    rate: float
    frames: int           # decoded frame count estimate (0 when unknown)
    width: int
    height: int
    truncated: str = ""   # reason, when decoding stopped before the end
    warnings: list[str] = field(default_factory=list)
    exact: bool = False   # ``frames`` is the container's own count, not an estimate from the duration


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size without decoding; VideoError when it is not a readable video."""
    container = _open(path)
    try:
        stream = _stream(container, path)
        rate = float(stream.average_rate or stream.guessed_rate or 25.0)
        n = int(stream.frames or 0)
        if not n:
            if stream.duration and stream.time_base:
                n = int(round(float(stream.duration * stream.time_base) * rate))
            elif container.duration:
                n = int(round(container.duration / 1_000_000 * rate))
        return VideoInfo(rate, n, stream.codec_context.width, stream.codec_context.height, exact=bool(stream.frames))
    finally:
        container.close()


def wanted_indices(sampling: Sampling, info: VideoInfo) -> set[int] | None:
    """Frame indices to keep for evenly spread frames (``n``, or a clip short for ``min_frames``); None for fps
    sampling (decided while decoding)."""
    total = max(info.frames, 1)
    n = sampling.count(total, info.rate)
    if not n:
        return None
    return set(np.unique(np.linspace(0, total - 1, n).round().astype(int)).tolist())


def iter_frames(path: str | Path, sampling: Sampling = Sampling(), info: VideoInfo | None = None,
                max_side: int = FRAME_MAX_SIDE, every: bool = False) -> Iterator[Frame]:
    """The sampled frames of a video, in order, one at a time (memory stays flat over any length).

    ``every``: yield every decoded frame (for drawing an annotated copy); ``Frame.sampled`` marks the sampled."""
    info = info or probe(path)
    keep = wanted_indices(sampling, info)
    step = 1.0 / sampling.fps if not sampling.n else 0.0
    next_t = 0.0
    container = _open(path)
    got = 0
    try:
        stream = _stream(container, path)
        stream.thread_type = "AUTO"
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                t = float(frame.time) if frame.time is not None else index / info.rate
                if keep is not None:
                    take = index in keep
                else:
                    take = t + 1e-6 >= next_t
                    if take:
                        next_t += step * max(1, int((t + 1e-6 - next_t) // step) + 1)
                if not take and not every:
                    continue
                got += take
                yield Frame(index, round(t, 4), _rgb(frame, max_side), take)
        except Exception as e:  # av.error.*: a damaged packet or a cut-off file
            if not got:
                raise VideoError("unreadable", f"no decodable video frame ({_why(e)})") from None
            info.truncated = _read_of(info, index + 1, f"decoding stopped: {_why(e)}") \
                or f"decoding stopped after frame {index} ({_why(e)}); the frames before it are used"
        else:
            if got and _ends_early(info, index + 1):
                info.truncated = _read_of(info, index + 1, "the file ends before them: cut short?")
    finally:
        container.close()
    if not got:
        raise VideoError("unreadable", "the video holds no decodable frame")


def ahead(items: Iterator, depth: int = 4) -> Iterator:
    """``items`` produced on a thread, up to ``depth`` ahead of the consumer: a video's decoding (PyAV and
    libavcodec release the GIL) overlaps the pose model's work on the frames before. An error of ``items`` is
    raised in the consumer, where it would have been; a consumer that stops early stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((end, e))

    thread = threading.Thread(target=produce, name="hybridpose-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
        if hasattr(items, "close") and not thread.is_alive():
            items.close()  # its own clean-up (a video's container closed) where it stopped early


def _ends_early(info: VideoInfo, decoded: int) -> bool:
    """Fewer frames decoded than the container promises; an estimate from the duration gets some slack."""
    if info.exact:
        return decoded < info.frames
    return decoded < info.frames - max(2, info.frames // 20)


def _read_of(info: VideoInfo, read: int, why: str) -> str:
    """"read 18 of 30 frames (why); ..." where the container promised more frames than were read, else ""."""
    if read >= info.frames:
        return ""
    return f"read {read} of {'' if info.exact else 'about '}{info.frames} frames ({why}); the frames read are used"


def _rgb(frame, max_side: int) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        w2, h2 = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        return frame.to_ndarray(format="rgb24", width=w2, height=h2)
    return frame.to_ndarray(format="rgb24")


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path), mode="r")
    except Exception as e:  # av.error.InvalidDataError, FileNotFoundError, PermissionError, ...
        raise VideoError("unreadable", f"not a readable video ({_why(e)})") from None


def _stream(container, path):
    if not container.streams.video:
        container.close()
        raise VideoError("unreadable", "the file holds no video stream")
    return container.streams.video[0]


def _why(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.split(": '")[0][:160]


# --------------------------------------------------------------------------- writing


class VideoWriter:
    """An H.264 (or MPEG-4 where libx264 is missing) .mp4 written frame by frame; yuv420p, so any player opens it."""

    def __init__(self, path: str | Path, rate: float, width: int, height: int) -> None:
        from fractions import Fraction

        import av

        self.path = Path(path)
        self.container = av.open(str(self.path), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=Fraction(rate).limit_denominator(1000))
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "26", "preset": "veryfast"}

    def write(self, rgb: np.ndarray) -> None:
        import av

        rgb = np.ascontiguousarray(rgb[: self.stream.height, : self.stream.width])
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
