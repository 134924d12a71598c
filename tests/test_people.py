"""Several people per photo (issue 22): the multi-person pose model, a row per person in extract and
predict, the single-person path unchanged, the pose cache keeping every person under its own key."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
# one-person photos of data/sample whose 2 x 1 tile the model reads as two people
LEFT, RIGHT = SAMPLE / "Triangle" / "triangle1.jpg", SAMPLE / "UtkataKonasana" / "UK_41.jpg"


def tile(paths: list[Path], dest: Path, height: int = 320) -> Path:
    """The photos resized to one height and pasted side by side."""
    ims = [Image.open(p).convert("RGB") for p in paths]
    ims = [im.resize((round(im.width * height / im.height), height)) for im in ims]
    out = Image.new("RGB", (sum(im.width for im in ims), height), (127, 127, 127))
    x = 0
    for im in ims:
        out.paste(im, (x, 0))
        x += im.width
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.save(dest, quality=95)
    return dest


@pytest.fixture(scope="module")
def people_model():
    from hybridpose.pose.estimators.mediapipe_people import PeopleEstimator

    with PeopleEstimator() as est:
        yield est


def test_the_bundle_is_built_from_the_wheel_once_and_named_by_its_version(tmp_path):
    from hybridpose.pose.estimators.mediapipe_people import bundle_path, mediapipe_version

    path = bundle_path(tmp_path)
    assert path.is_file() and mediapipe_version() in path.name and path.parent == tmp_path / "models"
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["pose_detector.tflite", "pose_landmarks_detector.tflite"]
    stamp = path.stat().st_mtime_ns
    assert bundle_path(tmp_path) == path and path.stat().st_mtime_ns == stamp  # not built again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing half-written left beside it


def test_on_one_person_photos_the_keypoints_equal_the_legacy_models(people_model):
    from hybridpose.pose.estimators.mediapipe_pose import PoseEstimator

    diffs = []
    with PoseEstimator() as legacy:
        for p in [LEFT, RIGHT, SAMPLE / "Veerabhadrasana" / "Veerabhadrasana_1.jpg"]:
            rgb = np.asarray(Image.open(p).convert("RGB"))
            people = people_model.people(rgb)
            assert len(people) == 1 and 0.5 < people[0][1] <= 1.0
            diffs.append(np.abs(people[0][0][:, :2] - legacy.landmarks(rgb)[:, :2]).mean())
    assert max(diffs) < 0.002 and np.mean(diffs) < 0.001, diffs


def test_two_photos_side_by_side_are_two_people_left_to_right(tmp_path):
    from hybridpose.pose.frontend import extract

    t = tile([LEFT, RIGHT], tmp_path / "two.jpg")
    width = Image.open(t).width
    split = Image.open(LEFT).width * 320 / Image.open(LEFT).height
    table = extract([t], max_people=4, show_progress=False)
    assert table["person"].tolist() == [0, 1] and (table["status"] == "ok").all()
    centres = (table["box_x0"] + table["box_x1"]) / 2
    assert centres[0] < split < centres[1] < width
    assert table["person_score"].between(0.5, 1.0).all()
    one = extract([t], max_people=1, show_progress=False)  # the single-person table: one row, no person columns
    assert len(one) == 1 and "person" not in one
    largest = extract([t], max_people=4, show_progress=False, use_cache=False)
    assert len(largest) == 2


def test_a_photo_with_nobody_is_still_one_row(tmp_path, people_model):
    from hybridpose.pose.frontend import extract

    empty = tmp_path / "empty.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (150, 1, 3))).save(empty)
    table = extract([empty, LEFT], max_people=4, show_progress=False)
    assert table["path"].tolist() == [str(empty), str(LEFT)]
    assert table["status"].tolist() == ["no_person", "ok"] and table["person"].tolist() == [0, 0]
    assert np.isnan(table.loc[0, "box_x0"]) and np.isnan(table.loc[0, "person_score"])


def test_max_people_keeps_the_largest_left_to_right():
    from hybridpose.pose.result import PoseResult

    def person(x0, size):
        return {"box": [x0, 0.0, x0 + size, size], "keypoints": [[x0, 0.0, 0.0, 1.0]] * 2, "score": 0.9}

    r = PoseResult("ok", "", 300, 100, (100.0, 0.0, 180.0, 80.0), [[100.0, 0.0, 0.0, 1.0]] * 2,
                   [person(0.0, 30.0), person(100.0, 80.0), person(200.0, 50.0)])
    assert [p.box[0] for p in r.persons()] == [0.0, 100.0, 200.0]
    assert [(p.index, p.box[0]) for p in r.persons(2)] == [(0, 100.0), (1, 200.0)]
    assert [p.box[0] for p in r.persons(1)] == [100.0]
    back = PoseResult.from_json(r.to_json())
    assert back == PoseResult(**{**r.__dict__, "box": tuple(r.box)})


def test_the_cache_keeps_every_person_and_never_takes_an_old_single_person_entry(tmp_path):
    from hybridpose.pose.cache import PoseCache
    from hybridpose.pose.estimators.mediapipe_people import PeopleEstimator
    from hybridpose.pose.estimators.mediapipe_pose import POSE_VERSION
    from hybridpose.pose.frontend import extract

    cache = tmp_path / "cache"
    t = tile([LEFT, RIGHT], tmp_path / "two.jpg")
    old = extract([t], cache_dir=cache, show_progress=False)  # a single-person entry for the same content
    assert len(old) == 1
    new = extract([t], cache_dir=cache, max_people=4, show_progress=False)
    assert len(new) == 2  # not the single-person entry
    sha = new.loc[0, "sha256"]
    old_entry = PoseCache(cache, POSE_VERSION).get_many([sha])[sha]
    new_entry = PoseCache(cache, PeopleEstimator.version).get_many([sha])[sha]
    assert old_entry.people is None and len(new_entry.people) == 2
    assert '"people"' not in old_entry.to_json()  # a single-person model's entries are stored as before
    again = extract([t], cache_dir=cache, max_people=4, show_progress=False)
    pd.testing.assert_frame_equal(again, new)


def test_a_damaged_person_list_is_a_miss():
    from hybridpose.pose.result import PoseResult

    good = PoseResult("ok", "", 10, 10, (0.0, 0.0, 5.0, 5.0), [[1.0, 1.0, 0.0, 1.0]],
                      [{"box": [0.0, 0.0, 5.0, 5.0], "keypoints": [[1.0, 1.0, 0.0, 1.0]], "score": 0.8}]).to_json()
    for bad in (good.replace('"score": 0.8', '"score": "x"'), good.replace('"people": [', '"people": [1, ')):
        with pytest.raises(ValueError):
            PoseResult.from_json(bad)


def test_predict_gives_a_row_per_person_and_one_row_per_photo_with_max_people_1(tiny_run, tmp_path):
    import hybridpose
    from hybridpose.inference.classifier import PERSON_ROW_COLUMNS

    photos = tmp_path / "photos"
    tile([LEFT, RIGHT], photos / "two.jpg")
    (photos / "one.jpg").write_bytes(LEFT.read_bytes())
    for workers in (0, 1):
        out = tmp_path / f"p{workers}.csv"
        res = hybridpose.predict(photos, tiny_run, out, workers=workers, show_progress=False, max_people=4)
        assert res["images"] == 2 and res["rows"] == 3
        got = pd.read_csv(out)
        assert list(got.columns[:3 + len(PERSON_ROW_COLUMNS)]) == ["path", "status", "reason", *PERSON_ROW_COLUMNS]
        assert [(Path(p).name, i) for p, i in zip(got["path"], got["person"])] == [("one.jpg", 0), ("two.jpg", 0),
                                                                                 ("two.jpg", 1)]
        assert got["class"].notna().all()
    single = tmp_path / "single.csv"
    hybridpose.predict(photos, tiny_run, single, workers=0, show_progress=False, max_people=1)
    one = pd.read_csv(single)
    assert len(one) == 2 and (one["person"] == 0).all() and one["person_score"].isna().all()
    # the one-person photo: the same label either way
    assert one.loc[0, "class"] == got.loc[0, "class"]


def test_cli_max_people(tmp_path):
    out = tmp_path / "x"
    tile([LEFT, RIGHT], tmp_path / "in" / "two.jpg")
    proc = subprocess.run([sys.executable, "-m", "hybridpose_cli.main", "extract", str(tmp_path / "in"), "--out", str(out),
                           "--max-people", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pd.read_csv(out / "poses.csv")["person"].tolist() == [0, 1]
    proc = subprocess.run([sys.executable, "-m", "hybridpose_cli.main", "extract", str(tmp_path / "in"), "--out", str(out),
                           "--max-people", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_choose_person_largest_or_center():
    from hybridpose.pose.frontend import choose_person

    table = pd.DataFrame({"path": ["a", "a", "a", "b", "c"], "status": ["ok", "ok", "ok", "no_person", "ok"],
                          "width": [300] * 5, "height": [100] * 5, "person": [0, 1, 2, 0, 0],
                          "box_x0": [0.0, 120.0, 250.0, np.nan, 10.0], "box_y0": [0.0, 20.0, 0.0, np.nan, 10.0],
                          "box_x1": [100.0, 180.0, 300.0, np.nan, 20.0], "box_y1": [100.0, 80.0, 50.0, np.nan, 20.0]})
    largest, several = choose_person(table, "largest")
    assert several == 1 and largest["path"].tolist() == ["a", "b", "c"] and largest["person"].tolist() == [0, 0, 0]
    assert largest["people"].tolist() == [3, 0, 1]
    center, _ = choose_person(table, "center")
    assert center["person"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError):
        choose_person(table, "tallest")


def test_fit_gives_each_training_photo_to_one_person_and_records_the_choice(tmp_path):
    import json

    from hybridpose.errors import ConfigError
    from hybridpose.train.fit import prepare

    data = tmp_path / "data"
    for cls, photos in {"Triangle": [LEFT, SAMPLE / "Triangle" / "triangle37.jpg"],
                        "UtkataKonasana": [RIGHT, SAMPLE / "UtkataKonasana" / "UK_10.jpg"]}.items():
        for p in photos:
            (data / cls).mkdir(parents=True, exist_ok=True)
            (data / cls / p.name).write_bytes(p.read_bytes())
    tile([LEFT, RIGHT], data / "Triangle" / "two.jpg")  # a small person left, a larger one right
    with pytest.raises(ConfigError):
        prepare(data, tmp_path / "bad", folds=2, preset="tiny", show_progress=False, max_people=2, person="tallest")
    assert not (tmp_path / "bad").exists()
    chosen = {}
    for how in ("largest", "center"):
        run = prepare(data, tmp_path / how, folds=2, preset="tiny", show_progress=False, max_people=4, person=how)
        poses = pd.read_csv(run.poses)
        assert len(poses) == 5 and poses["people"].tolist().count(2) == 1
        config = json.loads(run.config.read_text())
        assert config["people"] == {"max_people": 4, "person": how}
        assert f"--max-people 4 --person {how}" in run.fit_command(config)
        chosen[how] = poses.loc[poses["path"].str.endswith("two.jpg"), "person"].item()
    largest_box = extract_boxes(data / "Triangle" / "two.jpg")
    assert chosen["largest"] == int(np.argmax(largest_box))
    plain = prepare(data, tmp_path / "plain", folds=2, preset="tiny", show_progress=False)
    assert "people" not in json.loads(plain.config.read_text()) and "person" not in pd.read_csv(plain.poses)


def extract_boxes(photo: Path) -> list[float]:
    from hybridpose.pose.frontend import extract

    t = extract([photo], max_people=4, show_progress=False)
    return ((t["box_x1"] - t["box_x0"]) * (t["box_y1"] - t["box_y0"])).tolist()


def cells_tile(paths: list[Path], dest: Path, cell: int = 400) -> Path:
    """The photos letterboxed into ``cell`` px squares (grey) and tiled 2 x 2, left to right, top to bottom."""
    out = Image.new("RGB", (2 * cell, 2 * cell), (127, 127, 127))
    for j, p in enumerate(paths):
        im = Image.open(p).convert("RGB")
        s = cell / max(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)))
        out.paste(im, ((j % 2) * cell + (cell - im.width) // 2, (j // 2) * cell + (cell - im.height) // 2))
    out.save(dest, quality=95)
    return dest


def test_four_people_too_small_for_one_look_are_found_in_the_quarters(tmp_path, people_model):
    from hybridpose.pose.frontend import extract

    names = ["natarajasana_a", "vrukshasana_a", "natarajasana_b", "vrukshasana_b"]
    t = cells_tile([ROOT / "tests" / "data" / "people" / f"{n}.jpg" for n in names], tmp_path / "four.jpg")
    assert people_model._detect(np.asarray(Image.open(t).convert("RGB"))) == []  # the whole tile: nobody
    table = extract([t], max_people=4, show_progress=False, cache_dir=tmp_path / "cache")
    assert (table["status"] == "ok").all() and len(table) == 4
    cells = ((table["box_x0"] + table["box_x1"]) / 2 // 400 + 2 * ((table["box_y0"] + table["box_y1"]) / 2 // 400))
    assert sorted(cells.astype(int)) == [0, 1, 2, 3]  # one person per cell, none twice


class _Scripted:
    """A stand-in detector: the people it "finds" in a region are given by the region's size."""

    def __init__(self, by_size):
        self.by_size, self.regions = by_size, []

    def __call__(self, rgb):
        self.regions.append(rgb.shape[:2])
        return [p.copy() for p in self.by_size(rgb.shape[0], rgb.shape[1])]


def _body(presence: float, visibility: float, height: float) -> np.ndarray:
    kp = np.zeros((33, 5))
    kp[:, 0] = np.linspace(0.4, 0.6, 33)
    kp[:, 1] = np.linspace(0.5 - height / 2, 0.5 + height / 2, 33)
    kp[:, 3], kp[:, 4] = visibility, presence
    return kp


@pytest.mark.parametrize("size, found, quarter_finds", [
    ((800, 800), 4, [_body(0.99, 0.95, 0.6)]),   # a sure, whole body in each quarter: kept
    ((800, 800), 0, [_body(0.99, 0.6, 0.6)]),    # an arm at a quarter's edge (low visibility): not kept
    ((800, 800), 0, [_body(0.6, 0.95, 0.6)]),    # the landmark model unsure: not kept
    ((400, 400), 0, [_body(0.99, 0.95, 0.6)]),   # quarters smaller than the detector's input: not searched
])
def test_the_quarters_are_searched_only_in_a_large_photo_with_nobody_and_keep_only_sure_bodies(size, found,
                                                                                            quarter_finds):
    from hybridpose.pose.estimators.mediapipe_people import PeopleEstimator

    est = PeopleEstimator.__new__(PeopleEstimator)  # no graph: the detector is scripted
    h, w = size
    est._detect = _Scripted(lambda rh, rw: quarter_finds if (rh, rw) == (h // 2, w // 2) else [])
    people = est.people(np.zeros((h, w, 3), np.uint8))
    assert len(people) == found
    assert ((h // 2, w // 2) in est._detect.regions) == (min(size) >= 448)


NOBODY_AT_FIRST = ROOT / "tests" / "data" / "people" / "vrukshasana_nobody_at_first.jpg"


@pytest.mark.parametrize("max_people", [1, 4])
def test_predict_second_look_labels_a_photo_the_first_look_found_nobody_in(tiny_run, tmp_path, max_people):
    import hybridpose
    from hybridpose.errors import ConfigError

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in (NOBODY_AT_FIRST, LEFT):
        (photos / p.name).write_bytes(p.read_bytes())
    got = {}
    for second, workers in ((None, 0), (True, 0), (True, 1)):
        out = tmp_path / f"p{second}{workers}.csv"
        hybridpose.predict(photos, tiny_run, out, workers=workers, show_progress=False, max_people=max_people,
                           second_look=second, cache_dir=tmp_path / "cache")
        got[second, workers] = pd.read_csv(out).set_index("path")
    first, again = got[None, 0], got[True, 0]
    nobody, other = str(photos / NOBODY_AT_FIRST.name), str(photos / LEFT.name)
    assert first.loc[nobody, "status"] == "no_person"  # the run's default: no second look
    assert again.loc[nobody, "status"] == "ok" and isinstance(again.loc[nobody, "class"], str)
    assert again.loc[other, "class"] == first.loc[other, "class"]  # a photo found at first is not looked at again
    assert got[True, 1]["class"].to_dict() == again["class"].to_dict()  # in worker processes the same
    with pytest.raises(ConfigError):
        hybridpose.predict(photos, tiny_run, tmp_path / "ray.csv", executor="ray", second_look=True)


def test_fit_second_look_is_recorded_and_predict_follows_it(tmp_path):
    import json

    from hybridpose.train.fit import prepare

    data = tmp_path / "data"
    for cls, photos in {"Vrukshasana": [NOBODY_AT_FIRST, SAMPLE / "Vrukshasana" / "1.jpg"],
                        "Triangle": [LEFT, SAMPLE / "Triangle" / "triangle37.jpg"]}.items():
        (data / cls).mkdir(parents=True)
        for p in photos:
            (data / cls / p.name).write_bytes(p.read_bytes())
    plain = prepare(data, tmp_path / "plain", folds=2, preset="tiny", show_progress=False)
    looked = prepare(data, tmp_path / "looked", folds=2, preset="tiny", show_progress=False, second_look=True)
    assert "second_look" not in json.loads(plain.config.read_text())
    config = json.loads(looked.config.read_text())
    assert config["second_look"] is True and "--second-look" in looked.fit_command(config)
    status = {r: pd.read_csv(r.poses).set_index("path")["status"] for r in (plain, looked)}
    photo = str(data / "Vrukshasana" / NOBODY_AT_FIRST.name)
    assert photo not in status[plain] or status[plain][photo] != "ok"  # left out, or kept as nobody
    assert status[looked][photo] == "ok"


def test_predict_follows_the_runs_second_look(copy_run, tmp_path):
    import json

    import hybridpose

    run = copy_run()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "second_look": True}))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / NOBODY_AT_FIRST.name).write_bytes(NOBODY_AT_FIRST.read_bytes())
    for second, status in ((None, "ok"), (False, "no_person")):
        hybridpose.predict(photos, run, tmp_path / "p.csv", workers=0, show_progress=False, second_look=second)
        assert pd.read_csv(tmp_path / "p.csv")["status"].tolist() == [status]
