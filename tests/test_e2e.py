"""End to end through the installed command on the embedded sample: extract, fit, calibrate, predict, evaluate."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"

pytestmark = pytest.mark.slow


def hybridpose(*args: str, timeout: int = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", "hybridpose_cli.main", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"hybridpose {' '.join(map(str, args))} exited {proc.returncode}:\n{out[-4000:]}"
    assert "Traceback" not in out
    return out


def _hierarchy_rows() -> tuple[list[str], dict[str, list[str]]]:
    """data/sample/hierarchy.csv read on its own: header and leaf -> its row."""
    with open(SAMPLE / "hierarchy.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], {r[0]: r for r in rows[1:]}


def test_extract_finds_people_in_the_sample(tmp_path):
    # a cold cache of its own, so MediaPipe really runs on every photo
    out = hybridpose("extract", "data/sample", "--out", tmp_path / "x", "--cache", tmp_path / "cache")
    table = pd.read_csv(tmp_path / "x" / "poses.csv")
    # a row per person found: some sample photos show several people (four in one tree photo)
    assert f"81 files, {len(table)} rows (a row per person)" in " ".join(out.split())  # SOURCE.md gets its row too
    assert table["path"].nunique() == 81 and len(table) > 81
    assert list(table.loc[table["status"] == "unsupported", "path"]) == [str(Path("data/sample/SOURCE.md"))]
    photos = table[table["status"] != "unsupported"]
    assert photos.loc[photos["status"] == "ok", "path"].nunique() >= 75
    assert (photos.groupby("path")["person"].apply(lambda p: list(p) == list(range(len(p))))).all()
    assert set(photos["status"]) <= {"ok", "no_person"}


def test_fit_calibrate_predict_evaluate(tmp_path):
    run = tmp_path / "run"
    out = hybridpose("fit", "data/sample", "--folds", "2", "--preset", "tiny", "--out", run)
    assert f"run saved in {run}" in out.replace("\n", "")
    for k in (1, 2):
        assert (run / f"fold_{k}" / "done.json").is_file()

    hybridpose("calibrate", run)
    assert (run / "rules.yaml").is_file()

    preds = run / "predictions.csv"
    out = hybridpose("predict", "data/sample", "--model", run, "--out", preds)
    header, rows = _hierarchy_rows()
    table = pd.read_csv(preds, keep_default_na=False, na_values=[""])
    assert f"81 files, {len(table)} rows (a row per person)" in " ".join(out.split())  # SOURCE.md gets its row too
    assert table["path"].nunique() == 81
    source = table[table["path"].str.endswith("SOURCE.md")]
    assert list(source["status"]) == ["unsupported"] and source[header[0]].isna().all()  # a row, no label
    table = table[table["status"] != "unsupported"].reset_index(drop=True)
    assert set(header) <= set(table.columns)
    for r in table.to_dict("records"):
        assert r["status"] in ("ok", "no_person"), r["path"]
        leaf = r[header[0]]
        assert leaf in rows, r["path"]
        assert [r[level] for level in header] == rows[leaf], r["path"]
        assert r["top1"] == leaf or r["rule"], r["path"]  # the top leaf, unless a rule decided
    truth = [Path(p).parent.name for p in table["path"]]
    # the keypoint branch was fitted on these very photos: far above the 1/8 of guessing
    assert (table[header[0]] == pd.Series(truth)).mean() >= 0.5

    oof = pd.read_csv(run / "oof_predictions.csv", keep_default_na=False, na_values=[""])
    for r in oof.to_dict("records"):
        assert [r[f"rules_{level}"] for level in header] == rows[r[f"rules_{header[0]}"]]
        assert [r[f"true_{level}"] for level in header] == rows[r[f"true_{header[0]}"]]

    out = hybridpose("evaluate", run)
    report = run / "evaluation" / "report.html"
    assert report.is_file() and report.stat().st_size > 1000
