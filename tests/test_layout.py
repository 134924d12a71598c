"""The package layout's promises: the library's ``predict`` is the CLI's, a printed resume command resumes,
what a registry holds does not depend on import order, and runs and bundles made by older code still predict
exactly as they did (tests/data/legacy, made by the commit named in MADE_BY_COMMIT)."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from corpus import sample_subset
from hybridpose.inference.classifier import PERSON_ROW_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
LEGACY = ROOT / "tests" / "data" / "legacy"
HANDS = ROOT / "tests" / "data" / "hands"


def _photos_of(expected: pd.DataFrame, dest: Path) -> Path:
    """The photos an expected table names (``class/file``), copied from data/sample into ``dest``."""
    for rel in expected["path"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / rel, dest / rel)
    return dest


def _legacy(name: str, tmp_path: Path) -> Path:
    """A copy of an old run or bundle: predicting a run keeps its ONNX graph in it, never in the repository."""
    return Path(shutil.copytree(LEGACY / name, tmp_path / "legacy" / name))


def _relative(frame: pd.DataFrame, root: Path, column: str = "path") -> pd.DataFrame:
    frame[column] = [str(Path(p).relative_to(root)) for p in frame[column]]
    return frame


# --- runs and bundles made by the old code ------------------------------------------------------------


@pytest.mark.parametrize("model, engine", [("run", None), ("run", "torch"), ("bundle", None)])
def test_an_old_run_and_bundle_predict_as_they_did(model, engine, tmp_path):
    """The run with the default engine (its ONNX graph, built from the old checkpoints) and with torch."""
    import hybridpose

    expected = pd.read_csv(LEGACY / "expected" / f"predictions_{model}.csv")
    photos = _photos_of(expected, tmp_path / "photos")
    res = hybridpose.predict(photos, _legacy(model, tmp_path), tmp_path / "p.csv", workers=0, show_progress=False,
                             max_people=1, engine=engine)
    assert res["kind"] == "photos" and res["images"] == len(expected)
    got = _relative(pd.read_csv(tmp_path / "p.csv"), photos)
    # the single-person model: one row per photo, person 0; the rest exactly as the old code wrote it
    assert (got["person"] == 0).all() and got["person_score"].isna().all()
    pd.testing.assert_frame_equal(got.drop(columns=PERSON_ROW_COLUMNS), expected)


def test_an_old_clip_run_predicts_a_frame_folder_as_it_did(clip_data, tmp_path):
    """A frame folder (JPEG frames: the same bytes wherever the clips are cut) through the library's predict."""
    import hybridpose

    clip = clip_data / "jumpingjack" / "jj_frames"
    res = hybridpose.predict(clip, _legacy("cliprun", tmp_path), tmp_path / "p.csv", per_frame=tmp_path / "f.csv",
                             show_progress=False)
    assert res["kind"] == "clips" and res["clips"] == 1
    want = pd.read_csv(LEGACY / "expected" / "predictions_cliprun.csv")
    want = want[want["path"] == "jumpingjack/jj_frames"].reset_index(drop=True)
    got = _relative(pd.read_csv(tmp_path / "p.csv"), clip_data)
    # one clip of one person: track 0 (a column added since); the rest exactly as the old code wrote it
    assert list(got.pop("track")) == [0]
    pd.testing.assert_frame_equal(got, want)
    frames = pd.read_csv(LEGACY / "expected" / "per_frame_cliprun.csv")
    frames = frames[frames["clip"] == "jumpingjack/jj_frames"].reset_index(drop=True)
    got = _relative(pd.read_csv(tmp_path / "f.csv"), clip_data, "clip")
    assert (got.pop("track") == 0).all()
    pd.testing.assert_frame_equal(got, frames)


def test_the_library_predict_routes_a_clip_run_as_the_cli_does(clip_data, tmp_path):
    """``hybridpose.predict(clips, run=CLIP_RUN)`` used to fail with "no images found": the routing lived in the CLI."""
    from typer.testing import CliRunner

    import hybridpose
    from hybridpose_cli.main import app

    run = _legacy("cliprun", tmp_path)
    lib = hybridpose.predict(clip_data, run=run, out=tmp_path / "lib.csv", show_progress=False)
    assert lib["kind"] == "clips" and lib["clips"] == 5
    r = CliRunner().invoke(app, ["predict", str(clip_data), "-m", str(run), "-o", str(tmp_path / "cli.csv")])
    assert r.exit_code == 0, r.output
    lib_rows, cli_rows = pd.read_csv(tmp_path / "lib.csv"), pd.read_csv(tmp_path / "cli.csv")
    assert list(lib_rows["path"]) == list(cli_rows["path"])
    assert list(lib_rows["class"]) == list(cli_rows["class"])


def test_predict_checks_its_options_before_any_work(tmp_path, no_work):
    import hybridpose
    from hybridpose.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        hybridpose.predict(SAMPLE, LEGACY / "run", tmp_path / "p.csv", rules=tmp_path / "r.yaml", no_rules=True)
    with pytest.raises(ConfigError, match="locally"):
        hybridpose.predict(SAMPLE, LEGACY / "cliprun", tmp_path / "p.csv", executor="ray")
    with pytest.raises(ConfigError, match="give an image or a folder"):
        hybridpose.predict(None, LEGACY / "run")
    assert not (tmp_path / "p.csv").exists()


# --- the printed resume command ---------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    ["--backbone", "test_efficientnet", "--input-size", "64", "--epochs", "1,1,1"],
    ["--skeleton", "hand", "--flip-pairs", "left:right", "--epochs", "1,1,1"],
], ids=["backbone", "hand"])
def test_the_printed_fit_command_resumes_the_run(options, tmp_path):
    """A run stopped before its last fold resumes with the command it prints (the old one rebuilt only data,
    --out, --folds and --preset, so a hand or backbone run answered "holds a run with other settings")."""
    from typer.testing import CliRunner

    from hybridpose.run.folder import RunFolder
    from hybridpose_cli.main import app

    data = sample_subset(tmp_path / "data", 4, HANDS if "hand" in options else SAMPLE)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["fit", str(data), "--out", str(run), "--folds", "2", "--preset", "tiny", *options])
    assert r.exit_code == 0, r.output
    folder = RunFolder(run)
    run_id = folder.read_config()["run_id"]
    for name in ("done.json", "stage3.pt"):  # fold 2 stopped in its last stage
        (folder.fold_dir(2) / name).unlink()
    command = shlex.split(folder.fit_command())
    assert command[:2] == ["hybridpose", "fit"]
    r = CliRunner().invoke(app, command[1:])
    assert r.exit_code == 0, r.output
    assert "other settings" not in r.output
    assert folder.read_config()["run_id"] == run_id and folder.checkpoint(2, 3).exists()


# --- registries do not depend on import order ---------------------------------------------------------

ORDER_SCRIPT = """
import json, sys
from pathlib import Path
if sys.argv[2] == "clips first":
    import hybridpose.data.clips, hybridpose.inference.clips  # noqa: F401
from hybridpose.data.sources import open_inputs
from hybridpose.pose.frontend import estimator_class
from hybridpose.branches import branch_class
from hybridpose.engines import available as engines
from hybridpose.executors import available as executors
entries = open_inputs(Path(sys.argv[1])) + open_inputs(Path(sys.argv[1]) / "b.mp4")
print(json.dumps({"rows": [[e.path.name, e.status, e.reason] for e in entries],
                  "hand": estimator_class("hand").name, "branch": branch_class("clip_keypoint").name,
                  "engines": engines(), "executors": executors()}))
"""


def test_sources_and_registries_do_not_depend_on_import_order(tmp_path):
    """A video given to a photo run used to get another row depending on whether the clip modules were loaded."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(next(SAMPLE.rglob("*.jpg")), folder / "a.jpg")
    (folder / "b.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "order.py").write_text(ORDER_SCRIPT)
    outs = [json.loads(subprocess.run([sys.executable, str(tmp_path / "order.py"), str(folder), order], cwd=ROOT,
                                      capture_output=True, text=True, check=True, timeout=120).stdout)
            for order in ("plain", "clips first")]
    assert outs[0] == outs[1]
    rows = outs[0]["rows"]
    assert [r[0] for r in rows] == ["a.jpg", "b.mp4", "b.mp4"] and rows[0][1] == ""
    assert rows[1] == rows[2] and rows[1][1] == "unsupported" and "a video" in rows[1][2]  # in a folder or given alone
    assert outs[0]["hand"] == "mediapipe_hands" and outs[0]["branch"] == "clip_keypoint"
    assert {"torch", "onnxruntime"} <= set(outs[0]["engines"]) and {"local", "ray"} <= set(outs[0]["executors"])


def test_a_registry_names_what_it_knows():
    from hybridpose.errors import ConfigError, HybridPoseError, RunError
    from hybridpose.registry import Registry

    reg: Registry[int] = Registry("colour", unknown="--colour {name!r}: choose one of {known}.")
    reg.register(1, name="red")
    reg.register(2, name="blue")
    assert reg.get("red") == 1 and reg.names() == ["blue", "red"] and "blue" in reg
    with pytest.raises(ConfigError, match=r"--colour 'green': choose one of blue, red\."):
        reg.get("green")
    from hybridpose.branches import BRANCHES

    with pytest.raises(RunError, match="unknown branch 'nope'; known branches are clip_keypoint, image"):
        BRANCHES.get("nope")
    from hybridpose.skeletons import get_skeleton

    with pytest.raises(HybridPoseError, match="unknown skeleton 'octopus'"):
        get_skeleton("octopus")


def test_the_library_explain_routes_a_clip_run(clip_data, tmp_path):
    """``hybridpose.explain`` picks the clip strip for a clip run (one PNG per clip, its name made printable)."""
    import hybridpose

    clip = tmp_path / "in" / "jj\nframes"
    shutil.copytree(clip_data / "jumpingjack" / "jj_frames", clip)
    res = hybridpose.explain(clip, LEGACY / "cliprun", tmp_path / "out")
    assert res["files"] == [str(tmp_path / "out" / "jj_frames_clip_explain.png")]
    from PIL import Image

    with Image.open(res["files"][0]) as im:
        assert im.width > 3 * im.height  # a strip of frames


def test_a_runs_config_is_a_fit_config_file(tmp_path):
    """``fit --config RUN/config.json`` (the resume command's) carries every training setting, folds, skeleton
    (a described one too, as the run keeps it) and flip pairs."""
    from hybridpose.train.config import read_fit_config

    config = json.loads((LEGACY / "run" / "config.json").read_text())
    config["skeleton"] = {"name": "stick", "keypoints": ["a", "b"], "edges": [["a", "b"]], "mirror_pairs": []}
    config["flip_pairs"] = {"Triangle": "Vrukshasana", "Vrukshasana": "Triangle"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    values = read_fit_config(tmp_path / "config.json")
    assert values["backbone"] == "test_efficientnet" and values["input_size"] == 64 and values["folds"] == 2
    assert values["skeleton"] == config["skeleton"] and values["flip_pairs"] == "Triangle:Vrukshasana"
    assert values["stage1"] == config["train"]["stage1"] and "device" not in values
