"""`hybridpose fit` killed half way resumes where it stopped, and refuses to mix settings in one run."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIT = [sys.executable, "-m", "hybridpose_cli.main", "fit", "data/sample", "--preset", "tiny"]
TIMEOUT = 900


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _run(args: list[str], log: Path) -> tuple[int, str]:
    proc = _start(args, log)
    try:
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return rc, log.read_text(errors="replace")


def _fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_killed_fit_resumes_without_redoing_finished_work(tmp_path):
    run = tmp_path / "RUN"
    args = [*FIT, "--folds", "3", "--out", str(run)]
    marker = run / "fold_3" / "stage1.pt"
    proc = _start(args, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group of the fit we started
        proc.wait()
    log = (tmp_path / "first.log").read_text(errors="replace")
    assert marker.exists(), f"the first fit never reached fold 3:\n{log[-3000:]}"
    assert proc.returncode == -signal.SIGKILL, "the fit finished before it could be interrupted"
    assert not (run / "fold_3" / "done.json").exists()
    assert not (run / "oof_predictions.csv").exists()

    finished = [*sorted((run / "fold_1").iterdir()), *sorted((run / "fold_2").iterdir()),
                run / "folds.csv", marker, *run.glob("crops_*.npz")]
    finished = [p for p in finished if not p.name.startswith(".")]
    assert {p.name for p in finished if p.parent.name == "fold_2"} >= {"stage1.pt", "stage2.pt", "stage3.pt", "done.json"}
    before = {p: _fingerprint(p) for p in finished}
    folds_before = (run / "folds.csv").read_text()
    metrics_3 = pd.read_csv(run / "fold_3" / "metrics.csv")

    rc, log = _run(args, tmp_path / "second.log")
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log
    assert (run / "folds.csv").read_text() == folds_before
    for path, fp in before.items():
        assert _fingerprint(path) == fp, f"{path.relative_to(run)} was rewritten"

    for k in (1, 2, 3):
        done = json.loads((run / f"fold_{k}" / "done.json").read_text())
        assert done["fold"] == k
        for s in (1, 2, 3):
            assert (run / f"fold_{k}" / f"stage{s}.pt").is_file()
    metrics = pd.read_csv(run / "fold_3" / "metrics.csv")
    assert sorted(metrics["stage"].unique()) == [1, 2, 3]
    pd.testing.assert_frame_equal(metrics[metrics["stage"] == 1].reset_index(drop=True),
                                  metrics_3[metrics_3["stage"] == 1].reset_index(drop=True))

    oof = pd.read_csv(run / "oof_predictions.csv")
    folds = pd.read_csv(run / "folds.csv")
    assert len(oof) == 80 and list(oof["path"]) == list(folds["path"])
    assert sorted(oof["fold"].unique()) == [1, 2, 3]
    fused = oof[[c for c in oof.columns if c.startswith("fused:class:")]]
    assert fused.notna().all().all()
    images = oof[[c for c in oof.columns if c.startswith("image:class:")]]
    assert images.notna().all().all()

    # the same command once more: nothing left to train, nothing rewritten
    again = {p: _fingerprint(p) for p in run.glob("fold_*/stage*.pt")}
    rc, log = _run(args, tmp_path / "third.log")
    assert rc == 0, log[-3000:]
    assert {p: _fingerprint(p) for p in run.glob("fold_*/stage*.pt")} == again

    # other settings into the same run directory: a clear refusal, nothing touched
    config = (run / "config.json").read_text()
    for other in (["--folds", "2"], ["--folds", "3", "--seed", "5"]):
        rc, log = _run([*FIT, *other, "--out", str(run)], tmp_path / "other.log")
        assert rc != 0
        assert "Traceback" not in log
        assert "other settings" in log and str(run) in log.replace("\n", "")
        assert (run / "config.json").read_text() == config
