"""Hardening, round 2, part A: no file a run reads can run code, and a full disk is one clear line.

1. A fold checkpoint whose unpickling would call code (here: touch a marker file) is refused by `predict`,
   `export`, `explain` and by `fit` resuming an unfinished fold, in one line, and the code never runs;
   checkpoints written by `save_checkpoint` (old runs) still load.
2. The other loaders: `--weights FILE` (checked before any work), the crop cache (`np.load` without
   pickles), a bundle's ONNX graph whose external data lie outside the bundle.
3. A full disk while writing (torch's writer, or any ENOSPC) is one line naming the file and the free
   space, no temporary is left, the earlier file is kept; on a real small tmpfs, `fit` stops with that
   line and the rerun after freeing space resumes.
"""
from __future__ import annotations

import errno
import hashlib
import json
import pathlib
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from corpus import digest
from hybridpose import atomic
from hybridpose.errors import HybridPoseError, RunError, WeightsError
from hybridpose.nets.network import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from test_cli import cli
from test_cli_errors import THREE, one_line_error, tiny_data

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


class Payload:
    """Unpickling it touches ``marker``: the stand-in for any code a crafted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def payload_checkpoint(path: Path, marker: Path, **fields) -> Path:
    """A checkpoint in the run's format whose ``meta`` runs code when unpickled; checked live first."""
    obj = {"format": CHECKPOINT_FORMAT, "version": 1, **fields, "meta": Payload(marker), "state_dict": {}}
    torch.save(obj, path)
    torch.load(path, weights_only=False)  # the old loader: the payload really runs
    assert marker.exists(), "the payload is not live; the test would prove nothing"
    marker.unlink()
    return path


def fit_error(code: int, text: str, *needles: str) -> str:
    """`fit`'s one error line, its last (a fit that got to work says first what it fits), as ``one_line_error``."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in text, text
    return one_line_error(code, errors[0], *needles)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


# --- 1. fold checkpoints -------------------------------------------------------------------------------


def test_a_checkpoint_written_by_save_checkpoint_loads(tmp_path):
    """What the fold runner writes (tensors, numbers, strings, lists, dicts) loads under the plain-data loader."""
    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    meta = {"best": {"stage": 1, "epoch": 1, "val_acc": 0.5, "lr": 1e-3, "val_loss": float("nan")}, "best_epoch": 1,
            "oof": {"val_acc": 0.25}, "backbone": "efficientnet_lite0", "input_size": 64, "eval_margin": 0.2,
            "mean": [0.5] * 3, "std": [0.5] * 3, "weights_source": "random init",
            "timm_kwargs": {"dynamic_img_size": True}, "levels": {"leaf": ["a", "b"]}}
    path = tmp_path / "fold_1" / "stage3.pt"
    save_checkpoint(path, run_id="abc", fold=1, stage=3, state_dict=state, meta=meta)
    ckpt = load_checkpoint(path, run_id="abc", fold=1, stage=3)
    assert torch.equal(ckpt["state_dict"]["w"], state["w"]) and ckpt["meta"]["levels"] == meta["levels"]
    assert ckpt["meta"]["best"]["lr"] == 1e-3


def test_the_tiny_runs_checkpoints_load(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    for path in sorted(tiny_run.glob("fold_*/stage*.pt")):
        ckpt = load_checkpoint(path, run_id=config["run_id"])
        assert ckpt["state_dict"] and ckpt["meta"]["backbone"]


def test_payload_checkpoint_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = payload_checkpoint(tmp_path / "stage3.pt", marker, run_id="abc", fold=1, stage=3)
    with pytest.raises(RunError) as info:
        load_checkpoint(path, fix="hybridpose fit DATA --out RUN")
    message = str(info.value)
    assert str(path) in message and "not a plain weights file" in message and "refused" in message
    assert "delete it and run `hybridpose fit DATA --out RUN`" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "export", "explain"])
def test_commands_refuse_a_payload_fold_checkpoint(monkeypatch, capsys, copy_run, tmp_path, command):
    run = copy_run()
    config = json.loads((run / "config.json").read_text())
    marker = tmp_path / "ran"
    ckpt = payload_checkpoint(run / "fold_1" / "stage3.pt", marker, run_id=config["run_id"], fold=1, stage=3)
    out = tmp_path / "out"
    args = {"predict": ["predict", SAMPLE / "Triangle", "--model", run, "--out", out],
            "export": ["export", run, "--out", out],
            "explain": ["explain", SAMPLE / "Triangle", "--model", run, "--out", out]}[command]
    line = one_line_error(*cli(monkeypatch, capsys, *args), str(ckpt), "not a plain weights file", "refused",
                          f"hybridpose fit {SAMPLE} --out {run}")
    assert "nothing of it ran" in line
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_fit_resume_refuses_a_payload_stage1_of_an_unfinished_fold(monkeypatch, capsys, copy_run, tmp_path):
    run = copy_run()
    config = json.loads((run / "config.json").read_text())
    for name in ("done.json", "stage2.pt", "stage3.pt", "oof_image.csv"):
        (run / "fold_2" / name).unlink(missing_ok=True)
    marker = tmp_path / "ran"
    ckpt = payload_checkpoint(run / "fold_2" / "stage1.pt", marker, run_id=config["run_id"], fold=2, stage=1)
    before = digest(run)
    fit_error(*cli(monkeypatch, capsys, "fit", SAMPLE, "--out", run, "--folds", "2", "--preset", "tiny"),
              str(ckpt), "not a plain weights file", "refused")
    assert not marker.exists()
    assert digest(run) == before  # nothing trained, nothing rewritten
    assert not temporaries(run)


# --- 2. the other loaders ------------------------------------------------------------------------------


def test_weights_file_that_runs_code_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    data = tiny_data(tmp_path / "data", THREE)
    marker = tmp_path / "ran"
    weights = tmp_path / "w.pt"
    torch.save({"conv_stem.weight": torch.zeros(1), "extra": Payload(marker)}, weights)
    out = tmp_path / "run"
    line = one_line_error(*cli(monkeypatch, capsys, "fit", data, "--weights", weights, "--out", out),
                          str(weights), "not a plain weights file", "refused")
    assert "torch.save(model.state_dict(), FILE)" in line
    assert not marker.exists() and not out.exists()


def test_damaged_weights_file_is_one_line_before_any_work(monkeypatch, capsys, tmp_path):
    data = tiny_data(tmp_path / "data", THREE)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "run"
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--weights", weights, "--out", out),
                   str(weights), "not a PyTorch state dict")
    assert not out.exists()


def test_plain_weights_file_still_loads(tmp_path):
    from hybridpose.nets.backbones import read_weights

    path = tmp_path / "w.pt"
    torch.save({"a": torch.ones(2)}, path)
    assert torch.equal(read_weights(path)["a"], torch.ones(2))
    torch.save(["not", "a", "dict"], path)
    with pytest.raises(WeightsError, match="expected a dict of tensors"):
        read_weights(path)


def test_crop_cache_with_pickled_objects_is_rebuilt_not_unpickled(tmp_path):
    from hybridpose.train.data import _load_bank

    marker = tmp_path / "ran"
    cache = tmp_path / "crops_64.npz"
    np.savez(cache, images=np.zeros((1, 64, 64, 3), np.uint8), keypoints=np.zeros((1, 33, 3)),
             has_person=np.ones(1, bool), meta=np.array([Payload(marker)], dtype=object))
    poses = pd.DataFrame({"sha256": ["x"]})
    assert _load_bank(cache, poses, 64, 0.2) is None
    assert not marker.exists()


def _external_graph(path: Path, location: str) -> Path:
    """A one-node ONNX graph whose one initializer keeps its data in ``location``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("location", ["../outside/secret.bin", "/ABS/secret.bin", "link.bin"],
                         ids=["dotdot", "absolute", "link_out"])
def test_onnx_external_data_outside_the_bundle_is_refused(monkeypatch, tmp_path, location):
    pytest.importorskip("onnxruntime")
    from hybridpose.engines import ort as engine

    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.bin"
    np.arange(4, dtype=np.float32).tofile(secret)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "link.bin").symlink_to(secret)
    graph = _external_graph(bundle / "image_model.onnx", location.replace("/ABS", str(tmp_path / "outside")))

    def forbidden(*args, **kwargs):
        raise AssertionError("ONNX Runtime was given the graph")

    monkeypatch.setattr("onnxruntime.InferenceSession", forbidden)
    with pytest.raises(RunError, match="outside .*refused to load it"):
        engine.check_external_data(graph)


def test_onnx_external_data_inside_the_bundle_is_allowed(tmp_path):
    np.arange(4, dtype=np.float32).tofile(tmp_path / "w.bin")
    from hybridpose.engines import ort as engine

    engine.check_external_data(_external_graph(tmp_path / "image_model.onnx", "w.bin"))


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    from hybridpose.export import export

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export(tiny_run, out)
    return out


def test_predict_refuses_a_bundle_reading_files_outside_it(monkeypatch, capsys, bundle, tmp_path):
    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    (tmp_path / "secret.bin").write_bytes(bytes(16))
    _external_graph(copy / "image_model.onnx", "../secret.bin")
    out = tmp_path / "p.csv"
    one_line_error(*cli(monkeypatch, capsys, "predict", SAMPLE / "Triangle", "--model", copy, "--out", out),
                   str(copy / "image_model.onnx"), "'../secret.bin'", "refused")
    assert not out.exists()


# --- 3. a full disk ------------------------------------------------------------------------------------

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def _torch_save_fills_the_disk(obj, f, *args, **kwargs):
    Path(f).write_bytes(b"PK partial")  # what torch had written when the disk filled up
    raise RuntimeError(TORCH_FULL)


def test_torch_writer_failing_on_a_full_disk_is_one_clear_line(monkeypatch, tmp_path):
    path = tmp_path / "fold_1" / "stage1.pt"
    path.parent.mkdir()
    path.write_bytes(b"the earlier checkpoint")
    monkeypatch.setattr(torch, "save", _torch_save_fills_the_disk)
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 4096)
    with pytest.raises(atomic.DiskFullError) as info:
        atomic.save_torch(path, {"w": torch.zeros(10_000)})
    message = str(info.value)
    assert isinstance(info.value, HybridPoseError) and isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOSPC and "\n" not in message
    assert message.startswith(f"{path}: not written, the disk is full (4.1 KB free in {path.parent})")
    assert "run the same command again" in message
    again = pickle.loads(pickle.dumps(info.value))  # as a Ray worker's error reaches the driver
    assert type(again) is atomic.DiskFullError and str(again) == message
    assert path.read_bytes() == b"the earlier checkpoint"
    assert not temporaries(tmp_path)


def test_torch_writer_failing_with_room_left_is_not_called_a_full_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "save", _torch_save_fills_the_disk)
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 10**12)
    with pytest.raises(RuntimeError, match="inline_container"):
        atomic.save_torch(tmp_path / "x.pt", {"w": torch.zeros(10)})
    assert not temporaries(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_enospc_in_any_writer_is_one_clear_line(monkeypatch, tmp_path, code):
    target = tmp_path / "poses.csv"
    target.write_text("old\n")

    def full(self, path, *args, **kwargs):
        Path(path).write_text("half")
        raise OSError(code, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(atomic.DiskFullError, match=f"{target}: not written, the disk is full"):
        atomic.write_csv(target, pd.DataFrame({"a": [1]}))
    assert target.read_text() == "old\n" and not temporaries(tmp_path)


def test_other_os_errors_are_left_as_they_are(tmp_path):
    with pytest.raises(PermissionError):
        with atomic.atomic_path(tmp_path / "x.txt"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert not temporaries(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (as root, where mount works): room for a tiny run's tables, not for a checkpoint."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                                        capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_save_torch_on_a_real_full_disk(small_disk):
    path = small_disk / "stage1.pt"
    with pytest.raises(atomic.DiskFullError, match=f"{path}: not written, the disk is full"):
        atomic.save_torch(path, {"w": torch.zeros(2_000_000)})  # 8 MB
    assert not path.exists() and not temporaries(small_disk)


@pytest.mark.slow
def test_fit_on_a_full_disk_stops_in_one_line_and_resumes(monkeypatch, capsys, small_disk, sample_poses):
    run = small_disk / "run"
    args = ["fit", SAMPLE, "--out", run, "--folds", "2", "--preset", "tiny"]
    line = fit_error(*cli(monkeypatch, capsys, *args), str(run / "fold_1" / "stage1.pt"), "the disk is full",
                     "free in", "run the same command again")
    assert not temporaries(run)
    kept = {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in ("poses.csv", "folds.csv")}
    assert (run / "fold_1" / "metrics.csv").exists(), line
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    code, text = cli(monkeypatch, capsys, *args)
    assert code == 0, text
    assert {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in kept} == kept  # resumed, not redone
    assert all((run / f"fold_{k}" / "done.json").exists() for k in (1, 2))
