"""Damaged files and bad values: one line and exit 2, never a traceback, and nothing rewritten.

Each case damages one file (fusion.json, config.json, oof_predictions.csv, a --config YAML file, a
predictions CSV, a --study database) or gives one bad value, then asserts the exit code, the one error
line naming the file and what to do, and that the files there before are byte-identical afterwards.
Where the check must come before any work, ``no_work`` fails the test if the work starts.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from test_cli import _lines, cli
from test_cli_errors import SAMPLE, digest, one_line_error, tiny_data

PHOTO_DIR = SAMPLE / "Triangle"


def _damage_json(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_text(json.dumps(json.loads(how)))


def _edit_config(run: Path, **values) -> None:
    config = json.loads((run / "config.json").read_text())
    config.update(values)
    (run / "config.json").write_text(json.dumps(config, indent=2))


# --- 1: fusion.json truncated or of the wrong shape -------------------------------------------------

FUSION_DAMAGE = ["truncated", "[]", '{"levels": {}}', '{"levels": {"class": {"weights": {"image": "x"}}}}']


@pytest.mark.parametrize("how", FUSION_DAMAGE)
def test_damaged_fusion_predict(monkeypatch, capsys, copy_run, tmp_path, how):
    run = copy_run()
    _damage_json(run / "fusion.json", how)
    out = tmp_path / "predictions.csv"
    out.write_text("earlier predictions\n")
    before = digest(run, out)
    code, text = cli(monkeypatch, capsys, "predict", PHOTO_DIR, "--model", run, "--out", out, "--workers", "0")
    line = one_line_error(code, text, "fusion.json", "damaged", "hybridpose fit")
    assert "--out " + str(run) in line
    assert digest(run, out) == before


def test_damaged_fusion_explain(monkeypatch, capsys, copy_run, tmp_path):
    run = copy_run()
    _damage_json(run / "fusion.json", "[]")
    out = tmp_path / "explain"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"earlier")
    before = digest(run, out)
    code, text = cli(monkeypatch, capsys, "explain", PHOTO_DIR, "--model", run, "--out", out)
    one_line_error(code, text, "fusion.json", "damaged", "hybridpose fit")
    assert digest(run, out) == before


def test_damaged_fusion_of_a_bundle_says_export(copy_run):
    """A bundle (manifest.json) is remade by export, not fit; the fusion is checked before any network loads."""
    from hybridpose.errors import RunError
    from hybridpose.inference.classifier import HybridPoseClassifier

    run = copy_run()
    (run / "manifest.json").write_text("{}")
    _damage_json(run / "fusion.json", "truncated")
    with pytest.raises(RunError, match=r"fusion\.json: damaged \(not JSON\); export the run again"):
        HybridPoseClassifier.load(run)


@pytest.mark.slow
def test_damaged_fusion_of_an_exported_bundle(monkeypatch, capsys, tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    bundle = tmp_path / "bundle"
    code, text = cli(monkeypatch, capsys, "export", tiny_run, "--out", bundle)
    assert code == 0, text
    _damage_json(bundle / "fusion.json", "[]")
    before = digest(bundle)
    code, text = cli(monkeypatch, capsys, "predict", PHOTO_DIR, "--model", bundle, "--out", tmp_path / "p.csv",
                     "--workers", "0")
    one_line_error(code, text, str(bundle / "fusion.json"), "damaged", "hybridpose export")
    assert digest(bundle) == before and not (tmp_path / "p.csv").exists()


def test_intact_fusion_still_loads(tiny_run):
    from hybridpose.inference.classifier import HybridPoseClassifier

    assert HybridPoseClassifier.load(tiny_run).fusion.levels


# --- 2: config.json values of the wrong type -----------------------------------------------------------

CONFIG_DAMAGE = [({"folds": "two"}, "folds is 'two'"), ({"train": 5}, "train is 5"),
                 ({"hierarchy": []}, "hierarchy"), ({"branches": "image"}, "branches"), ({"folds": 1}, "folds is 1")]
COMMANDS = [("predict", PHOTO_DIR, "--model", "{run}", "--out", "{tmp}/p.csv"), ("evaluate", "{run}"),
            ("calibrate", "{run}"), ("export", "{run}", "--out", "{tmp}/bundle")]


@pytest.mark.parametrize("values,needle", CONFIG_DAMAGE)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_config_wrong_types(monkeypatch, capsys, copy_run, tmp_path, no_work, values, needle, command):
    run = copy_run()
    _edit_config(run, **values)
    before = digest(run)
    args = [str(a).format(run=run, tmp=tmp_path) for a in command]
    code, text = cli(monkeypatch, capsys, *args)
    one_line_error(code, text, str(run / "config.json"), "damaged", needle)
    assert digest(run) == before
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "bundle").exists()


# --- 3: oof_predictions.csv cut short ------------------------------------------------------------------

def _cut_in_header(data: bytes) -> bytes:
    return data[: data.index(b"\n") // 2]


def _cut_in_row(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _cut_at_line(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(lines[: len(lines) // 2])


def _cut_last_field(data: bytes) -> bytes:  # only the last row's last cells are gone
    return data.rstrip(b"\n").rsplit(b",", 3)[0]


CUTS = {"header": (_cut_in_header, "header"), "row": (_cut_in_row, "last line"),
        "line": (_cut_at_line, "folds.csv lists 80"), "last_row": (_cut_last_field, "last line")}


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("command", ["calibrate", "evaluate"])
def test_truncated_oof_table(monkeypatch, capsys, copy_run, no_work, cut, command):
    run = copy_run()
    table = run / "oof_predictions.csv"
    damage, needle = CUTS[cut]
    table.write_bytes(damage(table.read_bytes()))
    before = digest(run)
    code, text = cli(monkeypatch, capsys, command, run)
    one_line_error(code, text, str(table), "damaged", needle, "hybridpose fit", "rewrites")
    assert digest(run) == before  # the table as it was, and no report, rules or calibration written
    assert not (run / "evaluation").exists()


def test_intact_oof_tables_load(copy_run):
    """A calibrated table (rules columns) and one whose complete last line lacks its newline still load."""
    from hybridpose.rules.runs import calibrate
    from hybridpose.run.oof import load_oof

    run = copy_run()
    calibrate(run, min_fired=1, min_gain=0.0)
    frame, _, _ = load_oof(run)
    assert "rule" in frame and len(frame) == 80
    table = run / "oof_predictions.csv"
    table.write_bytes(table.read_bytes().rstrip(b"\n"))
    assert len(load_oof(run)[0]) == 80


# --- 4: fit --config with values of the wrong type or range ---------------------------------------------

BAD_FILE_VALUES = [
    ("folds: many", "folds is 'many'"), ("stage1: {lr: fast}", "stage1.lr is 'fast'"),
    ("stage2: {epochs: 0}", "stage2.epochs is 0"), ("batch-size: 1", "batch-size is 1"),
    ("train_margin: [0.4, 0.1]", "train_margin"), ("epochs: 8", "epochs is 8"), ("pretrained: maybe", "pretrained"),
    ("cam_method: bogus", "hirescam"), ("folds: 1", "at least 2"), ("seed: -1", "seed is -1"),
]


@pytest.mark.parametrize("text,needle", BAD_FILE_VALUES)
def test_fit_config_values(monkeypatch, capsys, tmp_path, no_work, text, needle):
    data = tiny_data(tmp_path / "data", {"Triangle": 2, "Vrukshasana": 2})
    config = tmp_path / "fit.yaml"
    config.write_text(text + "\n")
    before = digest(data, config)
    code, out = cli(monkeypatch, capsys, "fit", data, "--config", config, "--out", tmp_path / "run")
    one_line_error(code, out, str(config), needle)
    assert digest(data, config) == before and not (tmp_path / "run").exists()


def test_fit_config_good_values_pass(tmp_path):
    from hybridpose.train.config import make_config, read_fit_config, train_overrides

    config = tmp_path / "fit.yaml"
    config.write_text("folds: 2\nexecutor: local\nepochs: 1,1,1\nstage1: {lr: 0.002, patience: 0}\n"
                      "train_margin: [0.05, 0.3]\ncam_weight: 0\npretrained: false\nhierarchy: null\n")
    values = read_fit_config(config)
    cfg = make_config("tiny", **train_overrides(values, "tiny"))
    assert (cfg.stage1.lr, cfg.stage1.epochs, cfg.train_margin) == (0.002, 1, (0.05, 0.3))


# --- 5: a predictions CSV that is not text ---------------------------------------------------------------

@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"", b"a,b\n1,2\n"], ids=["random", "empty", "no_path"])
def test_evaluate_unreadable_predictions(monkeypatch, capsys, tmp_path, no_work, content):
    preds = tmp_path / "preds.csv"
    preds.write_bytes(content)
    out = tmp_path / "evaluation"
    code, text = cli(monkeypatch, capsys, "evaluate", preds, "--data", SAMPLE, "--out", out)
    one_line_error(code, text, str(preds), "hybridpose predict")
    assert preds.read_bytes() == content and not out.exists()


# --- 6: tune --study that cannot be a study --------------------------------------------------------------

@pytest.fixture
def no_posing(monkeypatch):
    import hybridpose.pose.frontend

    def forbidden(*args, **kwargs):
        raise AssertionError("the work started before the error")

    monkeypatch.setattr(hybridpose.pose.frontend, "extract", forbidden)


def _text_file(tmp_path: Path) -> str:
    (tmp_path / "notes.txt").write_text("not a database\n")
    return f"sqlite:///{tmp_path / 'notes.txt'}"


STUDIES = {"scheme": (lambda t: "foo://x", "unknown storage 'foo'"),
           "no_folder": (lambda t: "sqlite:////nonexistent/dir/s.db", "/nonexistent/dir does not exist"),
           "unwritable": (lambda t: "sqlite:////proc/x.db", "cannot write in /proc"),
           "not_a_database": (_text_file, "not an SQLite database"),
           "folder": (lambda t: f"sqlite:///{t}", "is a folder")}


@pytest.mark.parametrize("case", STUDIES)
def test_tune_bad_study(monkeypatch, capsys, tmp_path, no_posing, case):
    pytest.importorskip("optuna")
    make, needle = STUDIES[case]
    study = make(tmp_path)
    before = digest(tmp_path)
    code, text = cli(monkeypatch, capsys, "tune", SAMPLE, "--study", study, "--out", tmp_path / "tune",
                     "--preset", "tiny", "--trials", "1")
    one_line_error(code, text, "--study", needle)
    assert digest(tmp_path) == before and not (tmp_path / "tune").exists()


def test_study_storage_that_can_work(tmp_path):
    pytest.importorskip("optuna")
    from hybridpose.train.tune import check_storage

    fresh = tmp_path / "new.db"
    assert check_storage(f"sqlite:///{fresh}") == f"sqlite:///{fresh}" and not fresh.exists()
    sqlite3.connect(tmp_path / "real.db").execute("create table t (x)").connection.commit()
    check_storage(f"sqlite:///{tmp_path / 'real.db'}")
    (tmp_path / "empty.db").write_bytes(b"")  # SQLite makes an empty file a database
    check_storage(f"sqlite:///{tmp_path / 'empty.db'}")
    assert check_storage("postgresql://host/db") == "postgresql://host/db"  # reached only when opened


# --- 7: a data folder with one class ------------------------------------------------------------------

def test_fit_one_class(monkeypatch, capsys, tmp_path, no_work):
    data = tiny_data(tmp_path / "data", {"Triangle": 4})
    before = digest(data)
    code, text = cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "run", "--folds", "2", "--preset", "tiny")
    one_line_error(code, text, str(data), "only one class", "at least two")
    assert digest(data) == before and not (tmp_path / "run").exists()


def test_tune_one_class(monkeypatch, capsys, tmp_path, no_posing):
    pytest.importorskip("optuna")
    data = tiny_data(tmp_path / "data", {"Triangle": 4})
    code, text = cli(monkeypatch, capsys, "tune", data, "--study", f"sqlite:///{tmp_path / 's.db'}", "--out",
                     tmp_path / "tune", "--preset", "tiny", "--folds", "2")
    one_line_error(code, text, "only one class")
    assert not (tmp_path / "s.db").exists()


# --- 8: explain on a photo whose name holds a newline ---------------------------------------------------

def test_explain_name_with_newline(monkeypatch, capsys, tiny_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted(PHOTO_DIR.glob("*.jpg"))[0], photos / "tri\nangle.jpg")
    out = tmp_path / "explain"
    code, text = cli(monkeypatch, capsys, "explain", photos, "--model", tiny_run, "--out", out)
    assert code == 0 and "Traceback" not in text, text
    assert sorted(p.name for p in out.iterdir()) == ["explain_contact_sheet.png", "tri_angle_explain.png"]
    assert _lines(text)[0].startswith("1 explanations in")


def test_output_names_are_printable(tmp_path):
    from hybridpose.explanation.photos import output_names, printable

    assert printable("a\nb\tc\x00.jpg") == "a_b_c_.jpg"
    assert output_names([tmp_path / "x" / "a\nb.jpg", tmp_path / "y" / "a\nb.jpg"]) == ["x__a_b_jpg", "y__a_b_jpg"]
