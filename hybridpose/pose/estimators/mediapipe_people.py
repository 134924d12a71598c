"""MediaPipe's Tasks ``PoseLandmarker`` as the ``body`` skeleton's multi-person pose model (``mediapipe_people``).

The ``mediapipe==0.10.21`` wheel ships the two models the Tasks API needs (``pose_detection.tflite`` and
``pose_landmark_full.tflite``, the legacy solution's complexity-1 models) without the metadata it reads; the
``.task`` bundle (a zip of both, metadata added with MediaPipe's own ``MetadataWriter``) is built from the
installed wheel on first use and kept in the cache folder under a name that follows the wheel's version.
Nothing is downloaded. On a one-person photo its keypoints equal the legacy solution's (mean absolute
difference ~0.0003 of the photo's size).

The detector misses the smaller people of a wide photo (it sees the photo letterboxed to 224 px), so a
second look searches each wide strip that no person found covers; a person found there is kept when the
landmark model is sure of it (mean presence >= ``MIN_PRESENCE``) and it is not one already found.
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
from .mediapipe_pose import SECOND_HEIGHT, SECOND_VISIBILITY, plausible_body

PEOPLE_LIMIT = 8         # people the model looks for per photo (the cache keeps all; --max-people cuts)
MIN_PRESENCE = 0.5       # a person of the second look is kept when the landmark model is this sure of it
MIN_STRIP = 0.4          # a strip left of, right of or between found people is searched when this wide (x height)
SAME_PERSON_IOU = 0.3    # a person whose keypoint box overlaps one already found this much is that one
INSIDE = 0.6             # ... or whose box lies this much inside one already found
MAX_DEPTH = 2            # strips of strips: a second row or column of people
MAX_LOOKS = 9            # detector runs per photo at most
MAX_WINDOW = 1.5         # a strip wider than this (x its height) is searched in windows this wide, overlapping by
                         # half: two videos side by side (720 x 202) gave 4 of 30 people without, 29 with
WIDE = 1.5               # a photo this many times as wide as high where nobody is found is searched in halves
                         # (not any photo: in the halves of a narrow room's view the detector finds kettles)
DETECTOR_SIZE = 224      # the detector's input (px): a photo where nobody is found is searched in quarters when
                         # each quarter still holds this much (4 people tiled 2 x 2 are too small for one look)
BUNDLE_REVISION = 1      # bump when the bundle's content changes
SEARCH_REVISION = 7      # bump when the search for people changes what is found (the cache key)
SECOND_DETECTION = 0.15  # the second look at a photo where nobody was found: the detector's threshold
SECOND_PRESENCE = 0.8    # and the landmark model's mean presence a person it finds needs


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


def same_person(p: np.ndarray, q: np.ndarray) -> bool:
    """Whether a person of a second look is ``q``, found already: their keypoint boxes overlap (IoU >=
    ``SAME_PERSON_IOU``), or ``p``'s lies mostly (``INSIDE``) within ``q``'s (a limb of ``q`` taken for a person)."""
    a, b = keypoint_extent(p), keypoint_extent(q)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    own = (a[2] - a[0]) * (a[3] - a[1])
    return iou(a, b) >= SAME_PERSON_IOU or (own > 0 and w * h / own >= INSIDE)


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


def quarters(w: int, h: int) -> list[tuple[tuple[int, int], tuple[int, int, int, int]]]:
    """The four quarters of a ``w`` x ``h`` photo, each as its (column, row) and (x0, y0, x1, y1) pixels: top
    left, top right, bottom left, bottom right."""
    return [((qx, qy), (qx * w // 2, qy * h // 2, (qx + 1) * w // 2, (qy + 1) * h // 2))
            for qy in (0, 1) for qx in (0, 1)]


def sure_body(p: np.ndarray) -> bool:
    """Whether a find of the second look (or of a quarter's) is kept: the landmark model is sure of it (mean
    presence, the 5th column, >= ``SECOND_PRESENCE``) and it is a whole body of its region's size."""
    return p[:, 4].mean() >= SECOND_PRESENCE and plausible_body(p)


@register
class PeopleEstimator(MediaPipeEstimator):
    """Every person of the photo (up to ``PEOPLE_LIMIT``), 33 keypoints each, ordered left to right."""

    name = "mediapipe_people"
    version = f"mediapipe-{mediapipe_version()}-people-r{BUNDLE_REVISION}-v{SEARCH_REVISION}"
    skeleton_name = "body"
    people_of = "mediapipe_pose"  # the single-person model it stands in for when several people are asked for

    min_detection = 0.5  # the person detector's threshold (the Tasks API's default)
    min_presence = MIN_PRESENCE  # a person of the strips' look is kept when the landmark model is this sure of it

    def make_graph(self, solutions):
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.PoseLandmarkerOptions(base_options=BaseOptions(**bundle_source()),
                                               running_mode=vision.RunningMode.IMAGE, num_poses=PEOPLE_LIMIT,
                                               min_pose_detection_confidence=self.min_detection)
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
        found: list[np.ndarray] = []
        h, w = rgb.shape[:2]
        looks = [0]
        self._look(rgb, (0, 0, w, h), found, looks)
        if not found and w >= WIDE * h:  # nobody in a wide photo: each half of it (a row of people)
            for half in ((0, 0, w // 2, h), (w // 2, 0, w, h)):
                self._look(rgb, half, found, looks, depth=1)
        if not found and min(w, h) >= 2 * DETECTOR_SIZE:  # nobody, in more detail than the detector saw: the
            for _, quarter in quarters(w, h):              # quarters, keeping only sure, whole bodies
                self._look(rgb, quarter, found, [0], depth=MAX_DEPTH, strict=True)
        if 2 <= len(found) < PEOPLE_LIMIT:  # a group: a quarter of the photo where none of them stands
            for (qx, qy), quarter in quarters(w, h):
                if not any(qx == (np.median(p[:, 0]) >= 0.5) and qy == (np.median(p[:, 1]) >= 0.5) for p in found):
                    self._look(rgb, quarter, found, [0], depth=MAX_DEPTH)
        found = sorted(found[:PEOPLE_LIMIT], key=lambda p: float(np.median(p[:, 0])))
        return [(p[:, :4], round(float(p[:, 4].mean()), 4)) for p in found]

    def _look(self, rgb: np.ndarray, region: tuple[int, int, int, int], found: list[np.ndarray], looks: list[int],
              depth: int = 0, strict: bool = False) -> None:
        """Add the people of ``region`` (x0, y0, x1, y1 pixels) to ``found`` (normalised to the whole photo), then
        look again in each strip of it, left, right, above or below the people found in it, that is wide enough
        (``free_strips``; people side by side or stacked in rows), ``MAX_DEPTH`` deep, ``MAX_LOOKS`` looks in all.
        (``people`` looks in the halves of a wide photo where nobody was found, and in each quarter of a group
        photo where none of the people found stands, and the quarters of a large photo where nobody was found,
        ``strict``: a find there is kept only as the second look keeps one, sure and a whole body of the quarter.)"""
        x0, y0, x1, y1 = region
        h, w = rgb.shape[:2]
        looks[0] += 1
        for p in self._detect(rgb[y0:y1, x0:x1]):
            if strict and not sure_body(p):
                continue
            p[:, 0], p[:, 1] = (p[:, 0] * (x1 - x0) + x0) / w, (p[:, 1] * (y1 - y0) + y0) / h
            if depth == 0 or (p[:, 4].mean() >= self.min_presence and not any(same_person(p, q) for q in found)):
                found.append(p)
        inside = [(p[:, :2] - [x0 / w, y0 / h]) / [(x1 - x0) / w, (y1 - y0) / h] for p in found]
        inside = [p for p in inside if 0 <= np.median(p[:, 0]) <= 1 and 0 <= np.median(p[:, 1]) <= 1]
        if not inside or depth >= MAX_DEPTH:
            return
        rw, rh = x1 - x0, y1 - y0
        strips = [(x0 + round(a * rw), y0, x0 + round(b * rw), y1)
                  for a, b in windows(free_strips(inside, rw / rh), rw / rh)]
        strips += [(x0, y0 + round(a * rh), x1, y0 + round(b * rh)) for a, b in free_strips([p[:, ::-1] for p in inside], rh / rw)]
        for strip in strips:
            if len(found) < PEOPLE_LIMIT and looks[0] < MAX_LOOKS:
                self._look(rgb, strip, found, looks, depth + 1)

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest person (by the area of its keypoint box), as the single-person models answer."""
        people = self.people(rgb)
        if not people:
            return None
        return max((kp for kp, _ in people), key=lambda kp: float(np.prod(np.ptp(kp[:, :2], axis=0))))

    def close(self) -> None:
        self._graph.close()


@register
class PeopleSecondLook(PeopleEstimator):
    """The second chance of a photo where ``mediapipe_people`` found nobody (``extract --second-look``; off by
    default): the person detector at a low threshold (``SECOND_DETECTION``); a person it finds is kept only when
    the landmark model is sure of it (mean presence >= ``SECOND_PRESENCE``) and it is a whole body of a plausible
    size (``mediapipe_pose.plausible_body``). docs/RESULTS.md has the numbers."""

    name = "mediapipe_people_second"
    version = (f"{PeopleEstimator.version}-second-det{SECOND_DETECTION}-p{SECOND_PRESENCE}-v{SECOND_VISIBILITY}"
               f"-h{SECOND_HEIGHT}")
    second_look_of = "mediapipe_people"
    people_of = None
    min_detection = SECOND_DETECTION
    min_presence = SECOND_PRESENCE

    def _detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The sure finds, one per person: at a low threshold the detector finds a person twice (a box inside
        another), the surer is kept."""
        kept: list[np.ndarray] = []
        for p in sorted(super()._detect(rgb), key=lambda p: -p[:, 4].mean()):
            if sure_body(p) and not any(same_person(p, q) for q in kept):
                kept.append(p)
        return kept
