"""Cross-validation folds: near-duplicates stay together, classes are stratified, seeds reproduce."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from hybridpose.data.folds import HASH_DISTANCE, duplicate_groups, make_folds, phash
from hybridpose.errors import DatasetError


def _distance(a, b) -> int:
    return int((a != b).sum())


@pytest.fixture(scope="module")
def photos_with_copies(sample_dataset, tmp_path_factory):
    """20 sample photos (4 classes x 5) plus a near-duplicate of one photo of each class."""
    out = tmp_path_factory.mktemp("dups")
    classes = sample_dataset.hierarchy.leaves[:4]
    paths, labels, pairs = [], [], []
    for c in classes:
        mine = [p for p, y in zip(sample_dataset.paths, sample_dataset.labels) if y == c][:5]
        paths += mine
        labels += [c] * len(mine)
        with Image.open(mine[0]) as img:
            img = img.convert("RGB")
            small = img.resize((int(img.width * 0.6), int(img.height * 0.6)), Image.LANCZOS)
            small = ImageEnhance.Brightness(small).enhance(1.05)
            copy = out / f"{c}_copy.jpg"
            small.save(copy, quality=55)  # resized, a bit brighter, re-encoded
        pairs.append((len(paths) - len(mine), len(paths)))
        paths.append(copy)
        labels.append(c)
    return paths, labels, pairs


def test_phash_of_copies_is_close_and_of_others_far(photos_with_copies):
    paths, _, pairs = photos_with_copies
    hashes = [phash(p) for p in paths]
    assert all(h is not None and h.shape == (64,) and h.dtype == bool for h in hashes)
    for a, b in pairs:
        assert _distance(hashes[a], hashes[b]) <= HASH_DISTANCE
    originals = [i for i in range(len(paths)) if i not in {b for _, b in pairs}]
    far = [_distance(hashes[i], hashes[j]) for i in originals for j in originals if i < j]
    assert np.median(far) > 20


def test_phash_unreadable_is_none(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert phash(bad) is None


def test_copies_share_group_and_fold(photos_with_copies):
    paths, labels, pairs = photos_with_copies
    table = make_folds(paths, labels, k=3, seed=0)
    assert list(table.columns) == ["path", "label", "group", "fold"]
    assert list(table["path"]) == [str(p) for p in paths]
    for a, b in pairs:
        assert table["group"].iat[a] == table["group"].iat[b]
        assert table["fold"].iat[a] == table["fold"].iat[b]
    # a copy only joins its own original
    for a, b in pairs:
        assert (table["group"] == table["group"].iat[a]).sum() == 2
    assert set(table["fold"]) == {1, 2, 3}


def test_duplicate_groups_transitive_and_none():
    base = np.zeros(64, bool)
    a = base.copy()
    b = base.copy()
    b[:6] = True                             # 6 from a
    c = base.copy()
    c[:12] = True                            # 6 from b, 12 from a: linked through b
    far = ~base                              # 64 from a
    groups = duplicate_groups([a, b, None, c, far, None])
    assert groups[0] == groups[1] == groups[3]
    assert len({groups[0], groups[2], groups[4], groups[5]}) == 4  # unreadable photos stay alone
    assert groups.min() == 0 and groups.max() == 3


def test_folds_are_stratified():
    labels = ["a"] * 20 + ["b"] * 11 + ["c"] * 7
    paths = [f"p{i}.jpg" for i in range(len(labels))]
    table = make_folds(paths, labels, k=5, seed=3, groups=np.arange(len(labels)))
    counts = pd.crosstab(table["label"], table["fold"])
    assert list(counts.columns) == [1, 2, 3, 4, 5]
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()
    assert counts.sum(axis=1).to_dict() == {"a": 20, "b": 11, "c": 7}


def test_grouped_folds_still_cover_every_class():
    rng = np.random.default_rng(0)
    labels = [c for c in "abcd" for _ in range(12)]
    groups = np.arange(len(labels))
    groups[1::4] = groups[0::4]  # pairs of duplicates within each class
    table = make_folds([f"p{i}" for i in range(len(labels))], labels, k=3, seed=int(rng.integers(100)), groups=groups)
    counts = pd.crosstab(table["label"], table["fold"])
    assert (counts >= 2).all().all()
    for g, part in table.groupby("group"):
        assert part["fold"].nunique() == 1


def test_folds_reproducible_with_seed():
    labels = [c for c in "abc" for _ in range(10)]
    paths = [f"p{i}" for i in range(30)]
    groups = np.arange(30)
    one = make_folds(paths, labels, k=3, seed=7, groups=groups)
    two = make_folds(paths, labels, k=3, seed=7, groups=groups)
    pd.testing.assert_frame_equal(one, two)
    other = make_folds(paths, labels, k=3, seed=8, groups=groups)
    assert not other["fold"].equals(one["fold"])


def test_folds_from_photos_reproducible(photos_with_copies):
    paths, labels, _ = photos_with_copies
    pd.testing.assert_frame_equal(make_folds(paths, labels, k=3, seed=1), make_folds(paths, labels, k=3, seed=1))


def test_too_few_photos_per_class():
    labels = ["a"] * 6 + ["rare"] * 2
    with pytest.raises(DatasetError) as info:
        make_folds([f"p{i}" for i in range(8)], labels, k=3, groups=np.arange(8))
    msg = str(info.value)
    assert "'rare'" in msg and "--folds" in msg
