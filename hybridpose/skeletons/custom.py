"""A skeleton described by the user in a small YAML file, for keypoints read from a file (``--keypoints``).

```yaml
name: my_hand            # optional; default: the file's stem
keypoints: [wrist, thumb_tip, index_tip]
edges: [[wrist, thumb_tip], [wrist, index_tip]]
mirror_pairs: []         # keypoints that swap when the photo is mirrored (left_x, right_x)
```

Its features are generic: coordinates relative to the keypoints' centroid in units of their spread (y
up), each bone's length and direction, and the angle at every keypoint where two bones meet. The run
stores the description itself (``config.json`` ``skeleton``), so predict, evaluate and explain need no file.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import HybridPoseError
from .base import Skeleton
from .geometry import angle as _angle


class SkeletonFileError(HybridPoseError):
    pass


def generic_features(skeleton_names: tuple[str, ...], edges: tuple[tuple[str, str], ...]):
    """The feature function of a described skeleton."""
    index = {n: i for i, n in enumerate(skeleton_names)}
    joints = [(a, v, b) for v in skeleton_names
              for (a, b) in itertools.combinations(
                  [x for e in edges for x in e if v in e and x != v], 2)]

    def features(kp: np.ndarray) -> pd.DataFrame:
        kp = np.asarray(kp, dtype=np.float64).reshape(-1, len(skeleton_names), 4)
        p = kp[..., :2].copy()
        p[..., 1] = -p[..., 1]
        centre = p.mean(axis=1, keepdims=True)
        spread = np.sqrt(((p - centre) ** 2).sum(-1).mean(-1))
        p = (p - centre) / np.where(spread > 1e-9, spread, 1.0)[:, None, None]
        cols: dict[str, np.ndarray] = {}
        for n, i in index.items():
            cols[f"{n}_x"], cols[f"{n}_y"], cols[f"{n}_visibility"] = p[:, i, 0], p[:, i, 1], kp[:, i, 3]
        for a, b in edges:
            d = p[:, index[b]] - p[:, index[a]]
            length = np.linalg.norm(d, axis=-1)
            cols[f"{a}_{b}_length"] = length
            cols[f"{a}_{b}_dx"], cols[f"{a}_{b}_dy"] = d[:, 0] / (length + 1e-9), d[:, 1] / (length + 1e-9)
        for a, v, b in joints:
            cols[f"{a}_{v}_{b}_angle"] = _angle(p[:, index[a]], p[:, index[v]], p[:, index[b]])
        frame = pd.DataFrame(cols)
        frame.loc[~np.isfinite(kp).all(axis=(1, 2)), :] = np.nan
        return frame

    return features


def from_definition(d: object, source: str = "skeleton description") -> Skeleton:
    """A Skeleton from ``{name, keypoints, edges, mirror_pairs}``; SkeletonFileError naming ``source``."""
    if not isinstance(d, dict):
        raise SkeletonFileError(f"{source}: expected a mapping with keys name, keypoints, edges, mirror_pairs.")
    names = d.get("keypoints")
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)):
        raise SkeletonFileError(f"{source}: 'keypoints' must list at least two keypoint names.")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SkeletonFileError(f"{source}: keypoint names repeat ({', '.join(dup)}); give each keypoint once.")
    pairs = {}
    for key in ("edges", "mirror_pairs"):
        value = d.get(key) or []
        if not (isinstance(value, list) and all(isinstance(e, list) and len(e) == 2 for e in value)):
            raise SkeletonFileError(f"{source}: '{key}' must be a list of [keypoint, keypoint] pairs.")
        for e in value:
            unknown = [n for n in e if n not in names]
            if unknown:
                raise SkeletonFileError(f"{source}: '{key}' names {unknown[0]!r}, which is not in 'keypoints'.")
        pairs[key] = tuple((str(a), str(b)) for a, b in value)
    name = str(d.get("name") or "custom")
    edges = pairs["edges"]
    return Skeleton(name=name, keypoints=tuple(names), edges=edges, mirror_pairs=pairs["mirror_pairs"],
                    features=generic_features(tuple(names), edges), estimator="",
                    scale=((names[0],), (names[1],)), description=f"described in {source}", custom=True)


def load_yaml(path: str | Path) -> Skeleton:
    import yaml

    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SkeletonFileError(f"{path}: cannot read the skeleton file ({e.strerror or e}).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SkeletonFileError(f"{path}{where}: not valid YAML; fix the skeleton file.") from None
    if isinstance(d, dict) and not d.get("name"):
        d = {**d, "name": path.stem}
    return from_definition(d, str(path))
