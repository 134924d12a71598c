"""Class hierarchy: level lookups, the leaf -> level matrix, and hierarchy.csv validation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridpose.data.datasets import load_dataset
from hybridpose.data.hierarchy import Hierarchy, read_hierarchy_csv
from hybridpose.errors import DatasetError

H = Hierarchy(["class", "subgroup", "group"], {
    "Tree": ["upright", "standing"], "Chair": ["upright", "standing"],
    "Triangle": ["side_bend", "standing"], "Bound": ["normal", "sitting"],
})


def test_levels_and_classes():
    assert H.leaf_level == "class"
    assert H.leaves == ["Bound", "Chair", "Tree", "Triangle"]
    assert H.classes("class") == H.leaves
    assert H.classes("subgroup") == ["normal", "side_bend", "upright"]
    assert H.classes("group") == ["sitting", "standing"]
    assert H.path("Tree") == {"class": "Tree", "subgroup": "upright", "group": "standing"}
    assert H.ancestor("Bound", "group") == "sitting"
    with pytest.raises(KeyError, match="unknown hierarchy level"):
        H.classes("family")


def test_leaf_to_level_matrix():
    m = H.leaf_to_level("group")
    assert m.shape == (4, 2)
    assert (m.sum(1) == 1).all()
    for i, leaf in enumerate(H.leaves):
        assert H.classes("group")[m[i].argmax()] == H.ancestor(leaf, "group")
    np.testing.assert_array_equal(H.leaf_to_level("class"), np.eye(4))


def test_siblings_share_the_parent():
    assert set(H.siblings()) == {("Chair", "Tree")}
    flat = Hierarchy.flat(["a", "b", "c"])
    assert flat.levels == ["class"] and len(flat.siblings()) == 3


def test_dict_round_trip_and_subset():
    again = Hierarchy.from_dict(H.to_dict())
    assert again.levels == H.levels and again.ancestors == H.ancestors
    sub = H.subset(["Tree", "Bound"])
    assert sub.leaves == ["Bound", "Tree"] and sub.classes("group") == ["sitting", "standing"]


def test_wrong_number_of_ancestors_raises():
    with pytest.raises(DatasetError, match="ancestors"):
        Hierarchy(["class", "group"], {"a": ["g", "extra"]})


def test_sample_hierarchy_reads():
    h = read_hierarchy_csv(Path(__file__).resolve().parents[1] / "data" / "sample" / "hierarchy.csv")
    assert h.levels == ["class", "subgroup", "group"]
    assert len(h.leaves) == 8
    assert h.classes("group") == ["sitting", "standing"]


# --- validation through an image folder: every error names the file ------------------------


def _folder(root: Path, classes: list[str], hierarchy: str | None, empty: tuple[str, ...] = ()) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        if c not in empty:
            Image.new("RGB", (40, 40), (100, 120, 140)).save(root / c / "a.jpg")
    if hierarchy is not None:
        (root / "hierarchy.csv").write_text(hierarchy)
    return root


def _error(root: Path, **kw) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(root, **kw)
    return str(info.value)


def test_valid_folder_with_hierarchy(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B", "C"], "class,group\nA,g1\nB,g1\nC,g2\nUnused,g3\n")
    ds = load_dataset(root)
    assert ds.hierarchy.levels == ["class", "group"]
    assert ds.hierarchy.leaves == ["A", "B", "C"]  # rows without a folder are dropped
    assert ds.level_labels("group") == ["g1", "g1", "g2"]


def test_class_missing_from_hierarchy(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B", "Extra"], "class,group\nA,g1\nB,g2\n")
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and "Extra" in msg


def test_class_with_two_parents(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], "class,group\nA,g1\nB,g1\nA,g2\n")
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and "'A'" in msg and ":4" in msg


def test_same_class_listed_twice_with_same_parent_is_fine(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], "class,group\nA,g1\nB,g1\nA,g1\n")
    assert load_dataset(root).hierarchy.ancestor("A", "group") == "g1"


def test_mid_level_class_with_two_parents(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], "class,subgroup,group\nA,s1,G1\nB,s1,G2\n")
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and "'s1'" in msg and "subgroup" in msg


def test_empty_class_folder(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B", "Empty"], "class,group\nA,g\nB,g\nEmpty,g\n", empty=("Empty",))
    msg = _error(root)
    assert str(root) in msg and "Empty" in msg


def test_missing_data_root(tmp_path):
    msg = _error(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in msg


def test_explicit_hierarchy_file_missing(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], None)
    msg = _error(root, hierarchy=tmp_path / "h.csv")
    assert str(tmp_path / "h.csv") in msg


def test_class_without_its_root_level(tmp_path):
    """A row whose coarsest (root) cell is empty would create a nameless class at that level."""
    root = _folder(tmp_path / "d", ["A", "B"], "class,subgroup,group\nA,s1,G1\nB,s2,\n")
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and "'B'" in msg


@pytest.mark.parametrize("text,needle", [
    ("class,group\nA,g1,extra\nB,g1\n", ":2"),       # wrong column count, line named
    ("class,class\nA,g1\nB,g1\n", "header"),         # a level named twice
    ("class,group\n", "header row and one row"),     # no classes
])
def test_malformed_hierarchy_files(tmp_path, text, needle):
    root = _folder(tmp_path / "d", ["A", "B"], text)
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and needle in msg


def test_explicit_hierarchy_option(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], None)
    hfile = tmp_path / "elsewhere.csv"
    hfile.write_text("\ufeffpose,family\nA,f\nB,f\n")  # a BOM from a spreadsheet export
    ds = load_dataset(root, hierarchy=hfile)
    assert ds.hierarchy.levels == ["pose", "family"]


@pytest.mark.parametrize("sep", [";", "\t"])
def test_spreadsheet_separators_are_detected(tmp_path, sep):
    root = _folder(tmp_path / "d", ["A", "B"], f"class{sep}group\nA{sep}g1\nB{sep}g2\n")
    ds = load_dataset(root)
    assert ds.hierarchy.levels == ["class", "group"] and ds.level_labels("group") == ["g1", "g2"]


def test_unknown_separator_is_named(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], "class|group\nA|g1\nB|g2\n")
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and "one column" in msg and "commas" in msg


def test_hierarchy_that_is_not_utf8(tmp_path):
    root = _folder(tmp_path / "d", ["A", "B"], None)
    (root / "hierarchy.csv").write_bytes("class,group\nA,gr\xfcn\nB,g\n".encode("latin-1"))
    msg = _error(root)
    assert str(root / "hierarchy.csv") in msg and "UTF-8" in msg
