"""Keypoints read from a file instead of a pose model (``--keypoints FILE``).

Formats (docs/FORMATS.md, "Keypoint files"):

- CSV, one row per keypoint: ``path,keypoint,x,y[,z][,visibility]``;
- CSV, one row per photo: ``path`` and ``<name>_x``, ``<name>_y`` (optionally ``_z``, ``_v`` or
  ``_visibility``) per keypoint; other columns are ignored, so extract's own ``poses.csv`` is one;
- JSON: ``{"path": [[x, y, z?, visibility?], ...], ...}`` in the skeleton's keypoint order.

Coordinates are pixels of the photo as displayed (EXIF orientation applied) or normalised to [0, 1]
(``units``). Everything is checked before any work: a photo the inputs do not hold, a keypoint count
or name that does not fit the skeleton, an empty or NaN coordinate, a point far outside its photo;
each is one line naming the file and the row. Rows for other existing photos are ignored (one file may
cover a whole data set while ``predict`` reads one folder). Photos the file does not list get status
``no_keypoints`` (the keypoint branch abstains; the image branch decides on the whole photo), as do
rows whose coordinates are all empty (a ``poses.csv`` row where no person or hand was found).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import HybridPoseError
from ..progress import progress_bar
from ..skeletons import Skeleton
from .cache import first_look
from .frontend import make_table
from .result import PoseResult

UNITS = ("pixels", "normalized")
FAR_OUTSIDE = 0.5  # a point may lie this fraction of the photo's size outside it (pose models extrapolate)
MISSING = ("no_keypoints", "not in the keypoint file")


class KeypointFileError(HybridPoseError):
    pass


@dataclass
class KeypointFile:
    """The keypoints of a file, by resolved photo path; ``None`` for a listed photo without keypoints."""
    path: Path
    skeleton: Skeleton
    units: str
    points: dict[str, np.ndarray | None] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # key -> "row N" / "entry 'p'", for messages
    sha256: str = ""

    @property
    def version(self) -> str:
        """Pose-cache version of this file's results."""
        return f"file-{self.sha256[:16]}-{self.units}-{self.skeleton.name}"

    def describe(self) -> dict:
        return {"file": str(self.path), "units": self.units, "sha256": self.sha256}

    def lookup(self, photo: str | Path) -> str | None:
        key = _key(photo)
        return key if key in self.points else None

    def result(self, photo: str | Path, width: int, height: int) -> PoseResult:
        """The photo's keypoints in pixels with their box, or status ``no_keypoints``."""
        key = self.lookup(photo)
        kp = self.points.get(key) if key is not None else None
        if kp is None:
            return PoseResult(*MISSING if key is None else ("no_keypoints", "no keypoints in the keypoint file"),
                              width, height)
        kp = self.pixels(kp, width, height)
        return PoseResult("ok", "", width, height, self.skeleton.keypoint_box(kp, width, height), kp.tolist())

    def pixels(self, kp: np.ndarray, width: int, height: int) -> np.ndarray:
        out = np.array(kp, dtype=np.float64, copy=True)
        if self.units == "normalized":
            out[:, 0] *= width
            out[:, 1] *= height
            out[:, 2] *= width  # as for MediaPipe: z on the scale of x
        return out

    def check_photos(self, photos: Sequence[str | Path], where: str) -> None:
        """Every photo of the file exists, and the points of those among ``photos`` lie near it (image headers only)."""
        known = {_key(p) for p in photos}
        for key, row in self.rows.items():
            # rows for other existing photos are fine (a file may cover more than one folder); a path to nothing is not
            if key not in known and self.points[key] is not None and not Path(key).exists():
                raise KeypointFileError(f"{self.path} {row}: photo {key} is not among the {len(known)} photos of "
                                        f"{where}, and no such file exists; remove the row or fix its path (absolute, "
                                        "or relative to the data folder, the current folder or the keypoint file).")
        for key, kp in self.points.items():
            if kp is None or key not in known:
                continue
            size = _image_size(key)
            if size is None:
                continue  # an unreadable photo gets its status later
            self._check_inside(kp, *size, self.rows[key])

    def _check_inside(self, kp: np.ndarray, width: int, height: int, row: str) -> None:
        w, h = (1.0, 1.0) if self.units == "normalized" else (float(width), float(height))
        x, y = kp[:, 0], kp[:, 1]
        bad = (x < -FAR_OUTSIDE * w) | (x > (1 + FAR_OUTSIDE) * w) | (y < -FAR_OUTSIDE * h) | (y > (1 + FAR_OUTSIDE) * h)
        if bad.any():
            i = int(np.argmax(bad))
            hint = ("; are they pixels? use --keypoint-units pixels" if self.units == "normalized"
                    else ("; are they normalised? use --keypoint-units normalized" if np.nanmax(np.abs(kp[:, :2])) > 2 * max(width, height) else ""))
            raise KeypointFileError(
                f"{self.path} {row}: keypoint {self.skeleton.keypoints[i]!r} at ({x[i]:g}, {y[i]:g}) lies far outside "
                f"the {width}x{height} photo ({self.units}){hint}.")

    def extract(self, photos: Sequence[str | Path], show_progress: bool = True) -> pd.DataFrame:
        """The poses table of ``photos`` from the file (one row each, as ``pose.extract`` writes)."""
        from ..data.images import ImageLoadError, load_image

        paths = [str(p) for p in photos]
        results, shas = first_look(paths)
        with progress_bar("keypoints", total=len(paths), enabled=show_progress) as advance:
            for i, p in enumerate(paths):
                if results[i] is None:
                    try:
                        image = load_image(p, max_side=64)  # decodes (so a broken photo gets its status), small
                    except ImageLoadError as e:
                        results[i] = PoseResult(e.status, e.reason)
                    else:
                        results[i] = self.result(p, image.width, image.height)
                advance()
        return make_table(paths, shas, results, self.skeleton)


def _key(photo: str | Path) -> str:
    return str(Path(photo).resolve())


def _image_size(key: str) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(key) as img:
            w, h = img.size
            orientation = img.getexif().get(274, 1)
    except Exception:  # noqa: BLE001  (any unreadable photo: its status comes later)
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# --------------------------------------------------------------------------- reading


def read_keypoints(file: str | Path, skeleton: Skeleton, units: str = "pixels", *,
                   roots: Sequence[str | Path] = ()) -> KeypointFile:
    """Parse and check ``file`` (not yet against the photos: ``check_photos``); KeypointFileError otherwise."""
    path = Path(file)
    if units not in UNITS:
        raise KeypointFileError(f"--keypoint-units {units!r}: choose one of {', '.join(UNITS)}.")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KeypointFileError(f"{path}: cannot read the keypoint file ({e.strerror or e}).") from None
    out = KeypointFile(path, skeleton, units, sha256=hashlib.sha256(raw).hexdigest())
    bases = [Path(r) for r in roots] + [Path.cwd(), path.parent]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeypointFileError(f"{path}: not UTF-8 text; save it as a UTF-8 CSV or JSON file.") from None
    if path.suffix.lower() == ".json":
        entries = _read_json(path, text, skeleton)
    elif path.suffix.lower() == ".csv":
        entries = _read_csv(path, text, skeleton)
    else:
        raise KeypointFileError(f"{path}: a keypoint file is a .csv or a .json file (docs/FORMATS.md).")
    if not entries:
        raise KeypointFileError(f"{path}: no keypoints in the file.")
    for name, row, kp in entries:
        key = _resolve(name, bases)
        if key in out.rows:
            raise KeypointFileError(f"{path} {row}: photo {name} is listed twice (also {out.rows[key]}); keep one "
                                     "(extract's poses.csv has a row per person unless made with --max-people 1).")
        out.rows[key] = row
        out.points[key] = None if kp is None else _checked(kp, path, row, skeleton)
    return out


def _resolve(name: str, bases: list[Path]) -> str:
    p = Path(name)
    if p.is_absolute():
        return _key(p)
    for base in bases:
        if (base / p).exists():
            return _key(base / p)
    return _key(bases[0] / p) if bases else _key(p)


def _checked(kp: np.ndarray, path: Path, row: str, skeleton: Skeleton) -> np.ndarray:
    bad = ~np.isfinite(kp[:, :2]).all(axis=1)
    whole = skeleton.missing_parts(kp)  # a two-hand skeleton may miss a whole hand
    kp[whole, :] = np.nan
    bad = bad & ~whole
    if bad.any():
        name = skeleton.keypoints[int(np.argmax(bad))]
        raise KeypointFileError(f"{path} {row}: keypoint {name!r} has no x or y (empty or NaN); give every keypoint "
                                "of the photo, or none (the photo then gets status no_keypoints).")
    rest = kp[np.isfinite(kp[:, 0]), 2:]
    if not np.isfinite(rest).all():
        name = skeleton.keypoints[int(np.argmax(~np.isfinite(rest).all(axis=1)))]
        raise KeypointFileError(f"{path} {row}: keypoint {name!r} has a NaN z or visibility; leave the column out "
                                "or give a number.")
    return kp


def _default_v(skeleton: Skeleton) -> float:
    return 0.5 if skeleton.handed else 1.0  # a hand's v is P(right): unknown without it


def _number(value: str, path: Path, row: str, what: str) -> float:
    value = value.strip()
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise KeypointFileError(f"{path} {row}: {what} is {value!r}, not a number.") from None


def _read_csv(path: Path, text: str, skeleton: Skeleton) -> list[tuple[str, str, np.ndarray | None]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header or "path" not in header:
        raise KeypointFileError(f"{path}: the first line must name the columns, with a 'path' column "
                                "(path,keypoint,x,y[,z][,visibility], or path,<name>_x,<name>_y,...).")
    header = [h.strip() for h in header]
    if "keypoint" in header:
        return _read_long(path, header, reader, skeleton)
    return _read_wide(path, header, reader, skeleton)


def _read_long(path, header, reader, skeleton):
    missing = [c for c in ("x", "y") if c not in header]
    if missing:
        raise KeypointFileError(f"{path}: no column {missing[0]!r}; the columns are path,keypoint,x,y[,z][,visibility].")
    col = {c: header.index(c) for c in header}
    v_col = col.get("visibility", col.get("v"))
    by_photo: dict[str, dict[str, list[float]]] = {}
    first_row: dict[str, str] = {}
    for row, rec in _records(path, header, reader):
        photo, name = rec[col["path"]].strip(), rec[col["keypoint"]].strip()
        if name not in skeleton.index:
            raise KeypointFileError(f"{path} {row}: keypoint {name!r} is not one of skeleton {skeleton.name!r}'s "
                                    f"{skeleton.n} ({', '.join(skeleton.keypoints[:4])}, ...).")
        values = [_number(rec[col[c]], path, row, c) for c in ("x", "y")]
        values.append(_number(rec[col["z"]], path, row, "z") if "z" in col else 0.0)
        values.append(_number(rec[v_col], path, row, "visibility") if v_col is not None else _default_v(skeleton))
        points = by_photo.setdefault(photo, {})
        first_row.setdefault(photo, row)
        if name in points:
            raise KeypointFileError(f"{path} {row}: keypoint {name!r} of {photo} is given twice.")
        points[name] = values
    entries = []
    for photo, points in by_photo.items():
        if len(points) != skeleton.n:
            lacking = [n for n in skeleton.keypoints if n not in points]
            raise KeypointFileError(f"{path} {first_row[photo]}: photo {photo} has {len(points)} keypoints, skeleton "
                                    f"{skeleton.name!r} has {skeleton.n} (missing {', '.join(lacking[:3])}"
                                    f"{', ...' if len(lacking) > 3 else ''}).")
        entries.append((photo, first_row[photo], np.array([points[n] for n in skeleton.keypoints], dtype=np.float64)))
    return entries



def _records(path, header, reader):
    """(``row N``, fields) of each non-blank CSV row, checked to have as many fields as the header."""
    for line, rec in enumerate(reader, start=2):
        if not any(r.strip() for r in rec):
            continue
        row = f"row {line}"
        if len(rec) != len(header):
            raise KeypointFileError(f"{path} {row}: {len(rec)} fields where the header has {len(header)}.")
        yield row, rec

def _read_wide(path, header, reader, skeleton):
    col = {c: i for i, c in enumerate(header)}
    missing = [f"{n}_{a}" for n in skeleton.keypoints for a in ("x", "y") if f"{n}_{a}" not in col]
    if missing:
        raise KeypointFileError(f"{path}: no column {missing[0]!r}: skeleton {skeleton.name!r} needs <name>_x and "
                                f"<name>_y for each of its {skeleton.n} keypoints ({len(missing)} columns missing); "
                                "check --skeleton.")
    z = [col.get(f"{n}_z") for n in skeleton.keypoints]
    v = [col.get(f"{n}_v", col.get(f"{n}_visibility")) for n in skeleton.keypoints]
    xs = [col[f"{n}_x"] for n in skeleton.keypoints]
    ys = [col[f"{n}_y"] for n in skeleton.keypoints]
    entries = []
    for row, rec in _records(path, header, reader):
        kp = np.empty((skeleton.n, 4))
        for i, n in enumerate(skeleton.keypoints):
            kp[i, 0] = _number(rec[xs[i]], path, row, f"{n}_x")
            kp[i, 1] = _number(rec[ys[i]], path, row, f"{n}_y")
            kp[i, 2] = _number(rec[z[i]], path, row, f"{n}_z") if z[i] is not None else 0.0
            kp[i, 3] = _number(rec[v[i]], path, row, f"{n}_v") if v[i] is not None else _default_v(skeleton)
        empty = not np.isfinite(kp[:, :2]).any()
        entries.append((rec[col["path"]].strip(), row, None if empty else kp))
    return entries


def _read_json(path, text, skeleton):
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise KeypointFileError(f"{path} line {e.lineno}: not valid JSON ({e.msg}).") from None
    if not isinstance(d, dict):
        raise KeypointFileError(f"{path}: expected an object {{\"photo path\": [[x, y, z?, visibility?], ...]}}.")
    entries = []
    for photo, points in d.items():
        row = f"entry {photo!r}"
        if points is None or points == []:
            entries.append((photo, row, None))
            continue
        if not isinstance(points, list) or len(points) != skeleton.n:
            count = len(points) if isinstance(points, list) else "no list of"
            raise KeypointFileError(f"{path} {row}: {count} keypoints, skeleton {skeleton.name!r} has {skeleton.n}.")
        kp = np.empty((skeleton.n, 4))
        for i, p in enumerate(points):
            if not (isinstance(p, list) and 2 <= len(p) <= 4):
                raise KeypointFileError(f"{path} {row}: keypoint {i} ({skeleton.keypoints[i]!r}) must be "
                                        "[x, y], [x, y, z] or [x, y, z, visibility].")
            try:
                vals = [math.nan if x is None else float(x) for x in p]
            except (TypeError, ValueError):
                raise KeypointFileError(f"{path} {row}: keypoint {i} ({skeleton.keypoints[i]!r}) holds "
                                        f"{p!r}, not numbers.") from None
            kp[i] = [*vals[:2], vals[2] if len(vals) > 2 else 0.0, vals[3] if len(vals) > 3 else _default_v(skeleton)]
        entries.append((photo, row, kp))
    return entries


def keypoint_source(file: str | Path | None, skeleton: Skeleton, units: str, photos: Sequence[str | Path],
                    where: str | Path) -> KeypointFile | None:
    """The checked keypoint file for ``photos`` (None: the skeleton's pose model, which must exist)."""
    if file is None:
        from .frontend import estimator_class

        estimator_class(skeleton)  # a described skeleton has no pose model: say so before any work
        return None
    where = Path(where)
    source = read_keypoints(file, skeleton, units, roots=[where if where.is_dir() else where.parent])
    source.check_photos(photos, str(where))
    return source
