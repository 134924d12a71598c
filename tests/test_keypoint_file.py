"""Keypoints read from a file (--keypoints): the formats, the units, described skeletons, and one clear line
(exit 2, no traceback, before any work) for each kind of bad file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_cli import cli
from test_cli_errors import one_line_error

ROOT = Path(__file__).resolve().parents[1]
HANDS = ROOT / "tests" / "data" / "hands"


@pytest.fixture(scope="module")
def hand_poses(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """extract's own output (MediaPipe Hands) on a copy of tests/data/hands."""
    from hybridpose.pose.extraction import extract_folder

    root = tmp_path_factory.mktemp("kp")
    data = root / "hands"
    shutil.copytree(HANDS, data, ignore=shutil.ignore_patterns("*.md"))
    table, _ = extract_folder(data, root / "ex", skeleton="hand", show_progress=False)
    return data, table


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"]


def _long_csv(table: pd.DataFrame, names, path: Path) -> Path:
    rows = [{"path": r["path"], "keypoint": n, "x": r[f"{n}_x"], "y": r[f"{n}_y"], "z": r[f"{n}_z"],
             "visibility": r[f"{n}_v"]} for _, r in _ok(table).iterrows() for n in names]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_every_format_gives_the_poses_table_back(hand_poses, tmp_path):
    """poses.csv itself (wide CSV), the long CSV, JSON and normalised JSON all give extract's table."""
    from hybridpose.pose.keypoint_file import keypoint_source
    from hybridpose.skeletons import get_skeleton

    data, table = hand_poses
    sk = get_skeleton("hand")
    wide = tmp_path / "poses.csv"
    table.to_csv(wide, index=False)
    long = _long_csv(table, sk.keypoints, tmp_path / "long.csv")
    ok = _ok(table)
    kp = ok[sk.columns].to_numpy().reshape(len(ok), sk.n, 4)
    (tmp_path / "kp.json").write_text(json.dumps({p: k.tolist() for p, k in zip(ok["path"], kp)}))
    norm = kp.copy()
    norm[..., 0] /= ok["width"].to_numpy()[:, None]
    norm[..., 1] /= ok["height"].to_numpy()[:, None]
    norm[..., 2] /= ok["width"].to_numpy()[:, None]
    (tmp_path / "norm.json").write_text(json.dumps({p: k.tolist() for p, k in zip(ok["path"], norm)}))
    paths = list(table["path"])
    for file, units in ((wide, "pixels"), (long, "pixels"), (tmp_path / "kp.json", "pixels"),
                        (tmp_path / "norm.json", "normalized")):
        got = keypoint_source(file, sk, units, paths, data).extract(paths, show_progress=False)
        assert list(got["status"]) == [s if s == "ok" else "no_keypoints" for s in table["status"]], file
        np.testing.assert_allclose(got[sk.columns].to_numpy(), table[sk.columns].to_numpy(), atol=1e-6 if
                                   units == "normalized" else 0, equal_nan=True, err_msg=str(file))
        np.testing.assert_allclose(got[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(),
                                   table[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(), atol=1e-5,
                                   equal_nan=True, err_msg=str(file))


def test_photos_missing_from_the_file_get_no_keypoints(hand_poses, tmp_path):
    from hybridpose.pose.keypoint_file import keypoint_source
    from hybridpose.skeletons import get_skeleton

    data, table = hand_poses
    ok = _ok(table)
    sk = get_skeleton("hand")
    keep = ok.iloc[:3]
    (tmp_path / "kp.json").write_text(json.dumps(
        {p: k.reshape(sk.n, 4).tolist() for p, k in zip(keep["path"], keep[sk.columns].to_numpy())}))
    got = keypoint_source(tmp_path / "kp.json", sk, "pixels", list(table["path"]), data).extract(
        list(table["path"]), show_progress=False)
    assert (got["status"] == "ok").sum() == 3
    assert set(got["status"]) == {"ok", "no_keypoints"}


def test_described_skeleton_from_yaml(hand_poses, tmp_path, monkeypatch, capsys):
    """A skeleton in a small YAML file: extract reads keypoints with it, the features are generic."""
    data, table = hand_poses
    ok = _ok(table)
    (tmp_path / "tips.yaml").write_text(
        "name: tips\nkeypoints: [wrist, thumb_tip, index_tip, pinky_tip]\n"
        "edges: [[wrist, thumb_tip], [wrist, index_tip], [wrist, pinky_tip]]\nmirror_pairs: []\n")
    rows = {p: [[r[f"{n}_x"], r[f"{n}_y"]] for n in ("wrist", "thumb_tip", "index_tip", "pinky_tip")]
            for p, (_, r) in zip(ok["path"], ok.iterrows())}
    (tmp_path / "tips.json").write_text(json.dumps(rows))
    code, text = cli(monkeypatch, capsys, "extract", data, "--out", tmp_path / "ex", "--skeleton",
                     tmp_path / "tips.yaml", "--keypoints", tmp_path / "tips.json")
    assert code == 0, text
    got = pd.read_csv(tmp_path / "ex" / "poses.csv")
    assert (got["status"] == "ok").sum() == len(ok)
    assert "thumb_tip_x" in got.columns and "middle_tip_x" not in got.columns
    from hybridpose.skeletons import get_skeleton

    sk = get_skeleton(str(tmp_path / "tips.yaml"))
    feats = sk.features(got[sk.columns].to_numpy().reshape(len(got), sk.n, 4))
    assert "thumb_tip_wrist_index_tip_angle" in feats.columns and "wrist_index_tip_length" in feats.columns
    assert np.isfinite(feats[got["status"] == "ok"].to_numpy()).all()
    assert sk.to_config()["keypoints"] == ["wrist", "thumb_tip", "index_tip", "pinky_tip"]


# --- bad files: one line each, naming the file and the row, before any work ------------------------------


def _bad_cases(table: pd.DataFrame, tmp: Path) -> list[tuple[str, Path, list[str], list[str]]]:
    """(id, file, extra options, what the error line names)."""
    from hybridpose.skeletons import get_skeleton

    sk = get_skeleton("hand")
    ok = _ok(table).reset_index(drop=True)
    first = ok["path"].iloc[0]
    kp = ok[sk.columns].to_numpy().reshape(len(ok), sk.n, 4)
    cases = []

    def write(name: str, frame: pd.DataFrame | dict | str) -> Path:
        path = tmp / name
        if isinstance(frame, pd.DataFrame):
            frame.to_csv(path, index=False)
        else:
            path.write_text(frame if isinstance(frame, str) else json.dumps(frame))
        return path

    unknown = ok.copy()
    unknown.loc[2, "path"] = "elsewhere/not_a_photo.jpg"
    cases.append(("unknown photo", write("unknown.csv", unknown), [], ["unknown.csv", "row 4", "not among"]))
    nan = ok.copy()
    nan.loc[1, "index_tip_x"] = np.nan
    cases.append(("NaN", write("nan.csv", nan), [], ["nan.csv", "row 3", "index_tip", "NaN"]))
    text = ok.copy()
    text["wrist_y"] = text["wrist_y"].astype(object)
    text.loc[0, "wrist_y"] = "abc"
    cases.append(("not a number", write("text.csv", text), [], ["text.csv", "row 2", "wrist_y", "not a number"]))
    far = ok.copy()
    far.loc[3, "pinky_tip_x"] = 5000.0
    cases.append(("far outside", write("far.csv", far), [], ["far.csv", "row 5", "pinky_tip", "far outside"]))
    cases.append(("pixels as normalized", write("units.json", {first: kp[0].tolist()}), ["--keypoint-units", "normalized"],
                  ["units.json", first, "far outside", "--keypoint-units pixels"]))
    cases.append(("too few points (JSON)", write("few.json", {first: kp[0][:-1].tolist()}), [],
                  ["few.json", first, "keypoints", str(sk.n)]))
    long = _long_csv(ok.iloc[:2], sk.keypoints, tmp / "long_src.csv")
    rows = pd.read_csv(long)
    cases.append(("missing point (long CSV)", write("long_missing.csv", rows.drop(index=[5])), [],
                  ["long_missing.csv", "row 2", "keypoints", "missing"]))
    renamed = rows.copy()
    renamed.loc[3, "keypoint"] = "sixth_finger"
    cases.append(("unknown keypoint (long CSV)", write("long_name.csv", renamed), [],
                  ["long_name.csv", "row 5", "sixth_finger"]))
    cases.append(("wrong skeleton (wide CSV)", write("body.csv", table), ["--skeleton", "body"],
                  ["body.csv", "nose_x", "--skeleton"]))
    cases.append(("not JSON", write("broken.json", "{\"a\": [1, 2"), [], ["broken.json", "not valid JSON"]))
    cases.append(("no path column", write("nopath.csv", "file,x,y\na.jpg,1,2\n"), [], ["nopath.csv", "'path'"]))
    cases.append(("other suffix", write("kp.txt", "x"), [], ["kp.txt", ".csv", ".json"]))
    return cases


@pytest.fixture(scope="module")
def bad_files(hand_poses, tmp_path_factory):
    return _bad_cases(hand_poses[1], tmp_path_factory.mktemp("bad"))


CASE_IDS = ["unknown photo", "NaN", "not a number", "far outside", "pixels as normalized", "too few points (JSON)",
            "missing point (long CSV)", "unknown keypoint (long CSV)", "wrong skeleton (wide CSV)", "not JSON",
            "no path column", "other suffix"]


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("command", ["extract", "fit"])
def test_bad_keypoint_file_is_one_line(monkeypatch, capsys, no_work, hand_poses, bad_files, tmp_path,
                                       case, command):
    data, _ = hand_poses
    _, file, extra, needles = next(c for c in bad_files if c[0] == case)
    out = tmp_path / "out"
    skeleton = [] if "--skeleton" in extra else ["--skeleton", "hand"]
    args = [command, data, "--out", out, *skeleton, "--keypoints", file, *extra]
    if command == "fit":
        args += ["--folds", "2", "--preset", "tiny"]
    one_line_error(*cli(monkeypatch, capsys, *args), *needles)
    assert not out.exists()


def test_described_skeleton_needs_a_keypoint_file(monkeypatch, capsys, no_work, hand_poses, tmp_path):
    data, _ = hand_poses
    (tmp_path / "s.yaml").write_text("keypoints: [a, b]\nedges: [[a, b]]\n")
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "run", "--skeleton", tmp_path / "s.yaml",
                        "--folds", "2"), "no pose model", "--keypoints")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,needle", [
    ("keypoints: [a]\n", "at least two"),
    ("keypoints: [a, b]\nedges: [[a, c]]\n", "'c'"),
    ("keypoints: [a, a]\n", "repeat"),
    ("keypoints: [a, b\n", "not valid YAML"),
    ("name: body\nkeypoints: [a, b]\n", "built-in"),
])
def test_bad_skeleton_description_is_one_line(monkeypatch, capsys, no_work, hand_poses, tmp_path, text, needle):
    data, table = hand_poses
    (tmp_path / "s.yaml").write_text(text)
    (tmp_path / "kp.json").write_text(json.dumps({table["path"].iloc[1]: [[1, 2], [3, 4]]}))
    one_line_error(*cli(monkeypatch, capsys, "extract", data, "--out", tmp_path / "out", "--skeleton",
                        tmp_path / "s.yaml", "--keypoints", tmp_path / "kp.json"), "s.yaml", needle)


@pytest.mark.slow
def test_fit_from_a_keypoint_file_matches_the_mediapipe_run(hand_poses, tmp_path, monkeypatch, capsys):
    """A run fitted on extract's own poses.csv gives the same out-of-fold numbers as the run that ran MediaPipe."""
    data, table = hand_poses
    poses = tmp_path / "poses.csv"
    table.to_csv(poses, index=False)
    common = ["--skeleton", "hand", "--folds", "2", "--preset", "tiny", "--flip-pairs", "left:right"]
    code, text = cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "mp", *common)
    assert code == 0, text
    code, text = cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "file", *common, "--keypoints", poses)
    assert code == 0, text
    a = json.loads((tmp_path / "mp" / "summary.json").read_text())
    b = json.loads((tmp_path / "file" / "summary.json").read_text())
    assert a["oof_top1"] == b["oof_top1"]
    oa = pd.read_csv(tmp_path / "mp" / "oof_predictions.csv")
    ob = pd.read_csv(tmp_path / "file" / "oof_predictions.csv")
    probs = [c for c in oa.columns if c.count(":") == 2]
    np.testing.assert_allclose(oa[probs].to_numpy(), ob[probs].to_numpy(), atol=1e-6)
    config = json.loads((tmp_path / "file" / "config.json").read_text())
    assert config["skeleton"] == "hand" and config["keypoints"]["file"] == str(poses)
    # predict follows the run's skeleton, and reads keypoints from the file when given one
    code, text = cli(monkeypatch, capsys, "predict", data, "-m", tmp_path / "file", "--out", tmp_path / "p.csv",
                     "--keypoints", poses)
    assert code == 0, text
    pred = pd.read_csv(tmp_path / "p.csv")
    assert set(pred["status"]) == {"ok", "no_keypoints"}
    assert pred["class"].notna().all()  # the image branch decides where there are no keypoints
    # the report names the skeleton and the keypoint source; explain draws the hand
    code, text = cli(monkeypatch, capsys, "evaluate", tmp_path / "file", "--out", tmp_path / "ev")
    assert code == 0, text
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "skeleton: hand (MediaPipe Hands" in html and "keypoints read from" in html
    code, text = cli(monkeypatch, capsys, "explain", data / "palm", "-m", tmp_path / "mp", "--out", tmp_path / "x",
                     "--limit", "2")
    assert code == 0, text
    assert len(list((tmp_path / "x").glob("*.png"))) >= 2


def test_predict_with_a_bad_keypoint_file_is_one_line(monkeypatch, capsys, tiny_run, tmp_path):
    """predict checks the file against the run's skeleton and the photos before predicting anything."""
    sample = ROOT / "data" / "sample" / "Triangle"
    photo = sorted(sample.glob("*.jpg"))[0]
    (tmp_path / "kp.json").write_text(json.dumps({str(photo): [[1.0, 2.0]] * 3}))
    out = tmp_path / "p.csv"
    one_line_error(*cli(monkeypatch, capsys, "predict", sample, "-m", tiny_run, "--out", out, "--keypoints",
                        tmp_path / "kp.json"), "kp.json", "3 keypoints", "'body'")
    assert not out.exists()


@pytest.mark.slow
def test_fit_and_predict_with_a_described_skeleton(hand_poses, tmp_path, monkeypatch, capsys):
    """A YAML skeleton and normalised keypoints: the run stores the description; predict needs the file."""
    data, table = hand_poses
    names = ("wrist", "thumb_tip", "index_tip", "pinky_tip")
    (tmp_path / "tips.yaml").write_text(f"name: tips\nkeypoints: [{', '.join(names)}]\n"
                                        "edges: [[wrist, thumb_tip], [wrist, index_tip], [wrist, pinky_tip]]\n")
    ok = _ok(table)
    rows = [{"path": r["path"], "keypoint": n, "x": r[f"{n}_x"] / r["width"], "y": r[f"{n}_y"] / r["height"]}
            for _, r in ok.iterrows() for n in names]
    pd.DataFrame(rows).to_csv(tmp_path / "tips.csv", index=False)
    kp = ["--keypoints", tmp_path / "tips.csv", "--keypoint-units", "normalized"]
    code, text = cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "run", "--skeleton", tmp_path / "tips.yaml",
                     *kp, "--folds", "2", "--preset", "tiny")
    assert code == 0, text
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["skeleton"]["keypoints"] == list(names) and config["keypoints"]["units"] == "normalized"
    one_line_error(*cli(monkeypatch, capsys, "predict", data / "palm", "-m", tmp_path / "run", "--out",
                        tmp_path / "p.csv"), "'tips'", "--keypoints")
    code, text = cli(monkeypatch, capsys, "predict", data / "palm", "-m", tmp_path / "run", "--out", tmp_path / "p.csv",
                     *kp)
    assert code == 0, text
    pred = pd.read_csv(tmp_path / "p.csv")
    assert (pred["status"] == "ok").all() and pred["keypoint_top"].notna().all()
