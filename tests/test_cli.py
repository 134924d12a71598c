"""The `hybridpose` command: exit codes, one-line errors, and the files each command writes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import hybridpose_cli.main as cli_main
from hybridpose.data.hierarchy import Hierarchy

ROOT = Path(__file__).resolve().parents[1]


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run `hybridpose ARGS` in this process; an exception escaping main() fails the test with its traceback."""
    monkeypatch.setattr(sys, "argv", ["hybridpose", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli_main.main()
    captured = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), captured.out + captured.err


def cli_process(*args: str) -> tuple[int, str]:
    """Run the installed entry point in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "hybridpose_cli.main", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


# --- extract ------------------------------------------------------------------------------


def test_extract_corpus(monkeypatch, capsys, bad_corpus, tmp_path):
    directory, expected = bad_corpus
    out = tmp_path / "out"
    code, text = cli(monkeypatch, capsys, "extract", directory, "--out", out)
    assert code == 0, text
    summary = [line for line in _lines(text) if " files (" in line]
    assert len(summary) == 1 and summary[0].startswith(f"{len(expected)} files")
    for status in set(expected.values()):
        assert f"{status}: {list(expected.values()).count(status)}" in summary[0]
    table = pd.read_csv(out / "poses.csv", keep_default_na=False)
    assert sorted(Path(p).name for p in table["path"]) == sorted(expected)
    assert {Path(p).name: s for p, s in zip(table["path"], table["status"])} == expected
    meta = json.loads((out / "summary.json").read_text())
    assert meta["images"] == len(expected)


def test_extract_one_file(monkeypatch, capsys, tmp_path):
    photo = ROOT / "data" / "sample" / "Vrukshasana" / "v63.jpg"
    code, text = cli(monkeypatch, capsys, "extract", photo, "-o", tmp_path)
    assert code == 0, text
    assert len(pd.read_csv(tmp_path / "poses.csv")) == 1


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_extract_bad_input_is_one_clear_line(tmp_path, case):
    target = tmp_path / ("nowhere" if case == "missing" else "empty_folder")
    if case == "empty":
        target.mkdir()
        (target / "readme.txt").write_text("no photos here")
    code, text = cli_process("extract", target, "--out", tmp_path / "out")
    assert code != 0
    assert "Traceback" not in text
    lines = _lines(text)
    assert len(lines) == 1, text
    assert str(target) in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "out" / "poses.csv").exists()


def test_usage_errors_exit_2(monkeypatch, capsys, tmp_path):
    code, text = cli(monkeypatch, capsys, "fit", "data/sample", "--epochs", "1,2", "--out", tmp_path / "r")
    assert code == 2 and "three numbers" in text
    code, text = cli(monkeypatch, capsys, "extract")
    assert code == 2
    assert not (tmp_path / "r").exists()


# --- predict / calibrate / evaluate on the tiny run --------------------------------------------------


@pytest.fixture(scope="module")
def hierarchy(tiny_run) -> Hierarchy:
    return Hierarchy.from_dict(json.loads((tiny_run / "config.json").read_text())["hierarchy"])


def test_predict_bad_files_one_row_each(monkeypatch, capsys, tiny_run, bad_corpus, hierarchy, tmp_path):
    directory, expected = bad_corpus
    out = tmp_path / "predictions.csv"
    code, text = cli(monkeypatch, capsys, "predict", directory, "--model", tiny_run, "--out", out)
    assert code == 0, text
    assert f"{len(expected)} files" in text
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert sorted(Path(p).name for p in table["path"]) == sorted(expected)
    assert {"path", "status", "confidence", "top1", "top1_prob", "rule", "image_top", "keypoint_top",
            *hierarchy.levels} <= set(table.columns)
    for r in table.to_dict("records"):
        name = Path(r["path"]).name
        assert r["status"] == expected[name], name
        if r["status"] in ("ok", "no_person"):
            leaf = r[hierarchy.leaf_level]
            assert leaf in hierarchy.leaves, name
            assert all(r[lv] == hierarchy.ancestor(leaf, lv) for lv in hierarchy.levels), name
            assert 0 < r["confidence"] <= 1
            assert (r["status"] == "ok") == isinstance(r["keypoint_top"], str), name
        else:  # nothing to label in a file that is not an image
            assert all(pd.isna(r[lv]) for lv in hierarchy.levels), name
            assert isinstance(r["reason"], str) and r["reason"].strip(), name


def test_predict_json(monkeypatch, capsys, tiny_run, hierarchy, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((ROOT / "data" / "sample").glob("*/*.jpg"))[::20]:
        shutil.copy(p, photos / f"{p.parent.name}_{p.name}")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "predictions.jsonl"
    code, text = cli(monkeypatch, capsys, "predict", photos, "-m", tiny_run, "-o", out, "--format", "json")
    assert code == 0, text
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5
    by_name = {Path(r["path"]).name: r for r in records}
    broken = by_name.pop("broken.jpg")
    assert broken["status"] == "unreadable" and broken[hierarchy.leaf_level] is None
    for r in by_name.values():
        assert r[hierarchy.leaf_level] in hierarchy.leaves
        assert isinstance(r["confidence"], float)


def test_predict_rejects_unknown_format_and_non_runs(monkeypatch, capsys, tmp_path):
    photo = ROOT / "data" / "sample" / "Vrukshasana" / "v63.jpg"
    code, text = cli(monkeypatch, capsys, "predict", photo, "-m", tmp_path, "--format", "xml", "-o", tmp_path / "p")
    assert code == 2 and "--format" in text
    code, text = cli(monkeypatch, capsys, "predict", photo, "-m", tmp_path, "-o", tmp_path / "p.csv")
    assert code == 2 and "not a run directory" in text
    assert not (tmp_path / "p.csv").exists()


def test_calibrate_dry_run_writes_nothing(monkeypatch, capsys, tiny_run):
    before = _snapshot(tiny_run)
    code, text = cli(monkeypatch, capsys, "calibrate", tiny_run, "--dry-run")
    assert code == 0, text
    assert "dry run: nothing written" in text and "rule(s)" in text
    assert _snapshot(tiny_run) == before


def test_calibrate_writes_rules(monkeypatch, capsys, copy_run, tmp_path):
    run = copy_run()
    code, text = cli(monkeypatch, capsys, "calibrate", run, "--out", tmp_path / "rules")
    assert code == 0, text
    assert (run / "rules.yaml").is_file() and (tmp_path / "rules" / "rules.yaml").is_file()
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert {"rules_class", "rule"} <= set(oof.columns)


def test_evaluate_run_writes_report(monkeypatch, capsys, copy_run):
    run = copy_run()
    code, text = cli(monkeypatch, capsys, "evaluate", run)
    assert code == 0, text
    report = run / "evaluation" / "report.html"
    assert report.is_file() and report.stat().st_size > 1000
    assert "<html" in report.read_text(errors="replace").lower()
    assert str(report) in text.replace("\n", "")


def test_run_missing_a_fold_is_refused_unless_partial(monkeypatch, capsys, copy_run, tmp_path):
    """An incomplete ensemble is never used silently: refused, or with --partial noted in every row."""
    run = copy_run()
    (run / "fold_2" / "stage3.pt").unlink()  # the last fold: its absence must still be noticed
    out = tmp_path / "p.csv"
    code, text = cli(monkeypatch, capsys, "predict", "data/sample/Triangle", "--model", run, "--out", out)
    assert code == 2 and "Traceback" not in text
    assert "folds [2] of 2 have no model" in text and "--partial" in text and "hybridpose fit" in text
    assert not out.exists()
    code, text = cli(monkeypatch, capsys, "predict", "data/sample/Triangle", "--model", run, "--out", out, "--partial")
    assert code == 0, text
    assert "folds [2] of the run have no model" in text.replace("\n", " ")
    table = pd.read_csv(out)
    assert len(table) == 10 and (table["ensemble"] == "partial: folds [2] missing").all()
