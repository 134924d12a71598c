"""explain writes one PNG per photo, also when two photos share a file name."""
from pathlib import Path

from hybridpose.explanation.photos import output_names


def test_distinct_names_when_stems_repeat(tmp_path):
    paths = [tmp_path / "tree" / "a.jpg", tmp_path / "warrior" / "a.jpg", tmp_path / "warrior" / "b.png"]
    names = output_names(paths)
    assert len(set(names)) == 3
    assert names == ["tree__a_jpg", "warrior__a_jpg", "warrior__b_png"]


def test_plain_stems_when_unique(tmp_path):
    assert output_names([tmp_path / "x" / "a.jpg", tmp_path / "y" / "b.jpg"]) == ["a", "b"]
    assert output_names([Path("a.jpg"), Path("a.png")]) == ["a_jpg", "a_png"]  # same folder, same stem
