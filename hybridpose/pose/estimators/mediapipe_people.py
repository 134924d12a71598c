"""MediaPipe's Tasks ``PoseLandmarker`` as the ``body`` skeleton's multi-person pose model (``mediapipe_people``).

The ``mediapipe==0.10.21`` wheel ships the two models the Tasks API needs (``pose_detection.tflite`` and
``pose_landmark_full.tflite``, the legacy solution's complexity-1 models) without the metadata it reads; the
``.task`` bundle (a zip of both, metadata added with MediaPipe's own ``MetadataWriter``) is built from the
installed wheel on first use and kept in the cache folder under a name that follows the wheel's version.
Nothing is downloaded. On a one-person photo its keypoints equal the legacy solution's (mean absolute
difference ~0.0003 of the photo's size).

The detector misses the smaller people of a wide photo (it sees the photo letterboxed to 224 px), so a
second look searches each wide strip that no person found covers; a person found there is kept when the
landmark model is sure of it (mean presence >= ``MIN_PRESENCE``) and it is not one already found. A strip much
wider than high (two videos side by side, where the first look often finds nobody) is searched in overlapping
windows of ``MAX_WINDOW`` x its height.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ... import atomic
from ...data.content import default_cache_dir
from . import MediaPipeEstimator, quiet_stderr, register, started

PEOPLE_LIMIT = 8         # people the model looks for per photo (the cache keeps all; --max-people cuts)
MIN_PRESENCE = 0.5       # a person of the second look is kept when the landmark model is this sure of it
MIN_STRIP = 0.4          # a strip left of, right of or between found people is searched when this wide (x height)
SAME_PERSON_IOU = 0.3    # a person whose keypoint box overlaps one already found this much is that one
SAME_PERSON_INSIDE = 0.6  # ... or lies this much inside it (or it inside the other)
MAX_WINDOW = 1.5         # a strip wider than this (x height) is searched in windows this wide, overlapping by half
BUNDLE_REVISION = 1      # bump when the bundle's content changes


def mediapipe_version() -> str:
    from importlib.metadata import version

    return version("mediapipe")


def bundle_path(cache_dir: str | Path | None = None) -> Path:
    """The ``.task`` bundle, built from the installed wheel's models the first time (atomically)."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / "models" / f"pose_landmarker-mediapipe-{mediapipe_version()}-r{BUNDLE_REVISION}.task"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = build_bundle()
        with atomic.atomic_open(path, "wb") as fh:
            fh.write(data)
    return path


def bundle_source() -> dict:
    """Where the Tasks API reads the bundle from: the cached file or, when the cache cannot be written (the
    pose cache has already said so), the bundle built in memory."""
    try:
        return {"model_asset_path": str(bundle_path())}
    except OSError:
        return {"model_asset_buffer": build_bundle()}


def build_bundle() -> bytes:
    """The PoseLandmarker bundle: the wheel's detector and landmark model with the metadata the Tasks API reads."""
    import mediapipe

    root = Path(mediapipe.__file__).parent / "modules"
    detector = _with_metadata(root / "pose_detection" / "pose_detection.tflite", 127.5, 127.5)
    landmarks = _with_metadata(root / "pose_landmark" / "pose_landmark_full.tflite", 0.0, 255.0)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("pose_detector.tflite", detector)
        z.writestr("pose_landmarks_detector.tflite", landmarks)
    return out.getvalue()


def _with_metadata(model: Path, mean: float, std: float) -> bytes:
    """The model with an image input normalised by ``mean`` / ``std`` and one feature output per output tensor."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, writer_utils

    buffer = bytearray(model.read_bytes())
    writer = metadata_writer.MetadataWriter.create(buffer).add_general_info(model.stem).add_image_input([mean], [std])
    for _ in writer_utils.get_output_tensor_types(buffer):
        writer.add_feature_output()
    return bytes(writer.populate()[0])


def keypoint_extent(kp: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of a person's normalised keypoints, clipped to the photo."""
    return np.clip(np.r_[kp[:, :2].min(0), kp[:, :2].max(0)], 0.0, 1.0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Keypoint boxes ``a`` and ``b`` are one person: they overlap by ``SAME_PERSON_IOU``, or one lies mostly
    inside the other (a window that cut a person found the part it saw)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iou(a, b) >= SAME_PERSON_IOU or (smaller > 0 and w * h / smaller >= SAME_PERSON_INSIDE)


def free_strips(people: list[np.ndarray], aspect: float) -> list[tuple[float, float]]:
    """The vertical strips (x0, x1, normalised) that no found person covers, at least ``MIN_STRIP`` x the
    photo's height wide (``aspect``: width / height)."""
    spans = sorted((float(e[0]), float(e[2])) for e in (keypoint_extent(p) for p in people))
    strips, left = [], 0.0
    for x0, x1 in [*spans, (1.0, 1.0)]:
        if (x0 - left) * aspect >= MIN_STRIP:
            strips.append((left, x0))
        left = max(left, x1)
    return strips


def windows(strips: list[tuple[float, float]], aspect: float) -> list[tuple[float, float]]:
    """Each strip, or where wider than ``MAX_WINDOW`` x the height, windows that wide overlapping by about half."""
    out = []
    win = MAX_WINDOW / aspect
    for x0, x1 in strips:
        if x1 - x0 <= win:
            out.append((x0, x1))
            continue
        n = int(np.ceil((x1 - x0 - win) / (win / 2))) + 1
        out.extend((float(a), float(a + win)) for a in np.linspace(x0, x1 - win, n))
    return out


@register
class PeopleEstimator(MediaPipeEstimator):
    """Every person of the photo (up to ``PEOPLE_LIMIT``), 33 keypoints each, ordered left to right."""

    name = "mediapipe_people"
    version = f"mediapipe-{mediapipe_version()}-people-r{BUNDLE_REVISION}-v2"
    skeleton_name = "body"
    people_of = "mediapipe_pose"  # the single-person model it stands in for when several people are asked for

    def make_graph(self, solutions):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.PoseLandmarkerOptions(base_options=BaseOptions(**bundle_source()),
                                               running_mode=vision.RunningMode.IMAGE, num_poses=PEOPLE_LIMIT)
        return vision.PoseLandmarker.create_from_options(options)

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        started()
        with quiet_stderr():
            self._graph = self.make_graph(None)
        self._warm = False

    def _detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if not self._warm:
            self._warm = True
            with quiet_stderr():
                result = self._graph.detect(image)
        else:
            result = self._graph.detect(image)
        return [np.array([[p.x, p.y, p.z, p.visibility, p.presence] for p in marks], dtype=np.float64)
                for marks in result.pose_landmarks]

    def people(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Every person: ((33, 4) keypoints, x and y normalised to [0, 1], z, visibility; the landmark model's
        mean presence), left to right."""
        found = self._detect(rgb)
        h, w = rgb.shape[:2]
        for x0, x1 in windows(free_strips(found, w / h), w / h) if len(found) < PEOPLE_LIMIT else []:
            a, b = int(round(x0 * w)), int(round(x1 * w))
            for p in self._detect(rgb[:, a:b]):
                p[:, 0] = (p[:, 0] * (b - a) + a) / w
                if p[:, 4].mean() >= MIN_PRESENCE and not any(
                        same_person(keypoint_extent(p), keypoint_extent(q)) for q in found):
                    found.append(p)
        found = sorted(found[:PEOPLE_LIMIT], key=lambda p: float(np.median(p[:, 0])))
        return [(p[:, :4], round(float(p[:, 4].mean()), 4)) for p in found]

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest person (by the area of its keypoint box), as the single-person models answer."""
        people = self.people(rgb)
        if not people:
            return None
        return max((kp for kp, _ in people), key=lambda kp: float(np.prod(np.ptp(kp[:, :2], axis=0))))

    def close(self) -> None:
        self._graph.close()
