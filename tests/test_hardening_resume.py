"""Faults in fit and Ray: a resumed fit is the run it would have been, a rerun on a finished run changes
nothing, a damaged checkpoint of a finished fold is trained again, and a Ray address where nothing
listens is one line within seconds."""
from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import SAMPLE
from corpus import digest, sample_subset
from test_cli import _lines, cli

ROOT = Path(__file__).resolve().parents[1]
# the smallest training the config allows (as in test_scale): one thread, so that the sums, hence the runs, are equal
TINY = {"preset": "tiny", "backbone": "test_efficientnet", "input_size": 32, "num_threads": 1, "show_progress": False}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """3 photos of each of the 8 classes of data/sample, with its hierarchy."""
    return sample_subset(tmp_path_factory.mktemp("small") / "data", 3)


@pytest.fixture(scope="module")
def small_run(small_data, tmp_path_factory) -> Path:
    """A finished run on small_data, fitted without interruption (tests copy it before writing)."""
    from hybridpose.train.fit import fit

    run = tmp_path_factory.mktemp("small_run") / "run"
    fit(small_data, run, folds=2, **TINY)
    return run


def _fit_command(run: Path) -> list[str]:
    """The run's own `hybridpose fit` command, as arguments after `hybridpose`."""
    from hybridpose.run.folder import RunFolder

    return shlex.split(RunFolder(run).fit_command())[1:]


# --------------------------------------------------------------------------- 1. resumed = uninterrupted


def test_a_fit_stopped_after_stage_2_of_fold_1_resumes_into_the_uninterrupted_run(small_data, small_run, tmp_path,
                                                                                    monkeypatch):
    from hybridpose.train import fit as fit_module

    whole, resumed = small_run, tmp_path / "resumed"

    real = fit_module.train_stage

    def stop_at_stage_3(stage, *args, **kwargs):
        if stage == 3:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) right after fold 1's stage 2 was saved
        return real(stage, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(fit_module, "train_stage", stop_at_stage_3)
        with pytest.raises(KeyboardInterrupt):
            fit_module.fit(small_data, resumed, folds=2, **TINY)
    fold_1 = resumed / "fold_1"
    assert sorted(p.name for p in fold_1.iterdir() if not p.name.startswith(".")) == ["metrics.csv", "stage1.pt", "stage2.pt"]
    assert not (resumed / "fold_2").exists() and not (resumed / "oof_predictions.csv").exists()

    fit_module.fit(small_data, resumed, folds=2, **TINY)  # the same command again, in a process that ran other stages
    assert (resumed / "oof_predictions.csv").read_bytes() == (whole / "oof_predictions.csv").read_bytes()
    for name in ("fusion.json", "fold_1/oof_image.csv", "fold_2/oof_image.csv", "fold_1/done.json", "fold_2/done.json"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name


def test_each_stage_draws_from_its_own_seed_whatever_ran_before(tmp_path):
    """Stage seeds differ by run seed, fold and stage, and the generators a stage uses start there."""
    import random

    import numpy as np
    import torch

    from hybridpose.train.stages import seed_stage, stage_seed

    seeds = {stage_seed(s, k, st) for s in (0, 1) for k in range(1, 12) for st in (1, 2, 3)}
    assert len(seeds) == 2 * 11 * 3

    class Aug:
        gen = torch.Generator()

    def draws():
        aug = Aug()
        seed_stage(stage_seed(0, 1, 3), aug)
        return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=aug.gen)))

    first = draws()
    random.random(), np.random.rand(5), torch.rand(7)  # what other stages would have drawn
    assert draws() == first


# --------------------------------------------------------------------------- 2. a finished run is left alone


def test_fit_on_a_finished_run_says_it_is_complete_and_changes_nothing(monkeypatch, capsys, copy_run):
    import hybridpose.train.fit as fit_module

    run = copy_run()
    code, text = cli(monkeypatch, capsys, "calibrate", run)
    assert code == 0, text
    assert any(c.startswith("rules_") for c in pd.read_csv(run / "oof_predictions.csv").columns)
    before = digest(run)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was worked on again")

    for name in ("extract", "train_stage", "finish", "build_crop_bank"):
        monkeypatch.setattr(fit_module, name, forbidden)
    code, text = cli(monkeypatch, capsys, *_fit_command(run))
    assert code == 0, text
    assert "Traceback" not in text
    lines = _lines(text)
    assert len(lines) == 1 and "complete" in lines[0] and str(run) in text.replace("\n", ""), text
    assert digest(run) == before


# --------------------------------------------------------------------------- 3. a damaged checkpoint


def test_a_truncated_checkpoint_of_a_finished_fold_is_trained_again_and_predict_works(monkeypatch, capsys, small_run,
                                                                                        small_data, tmp_path):
    from hybridpose.nets.network import load_checkpoint
    from hybridpose.train.fit import fit

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    ckpt = run / "fold_1" / "stage3.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    kept = {name: h for name, h in digest(run).items()
            if name.startswith("fold_2/") or name in ("fold_1/stage1.pt", "fold_1/stage2.pt", "config.json", "folds.csv", "poses.csv")}

    capsys.readouterr()
    assert "already_complete" not in fit(small_data, run, folds=2, **TINY)  # the same settings (and threads) again
    text = capsys.readouterr().err
    said = [line for line in _lines(text) if "damaged" in line]
    assert len(said) == 1 and "fold 1" in said[0] and "stage 3" in said[0], text
    assert str(ckpt) in text.replace("\n", "")
    assert load_checkpoint(ckpt, fold=1, stage=3)["stage"] == 3
    now = digest(run)
    assert {name: now[name] for name in kept} == kept  # only the damaged stage and what follows it were redone
    assert (run / "summary.json").exists()
    # the same stage 2 and the same stage seed: fold 1's stage 3, hence the table, are what they were
    assert (run / "oof_predictions.csv").read_bytes() == (small_run / "oof_predictions.csv").read_bytes()

    photos = small_data / "Triangle"
    code, text = cli(monkeypatch, capsys, "predict", photos, "--model", run, "--out", tmp_path / "p.csv", "--workers", "0")
    assert code == 0, text
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(list(photos.iterdir()))


def test_a_checkpoint_of_another_fold_is_still_an_error(monkeypatch, capsys, copy_run):
    """Only a damaged file is trained again; a whole checkpoint that is not this fold's is refused, as before."""
    run = copy_run()
    shutil.copy(run / "fold_2" / "stage3.pt", run / "fold_1" / "stage3.pt")
    before = digest(run)
    code, text = cli(monkeypatch, capsys, *_fit_command(run))
    assert code == 2 and "Traceback" not in text
    lines = _lines(text)
    assert len(lines) == 1 and "stage3.pt" in lines[0] and "another run or fold" in lines[0], text
    assert digest(run) == before


# --------------------------------------------------------------------------- 4. a Ray address with nothing there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_a_ray_address_where_nothing_listens_is_one_line_in_seconds(command, tmp_path):
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_free_port()}"
    if command == "fit":
        out = tmp_path / "run"
        args = ["fit", str(SAMPLE), "--out", str(out), "--folds", "2", "--preset", "tiny"]
    else:
        model = ROOT / "tests" / "data" / "legacy" / "run"  # a real run (its config.json is checked first)
        out = tmp_path / "predictions"
        args = ["predict", str(SAMPLE / "Triangle"), "--model", str(model), "--out", str(out)]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hybridpose_cli.main", *args, "--executor", "ray", "--address", address],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    seconds = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    lines = _lines(text)
    assert len(lines) == 1 and lines[0].startswith("error:") and address in lines[0] and "ray start" in lines[0], text
    assert seconds < 45, seconds
    assert not out.exists()  # nothing ran


@pytest.mark.parametrize("name", ["fusion.json", "oof_predictions.csv"])
def test_fit_on_a_finished_run_with_a_damaged_output_finishes_it_again(name, monkeypatch, capsys, small_run,
                                                                       small_data, tmp_path):
    """The line a damaged fusion.json or out-of-fold table gives says to run fit again: that must remake it
    (not answer "the run is complete"), from the folds, retraining nothing."""
    import hybridpose.train.fit as fit_module

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    whole = (run / name).read_bytes()
    (run / name).write_bytes(whole[: len(whole) // 2])
    monkeypatch.setattr(fit_module, "train_stage", lambda *a, **k: pytest.fail("a finished fold was retrained"))
    capsys.readouterr()
    summary = fit_module.fit(small_data, run, folds=2, **TINY)
    text = capsys.readouterr()
    assert "already_complete" not in summary
    assert f"{run / name}: damaged; finishing the run again" in (text.out + text.err).replace("\n", "")
    assert (run / name).read_bytes() == whole  # remade exactly from the same folds
