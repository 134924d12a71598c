"""Data sets: image folders, Yoga-82 list files and left/right flip pairs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from hybridpose.data.datasets import YOGA82_CLASS6, YOGA82_LEVELS, list_images, load_dataset, parse_flip_pairs
from hybridpose.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
YOGA82 = ROOT.parent / "shared" / "data" / "yoga82"

# A few lines of Yoga-82's yoga_train.txt and the matching rows of yoga82_hierarchy.csv
# (Folder/image.jpg,class6,class20,class82), kept here so the tests run without the data set.
YOGA82_LINES = [
    "Akarna_Dhanurasana/64.jpg,1,8,0",
    "Akarna_Dhanurasana/229.jpg,1,8,0",
    "Bharadvaja's_Twist_pose_or_Bharadvajasana_I_/324.jpg,1,5,1",
    "Boat_Pose_or_Paripurna_Navasana_/643.jpg,5,19,2",
    "Bound_Angle_Pose_or_Baddha_Konasana_/2_306.jpg,1,4,3",
    "Bow_Pose_or_Dhanurasana_/317.jpg,5,19,4",
]
YOGA82_HIERARCHY = """class82_id,pose_name,class20_id,class6_id
0,Akarna_Dhanurasana,8,1
1,Bharadvaja's_Twist_pose_or_Bharadvajasana_I_,5,1
2,Boat_Pose_or_Paripurna_Navasana_,19,5
3,Bound_Angle_Pose_or_Baddha_Konasana_,4,1
4,Bow_Pose_or_Dhanurasana_,19,5
"""


def _image(path: Path, size=(40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 110, 130)).save(path)


# --- image folders ----------------------------------------------------------------------


def test_sample_folder_loads():
    ds = load_dataset(SAMPLE)
    assert len(ds) == 80
    assert ds.hierarchy.levels == ["class", "subgroup", "group"]
    assert len(ds.hierarchy.leaves) == 8
    assert all(p.parent.name == y for p, y in zip(ds.paths, ds.labels))
    assert {ds.labels.count(c) for c in ds.hierarchy.leaves} == {10}
    assert ds.paths == sorted(ds.paths)
    assert ds.flip_pairs == {}
    assert set(ds.level_labels("group")) == {"standing", "sitting"}


def test_folder_finds_nested_images_and_skips_others(tmp_path):
    root = tmp_path / "data"
    _image(root / "A" / "one.jpg")
    _image(root / "A" / "deeper" / "two.PNG")
    _image(root / "A" / ".hidden.jpg")
    _image(root / "A" / ".thumbs" / "three.jpg")
    (root / "A" / "notes.txt").write_text("not an image")
    _image(root / "B" / "four.webp")
    _image(root / ".git" / "x.jpg")  # hidden folder: not a class
    ds = load_dataset(root)
    assert ds.hierarchy.leaves == ["A", "B"]
    assert ds.hierarchy.levels == ["class"]  # no hierarchy.csv: flat
    assert sorted(p.name for p in ds.paths) == ["four.webp", "one.jpg", "two.PNG"]
    assert ds.labels.count("A") == 2


def test_list_images_of_a_single_file(tmp_path):
    _image(tmp_path / "x.jpg")
    assert list_images(tmp_path / "x.jpg") == [tmp_path / "x.jpg"]


def test_folder_without_class_folders(tmp_path):
    _image(tmp_path / "loose.jpg")
    with pytest.raises(DatasetError, match="no class sub-folders") as info:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_an_image_file_as_data_set_is_a_clear_error(tmp_path):
    _image(tmp_path / "photo.jpg")
    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path / "photo.jpg")
    assert "photo.jpg" in str(info.value)


# --- Yoga-82 lists ----------------------------------------------------------------------


def _yoga82(tmp_path: Path, lines: list[str], with_names: bool = True, make_images: bool = True) -> tuple[Path, Path]:
    lists = tmp_path / "lists"
    lists.mkdir()
    list_file = lists / "yoga_train.txt"
    list_file.write_text("\n".join(lines) + "\n")
    if with_names:
        (lists / "yoga82_hierarchy.csv").write_text(YOGA82_HIERARCHY)
    images = tmp_path / "images"
    images.mkdir()
    if make_images:
        for line in filter(str.strip, lines):
            _image(images / line.rsplit(",", 3)[0])
    return list_file, images


def test_yoga82_list_levels_and_names(tmp_path):
    list_file, images = _yoga82(tmp_path, YOGA82_LINES)
    ds = load_dataset(list_file, images=images)
    h = ds.hierarchy
    assert h.levels == YOGA82_LEVELS == ["class82", "class20", "class6"]
    assert len(ds) == len(YOGA82_LINES)
    assert ds.labels[0] == "Akarna_Dhanurasana"
    assert ds.paths[0] == images / "Akarna_Dhanurasana" / "64.jpg"
    assert all(p.exists() for p in ds.paths)
    assert h.path("Akarna_Dhanurasana") == {"class82": "Akarna_Dhanurasana", "class20": "class20_08",
                                           "class6": YOGA82_CLASS6[1]}
    assert h.ancestor("Bow_Pose_or_Dhanurasana_", "class6") == YOGA82_CLASS6[5] == "wheel"
    assert h.ancestor("Bharadvaja's_Twist_pose_or_Bharadvajasana_I_", "class20") == "class20_05"
    assert len(h.leaves) == 5
    assert ds.level_labels("class6") == ["sitting", "sitting", "sitting", "wheel", "sitting", "wheel"]


def test_yoga82_without_names_file_uses_ids(tmp_path):
    list_file, images = _yoga82(tmp_path, YOGA82_LINES, with_names=False)
    ds = load_dataset(list_file, images=images)
    assert ds.labels[0] == "class82_00"
    assert "class82_04" in ds.hierarchy.leaves


def test_yoga82_real_list_head(tmp_path):
    """The first lines of the real yoga_train.txt with dummy images (skipped without the data set)."""
    src = YOGA82 / "yoga_train.txt"
    if not src.exists():
        pytest.skip(f"{src} not available")
    with open(src, encoding="utf-8") as fh:
        lines = [next(fh).strip() for _ in range(200)][::20]
    list_file, images = _yoga82(tmp_path, lines, with_names=False)
    shutil.copyfile(YOGA82 / "yoga82_hierarchy.csv", list_file.parent / "yoga82_hierarchy.csv")
    ds = load_dataset(list_file, images=images)
    assert ds.hierarchy.levels == ["class82", "class20", "class6"]
    assert all(not y.startswith("class82_") for y in ds.labels)
    assert set(ds.level_labels("class6")) <= set(YOGA82_CLASS6)


def test_yoga82_missing_image_root(tmp_path):
    list_file, _ = _yoga82(tmp_path, YOGA82_LINES)
    with pytest.raises(DatasetError, match="--images") as info:
        load_dataset(list_file, images=tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_yoga82_no_image_present(tmp_path):
    list_file, images = _yoga82(tmp_path, YOGA82_LINES, make_images=False)
    with pytest.raises(DatasetError, match="none of the 6 images"):
        load_dataset(list_file, images=images)


def test_yoga82_images_that_never_downloaded_are_left_out(tmp_path, capsys):
    list_file, images = _yoga82(tmp_path, YOGA82_LINES)
    (images / "Akarna_Dhanurasana" / "64.jpg").unlink()
    ds = load_dataset(list_file, images=images)
    assert len(ds) == 5 and all(p.exists() for p in ds.paths)
    assert images / "Akarna_Dhanurasana" / "64.jpg" not in ds.paths
    assert "1 of 6 images" in capsys.readouterr().err


def test_yoga82_malformed_line_is_named(tmp_path):
    list_file, images = _yoga82(tmp_path, [*YOGA82_LINES[:2], "Akarna_Dhanurasana/1.jpg,one,8,0"])
    with pytest.raises(DatasetError) as info:
        load_dataset(list_file, images=images)
    assert f"{list_file}:3" in str(info.value)


def test_yoga82_class_with_two_parents(tmp_path):
    list_file, images = _yoga82(tmp_path, [YOGA82_LINES[0], "Akarna_Dhanurasana/9.jpg,1,9,0"])
    with pytest.raises(DatasetError, match="two parents") as info:
        load_dataset(list_file, images=images)
    assert f"{list_file}:2" in str(info.value)


def test_yoga82_empty_list(tmp_path):
    list_file, images = _yoga82(tmp_path, [""])
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(list_file, images=images)


# --- flip pairs -------------------------------------------------------------------------


@pytest.fixture
def lr_folder(tmp_path) -> Path:
    root = tmp_path / "lr"
    for c in ("Left_Lunge", "Right_Lunge", "Tree"):
        _image(root / c / "a.jpg")
    return root


def test_flip_pairs_option(lr_folder):
    ds = load_dataset(lr_folder, flip_pairs=" Left_Lunge : Right_Lunge ")
    assert ds.flip_pairs == {"Left_Lunge": "Right_Lunge", "Right_Lunge": "Left_Lunge"}


def test_flip_pairs_csv_at_data_root(lr_folder):
    (lr_folder / "flip_pairs.csv").write_text("left,right\nLeft_Lunge,Right_Lunge\n")
    ds = load_dataset(lr_folder)
    assert ds.flip_pairs == {"Left_Lunge": "Right_Lunge", "Right_Lunge": "Left_Lunge"}


def test_flip_pairs_option_wins_over_csv(lr_folder):
    (lr_folder / "flip_pairs.csv").write_text("left,right\nLeft_Lunge,Right_Lunge\n")
    ds = load_dataset(lr_folder, flip_pairs="Tree:Left_Lunge")
    assert ds.flip_pairs == {"Tree": "Left_Lunge", "Left_Lunge": "Tree"}


@pytest.mark.parametrize("spec,needle", [("Left_Lunge:Nope", "'Nope'"), ("Left_Lunge-Right_Lunge", "LEFT_CLASS:RIGHT_CLASS")])
def test_bad_flip_pairs(lr_folder, spec, needle):
    with pytest.raises(DatasetError) as info:
        load_dataset(lr_folder, flip_pairs=spec)
    assert needle in str(info.value)


def test_no_flip_pairs(lr_folder):
    ds = load_dataset(lr_folder)
    assert parse_flip_pairs(None, ds) == {} and parse_flip_pairs("", ds) == {}


@pytest.mark.parametrize("content,needles", [
    ("left,right\nLeft_Lunge\n", [":2", "left,right"]),
    ("left,right\nLeft_Lunge,Nope\n", [":2", "'Nope'"]),
    ("Left_Lunge,Right_Lunge\nTree,Right_Lunge\n", [":2", "two flip pairs"]),
    ("left;right\nLeft_Lunge;Tree;Right_Lunge\n", [":2", "left,right"]),
], ids=["one_column", "unknown_class", "class_in_two_pairs", "three_columns"])
def test_bad_flip_pairs_file_is_named_with_its_line(lr_folder, content, needles):
    (lr_folder / "flip_pairs.csv").write_text(content)
    with pytest.raises(DatasetError) as info:
        load_dataset(lr_folder)
    assert str(lr_folder / "flip_pairs.csv") in str(info.value)
    for needle in needles:
        assert needle in str(info.value)


def test_flip_pairs_file_with_semicolons_and_no_header(lr_folder):
    (lr_folder / "flip_pairs.csv").write_text("Left_Lunge;Right_Lunge\n\n")
    assert load_dataset(lr_folder).flip_pairs == {"Left_Lunge": "Right_Lunge", "Right_Lunge": "Left_Lunge"}


def test_hierarchy_option_with_a_yoga82_list_is_refused(tmp_path):
    list_file, images = _yoga82(tmp_path, YOGA82_LINES)
    hfile = tmp_path / "h.csv"
    hfile.write_text("class,group\nAkarna_Dhanurasana,g\n")
    with pytest.raises(DatasetError, match="--hierarchy") as info:
        load_dataset(list_file, images=images, hierarchy=hfile)
    assert "Yoga-82" in str(info.value)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(list_file, images=images, hierarchy=tmp_path / "missing.csv")


def test_images_option_with_an_image_folder_is_refused(lr_folder, tmp_path):
    with pytest.raises(DatasetError, match="--images"):
        load_dataset(lr_folder, images=tmp_path)


def test_undeclared_mirror_pairs_are_found_by_name():
    from hybridpose.data.datasets import undeclared_mirror_pairs

    assert undeclared_mirror_pairs(["down", "left", "right", "up"], {}) == [("left", "right")]
    assert undeclared_mirror_pairs(["turn_left", "turn_right", "leftover"], {}) == [("turn_left", "turn_right")]
    assert undeclared_mirror_pairs(["left", "right"], {"left": "right", "right": "left"}) == []
    assert undeclared_mirror_pairs(["left_arm_up", "up"], {}) == []  # no partner class


def test_fit_warns_about_undeclared_mirror_classes(tmp_path, capsys):
    from types import SimpleNamespace

    from hybridpose.data.hierarchy import Hierarchy
    from hybridpose.train.fit import _warn_undeclared_mirrors

    _warn_undeclared_mirrors(SimpleNamespace(hierarchy=Hierarchy.flat(["left", "palm", "right"]), flip_pairs={}))
    err = " ".join((capsys.readouterr().err).split())
    assert "'left'/'right'" in err and "--flip-pairs left:right" in err
    _warn_undeclared_mirrors(SimpleNamespace(hierarchy=Hierarchy.flat(["left", "right"]),
                                             flip_pairs={"left": "right", "right": "left"}))
    assert "flip" not in capsys.readouterr().err
