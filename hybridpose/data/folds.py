"""Cross-validation folds that keep near-duplicate photos on one side of every split.

Web-scraped pose sets hold resized, re-encoded and watermarked copies of one photo. A
perceptual hash (DCT of the 32x32 grey image, 64 bits) links photos within a small Hamming
distance; linked photos form a group, and StratifiedGroupKFold keeps each group in one fold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.fft import dctn
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..defaults import DEFAULTS
from .images import ImageLoadError, load_image

HASH_DISTANCE = 8  # of 64 bits; copies differ by a few bits, different photos by ~32


def phash(path: str | Path) -> np.ndarray | None:
    """64-bit perceptual hash as a bool array, or None for an unreadable image."""
    try:
        rgb = load_image(path, max_side=256).rgb
    except ImageLoadError:
        return None
    from PIL import Image

    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    low = dctn(grey, norm="ortho")[:8, :8].reshape(-1)
    return low > np.median(low[1:])


def duplicate_groups(hashes: Sequence[np.ndarray | None], max_distance: int = HASH_DISTANCE) -> np.ndarray:
    """Group id per photo: photos linked (transitively) by hash distance <= max_distance share one."""
    n = len(hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    valid = [i for i, h in enumerate(hashes) if h is not None]
    if valid:
        bits = np.stack([hashes[i] for i in valid]).astype(np.uint8)
        dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
        for a, b in zip(*np.nonzero(np.triu(dist <= max_distance, 1))):
            ra, rb = find(valid[a]), find(valid[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    _, group = np.unique(roots, return_inverse=True)
    return group


def make_folds(paths: Sequence[str | Path], labels: Sequence[str], k: int = DEFAULTS.folds, seed: int = 0,
               groups: np.ndarray | None = None) -> pd.DataFrame:
    """``path, label, group, fold`` (folds numbered 1..k)."""
    labels = list(labels)
    if groups is None:
        groups = duplicate_groups([phash(p) for p in paths])
    check_fold_counts(labels, k)
    x = np.zeros(len(labels))
    if len(np.unique(groups)) < len(labels):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, labels, groups)
    else:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, labels)
    fold = np.zeros(len(labels), dtype=int)
    for f, (_, val) in enumerate(splitter, start=1):
        fold[val] = f
    return pd.DataFrame({"path": [str(p) for p in paths], "label": labels, "group": groups, "fold": fold})


def check_fold_counts(labels: Sequence[str], k: int, unit: str = "photos") -> None:
    """Every class needs a sample in every fold: a DatasetError that says what to do otherwise."""
    from ..errors import DatasetError

    counts = pd.Series(list(labels)).value_counts()
    small = counts[counts < k]
    if small.empty:
        return
    smallest = int(counts.min())
    names = ", ".join(f"{c!r} ({n})" for c, n in small.sort_values().items())
    fix = (f"use --folds {smallest} or fewer, or add {unit}" if smallest >= 2
           else f"add {unit} (every class needs at least 2) or remove that class's folder")
    raise DatasetError(f"classes with fewer {unit} than the {k} folds: {names}; {fix}.")
