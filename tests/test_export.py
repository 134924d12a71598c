"""`hybridpose export`: the bundle predicts like the run (ONNX Runtime vs PyTorch), alone, and the worker
pipeline of `predict --workers` gives the same table as one process. A run predicts by default with its own
ONNX graph, built on first use and kept in the run folder, as the checkpoints do."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridpose.errors import RunError
from hybridpose.export import export, max_difference
from hybridpose.inference.classifier import HybridPoseClassifier

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def sample_photos(n_per_class: int = 2) -> list[str]:
    return [str(p) for d in sorted(SAMPLE.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir())[:n_per_class]]


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export(tiny_run, out)
    return out


def test_bundle_files_and_manifest(bundle, tiny_run):
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = json.loads((tiny_run / "config.json").read_text())
    spec = manifest["image_model"]
    assert spec["folds"] == [1, 2] and spec["levels"] == config["hierarchy"]["levels"]
    assert spec["input"]["dtype"] == "uint8" and spec["input"]["input_size"] == 64
    for name in ("image_model.onnx", "keypoint_model.json", "fusion.json", "config.json", "hierarchy.csv", "skeleton.json"):
        assert name in manifest["files"], name
    import hashlib

    for name, sha in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == sha, name
    assert not list(bundle.glob("fold_*")) and not (bundle / "poses.csv").exists()  # no checkpoints, no training data


def test_onnx_matches_pytorch_on_real_photos(bundle, tiny_run):
    torch_clf = HybridPoseClassifier.load(tiny_run, engine="torch")
    ort_clf = HybridPoseClassifier.load(bundle)
    assert type(ort_clf.image_branch).__name__ == "OnnxImageBranch"
    assert type(torch_clf.image_branch).__name__ == "ImageBranch"
    poses, crops = torch_clf.poses_and_crops(sample_photos())
    assert (poses["status"] == "ok").sum() >= 12  # real photos with a person
    a = torch_clf.image_branch.predict_level_proba(crops)
    b = ort_clf.image_branch.predict_level_proba(crops)
    assert set(a) == set(b) == set(torch_clf.levels)
    diff = max_difference(a, b)
    assert all(d <= 1e-4 for d in diff.values()), diff
    for lv in a:  # probabilities, not something trivially equal
        assert np.allclose(b[lv].sum(1), 1, atol=1e-5) and b[lv].std() > 0
    assert np.abs(torch_clf.image_branch.embed(crops) - ort_clf.image_branch.embed(crops)).max() < 1e-3
    one = ort_clf.image_branch.predict_level_proba(crops[:1])  # dynamic batch size
    assert np.abs(one[torch_clf.levels[0]] - b[torch_clf.levels[0]][:1]).max() <= 1e-4


def test_copied_bundle_predicts_without_the_run(copy_run, tmp_path):
    run = copy_run()
    photos = sample_photos(1)
    expected = HybridPoseClassifier.load(run).predict(photos)
    export(run, tmp_path / "bundle")
    moved = shutil.move(str(tmp_path / "bundle"), str(tmp_path / "elsewhere" / "b"))
    shutil.rmtree(run)  # nothing of the run is left to read
    got = HybridPoseClassifier.load(moved).predict(photos)
    assert list(got.columns) == list(expected.columns)
    levels = [c for c in expected.columns if c in ("class", "subgroup", "group")]
    pd.testing.assert_frame_equal(got[["path", "status", *levels, "rule"]], expected[["path", "status", *levels, "rule"]])
    assert np.abs(got["confidence"].to_numpy() - expected["confidence"].to_numpy()).max() <= 1e-3


def test_engine_choice_errors(bundle, tiny_run):
    with pytest.raises(RunError, match="exported bundle.*--engine onnxruntime"):
        HybridPoseClassifier.load(bundle, engine="torch")
    with pytest.raises(RunError, match="unknown engine"):
        HybridPoseClassifier.load(bundle, engine="tensorrt")
    with pytest.raises(RunError, match="already an exported bundle"):
        export(bundle, bundle.parent / "again")


def test_bundle_without_onnxruntime_says_how_to_install(bundle, tiny_run, monkeypatch):
    import dataclasses

    from hybridpose import engines

    engines.available()
    missing = dataclasses.replace(engines.ENGINES["onnxruntime"], available=lambda: False)
    monkeypatch.setitem(engines.ENGINES, "onnxruntime", missing)
    with pytest.raises(RunError, match=r"onnxruntime: its runtime is not installed; run `pip install onnxruntime`"):
        HybridPoseClassifier.load(bundle)
    with pytest.raises(RunError, match=r"onnxruntime: its runtime is not installed"):
        HybridPoseClassifier.load(tiny_run, engine="onnxruntime")
    assert type(HybridPoseClassifier.load(tiny_run).image_branch).__name__ == "ImageBranch"  # a run: torch, silently


def test_damaged_onnx_is_one_clear_error(bundle, tmp_path):
    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    (copy / "image_model.onnx").write_bytes(b"not a model")
    with pytest.raises(RunError, match="image_model.onnx: ONNX Runtime cannot load it"):
        HybridPoseClassifier.load(copy)


def test_cli_predict_workers_and_engines_agree(bundle, tiny_run, bad_corpus, tmp_path):
    """A fresh process (workers are forked only before MediaPipe ran): 2 workers with the bundle, 0 with the
    run, on real photos and the bad-input corpus: the same rows, statuses and labels."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sample_photos(2):
        shutil.copy(p, photos / f"{Path(p).parent.name}_{Path(p).name}")
    for p in bad_corpus[0].iterdir():
        if p.is_file() and not p.is_symlink():
            shutil.copy(p, photos / p.name)

    def predict(model: Path, *options: str) -> pd.DataFrame:
        out = tmp_path / f"{model.name}{''.join(options)}.csv"
        proc = subprocess.run([sys.executable, "-m", "hybridpose_cli.main", "predict", str(photos), "--model", str(model),
                               "--out", str(out), "--batch-size", "5", "--cache", str(tmp_path / f"cache{len(options)}"),
                               *options], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "already ran MediaPipe" not in proc.stdout + proc.stderr  # the workers did run
        return pd.read_csv(out, keep_default_na=False)

    one = predict(tiny_run, "--workers", "0", "--engine", "torch")
    two = predict(bundle, "--workers", "2")
    assert one["path"].nunique() == len(list(photos.iterdir())) and (one["status"] == "ok").sum() >= 12
    cols = ["path", "person", "status", "reason", "class", "subgroup", "group", "top1", "top2", "rule"]
    pd.testing.assert_frame_equal(one[cols], two[cols])


def test_producer_keeps_order_and_a_bounded_window(tmp_path, monkeypatch):
    """At most two batches of photos are in flight however many photos there are; batches come out in order."""
    from hybridpose.inference import pipeline
    from hybridpose.pose.result import PoseResult

    photos = []
    for i in range(23):
        p = tmp_path / f"{i:02d}.jpg"
        p.write_bytes(b"x" * (i + 1))  # distinct contents: distinct cache keys
        photos.append(str(p))
    outstanding, most = set(), [0]

    class Job:
        def __init__(self, item):
            self.item = item

        def get(self, timeout=None):
            outstanding.discard(self.item[1])
            j, path = self.item[:2]
            return j, PoseResult("no_person", path), [np.full((self.item[3], self.item[3], 3), j, np.uint8)]

    class Pool:
        def apply_async(self, fn, args):
            assert fn is pipeline._work
            outstanding.add(args[0][1])
            most[0] = max(most[0], len(outstanding))
            return Job(args[0])

        def terminate(self):
            pass

    class Estimator:
        version = "test"

    spec = pipeline.StreamSpec(tuple(photos), 8, 0.15, 5, batch_size=4, cache_dir=str(tmp_path / "cache"))
    got = list(pipeline.Stream(Pool(), spec, Estimator, workers=1))
    assert [len(r) for _, r, _ in got] == [4, 4, 4, 4, 4, 3]
    assert [r.reason for _, rs, _ in got for r in rs] == photos  # in order
    assert all((crops[j] == j).all() for _, _, crops in got for j in range(len(crops)))  # each crop in its row
    assert most[0] <= 8  # two batches of 4


def test_a_prestarted_stream_poses_before_it_is_asked_and_only_serves_the_same_photos(tmp_path, monkeypatch):
    """predict hands the workers the first photos before the networks load; the producer takes that stream
    only for the same photos cut the same way, else it ends it and starts afresh."""
    from hybridpose.inference import pipeline
    from hybridpose.pose.result import PoseResult

    photos = []
    for i in range(6):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(b"y" * (i + 1))
        photos.append(str(p))
    submitted, ended = [], []

    class Pool:
        def apply_async(self, fn, args):
            submitted.append(args[0][1])
            item = args[0]

            class Job:
                def get(self, timeout=None):
                    return item[0], PoseResult("no_person", item[1]), None
            return Job()

        def terminate(self):
            ended.append(self)

    class Estimator:
        version = "test"

    monkeypatch.setattr(pipeline, "forkable", lambda: True)
    monkeypatch.setattr(pipeline, "start_pool", lambda workers, estimator, niceness=0: Pool())
    monkeypatch.setattr(pipeline, "_PRESTARTED", {})
    cache = str(tmp_path / "cache")
    pipeline.prestart(1, Estimator, pipeline.StreamSpec(tuple(photos), 8, 0.15, 5, 2, cache))
    assert submitted == photos[:4]  # before anything asks: a window of 2 batches of 2
    producer = pipeline.Producer(Estimator, 8, 0.15, 5, workers=1, cache_dir=cache)
    got = [r.reason for _, rs, _ in producer.batches(photos, 2) for r in rs]
    assert got == photos and submitted == photos  # served by the early stream: nothing posed twice
    assert len(ended) == 1

    submitted.clear()
    pipeline.prestart(1, Estimator, pipeline.StreamSpec(tuple(photos), 8, 0.15, 5, 2, cache))
    other = pipeline.Producer(Estimator, 16, 0.15, 5, workers=1, cache_dir=cache)  # another crop size
    assert [r.reason for _, rs, _ in other.batches(photos[:2], 2) for r in rs] == photos[:2]
    assert submitted == photos[:4] + photos[:2] and len(ended) == 3  # the early stream ended, a fresh one served


def test_predict_with_workers_gives_back_the_callers_threads(tiny_run):
    """predict with worker processes lends the networks the cores the workers leave, and gives the
    caller's PyTorch thread count back afterwards (a fresh process: workers fork only before MediaPipe)."""
    code = ("import sys, torch; torch.set_num_threads(2); "
            "from hybridpose.inference.classifier import HybridPoseClassifier; "
            "clf = HybridPoseClassifier.load(sys.argv[1], engine='torch'); "
            "rows = clf.predict(sys.argv[2:], workers=1); "
            "print(len(rows), torch.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_run), *sample_photos(1)[:4]], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split()[-2:] == ["4", "2"], proc.stdout


def test_a_bundle_predicts_where_pytorch_cannot_be_imported(bundle, tmp_path):
    """Deploying a bundle needs ONNX Runtime, not PyTorch: predict (CLI job, worker processes) runs in a
    process where ``import torch`` fails, and labels the photos as the run does."""
    photos = sample_photos(1)[:4]
    expected = HybridPoseClassifier.load(bundle).predict(photos)
    code = ("import sys\n"
            "class NoTorch:\n"  # any `import torch` (or torch.x, timm) now raises ImportError
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'timm'): raise ImportError('no ' + name + ' here')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from hybridpose.inference.api import predict; "
            "r = predict(sys.argv[2], sys.argv[1], sys.argv[3], show_progress=False, workers=1); "
            "print(r['status'], 'torch' in sys.modules)")
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / Path(p).name)
    out = tmp_path / "pred.csv"
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(folder), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("False"), proc.stdout
    got = pd.read_csv(out).assign(name=lambda f: f["path"].map(lambda p: Path(p).name)).set_index("name")
    want = expected.assign(name=expected["path"].map(lambda p: Path(p).name)).set_index("name")
    assert got.loc[want.index, "class"].tolist() == want["class"].tolist()


# --- a run's own ONNX graph: the default engine -------------------------------------------------------


def _fresh_run(copy_run) -> Path:
    """A copy of the tiny run without the graph that other tests may already have built into it."""
    run = copy_run()
    shutil.rmtree(run / "onnx", ignore_errors=True)
    return run


def _graphs(run: Path) -> list[Path]:
    return sorted((run / "onnx").iterdir()) if (run / "onnx").is_dir() else []


def _forbid_export(monkeypatch) -> None:
    from hybridpose.engines import onnx_graph

    def forbidden(*args, **kwargs):
        raise AssertionError("the graph was built again")

    monkeypatch.setattr(onnx_graph, "write_onnx", forbidden)


def test_a_run_predicts_by_default_with_its_graph_as_its_checkpoints_do(copy_run, monkeypatch):
    """`predict --model RUN` without --engine: onnxruntime on the run's graph, built on first use into
    RUN/onnx/<key>/ and then reused; the same labels, and probabilities within 1e-4, as --engine torch."""
    run = _fresh_run(copy_run)
    photos = sample_photos(2)
    checked = HybridPoseClassifier.load(run, engine="torch")
    assert not (run / "onnx").exists()  # the torch engine leaves the run folder alone
    fast = HybridPoseClassifier.load(run)
    assert type(fast.image_branch).__name__ == "OnnxImageBranch" and fast.missing_folds == []
    [graph] = _graphs(run)
    assert sorted(p.name for p in graph.iterdir()) == ["image_model.json", "image_model.onnx"]
    want, got = checked.predict(photos), fast.predict(photos)
    assert (want["status"] == "ok").sum() >= 12
    numbers = [c for c in want.columns if c == "confidence" or c.endswith("_prob")]
    labels = [c for c in want.columns if c not in numbers and c not in ("person_score",)]
    pd.testing.assert_frame_equal(got[labels], want[labels])
    assert np.abs(got[numbers].to_numpy(float) - want[numbers].to_numpy(float)).max() <= 1e-4 + 1e-9  # 4 decimals
    a, _ = checked.predict_proba(photos)
    b, _ = fast.predict_proba(photos)
    diff = max_difference(a, b)
    assert all(d <= 1e-4 for d in diff.values()), diff
    assert all(b[lv].std() > 0 for lv in b)  # real probabilities, not something trivially equal
    _forbid_export(monkeypatch)
    again = HybridPoseClassifier.load(run)  # reused, not built again
    assert type(again.image_branch).__name__ == "OnnxImageBranch" and _graphs(run) == [graph]
    moved = Path(shutil.move(str(run), str(run.parent / "moved")))  # keyed by content: a moved run keeps it
    assert type(HybridPoseClassifier.load(moved).image_branch).__name__ == "OnnxImageBranch"


def test_a_refitted_fold_gets_a_new_graph_and_the_stale_one_goes(copy_run):
    """Changed checkpoints (a resumed or refitted fold) are a new key: the graph is built again from them,
    and the old graph, and a temporary left by a build killed hours ago, are removed (a young one stays)."""
    import os
    import time

    import torch

    run = _fresh_run(copy_run)
    HybridPoseClassifier.load(run)
    [old] = _graphs(run)
    killed, building = run / "onnx" / ".0123456789abcdef.99-x.tmp", run / "onnx" / ".0123456789abcdef.98-y.tmp"
    killed.mkdir()
    building.mkdir()
    hours_ago = time.time() - 3 * 3600
    os.utime(killed, (hours_ago, hours_ago))
    path = run / "fold_2" / "stage3.pt"
    ckpt = torch.load(path, weights_only=True)
    for name, tensor in ckpt["state_dict"].items():
        if name.startswith("heads.") and name.endswith(".bias"):
            tensor += torch.linspace(-1, 1, len(tensor))  # fold 2 now ranks the classes otherwise
    torch.save(ckpt, path)
    fast = HybridPoseClassifier.load(run)
    [new] = [g for g in _graphs(run) if not g.name.startswith(".")]
    assert new != old and not old.exists() and not killed.exists() and building.exists()
    checked = HybridPoseClassifier.load(run, engine="torch")
    _, crops = checked.poses_and_crops(sample_photos(1))
    diff = max_difference(checked.image_branch.predict_level_proba(crops), fast.image_branch.predict_level_proba(crops))
    assert all(d <= 1e-4 for d in diff.values()), diff


def test_an_interrupted_build_leaves_nothing_and_the_next_use_builds_it(copy_run, monkeypatch):
    from hybridpose.engines import onnx_graph

    run = _fresh_run(copy_run)
    real = onnx_graph.write_onnx

    def interrupted(image, levels, path):
        path.write_bytes(b"half a graph")  # Ctrl-C while the exporter writes
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_graph, "write_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        HybridPoseClassifier.load(run)
    assert _graphs(run) == []  # no graph, no temporary
    monkeypatch.setattr(onnx_graph, "write_onnx", real)
    assert type(HybridPoseClassifier.load(run).image_branch).__name__ == "OnnxImageBranch"
    (graph,) = _graphs(run)
    (graph / "image_model.onnx").write_bytes(b"damaged since")  # ONNX Runtime cannot load it: built again, once
    assert type(HybridPoseClassifier.load(run).image_branch).__name__ == "OnnxImageBranch"
    assert (graph / "image_model.onnx").stat().st_size > 1000


@pytest.mark.parametrize("problem", ["unwritable", "not exportable"])
def test_where_the_graph_cannot_be_made_the_default_is_torch_and_onnxruntime_says_why(problem, copy_run, monkeypatch,
                                                                                        capsys):
    """A run folder the graph cannot be kept in (here RUN/onnx is a file: root may write anywhere) or networks
    the exporter cannot trace: the default predicts with the checkpoints, said in one line; --engine
    onnxruntime is a one-line error that says what to do."""
    from hybridpose.engines import onnx_graph

    run = _fresh_run(copy_run)
    if problem == "unwritable":
        (run / "onnx").write_text("")
    else:
        def untraceable(*args, **kwargs):
            raise RuntimeError("Unsupported: ONNX export of operator foo")

        monkeypatch.setattr(onnx_graph, "write_onnx", untraceable)
    capsys.readouterr()
    clf = HybridPoseClassifier.load(run)
    assert type(clf.image_branch).__name__ == "ImageBranch"
    said = capsys.readouterr().err
    assert "torch engine instead" in said and said.count("\n") == 1, said
    want = "cannot be written" if problem == "unwritable" else "could not be exported to ONNX.*Unsupported"
    with pytest.raises(RunError, match=f"{want}.*--engine torch"):
        HybridPoseClassifier.load(run, engine="onnxruntime")
    assert not [p for p in _graphs(run) if p.name.startswith(".")]  # no temporary left


def test_a_partial_run_gets_the_graph_of_the_folds_it_has(copy_run):
    run = _fresh_run(copy_run)
    (run / "fold_2" / "stage3.pt").unlink()
    with pytest.raises(RunError, match=r"folds \[2\] of 2 have no model.*--partial"):
        HybridPoseClassifier.load(run)
    assert _graphs(run) == []
    clf = HybridPoseClassifier.load(run, partial=True)
    assert type(clf.image_branch).__name__ == "OnnxImageBranch" and clf.missing_folds == [2]
    [graph] = _graphs(run)
    assert json.loads((graph / "image_model.json").read_text())["image_model"]["folds"] == [1]


def test_explain_keeps_the_checkpoints_for_its_cams(tiny_run, tmp_path, monkeypatch):
    """CAMs need the networks' gradients: explain on a run loads torch whatever the default."""
    from hybridpose.engines import ENGINES
    from hybridpose.explanation import explain

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sample_photos(1)[0], photos)
    monkeypatch.setitem(ENGINES, "onnxruntime", None)  # any use of it fails
    from hybridpose.explanation import cam

    drawn = []
    real = cam.cam_maps
    monkeypatch.setattr("hybridpose.explanation.photos.cam_maps", lambda *a, **k: drawn.append(1) or real(*a, **k))
    result = explain(photos, tiny_run, tmp_path / "out")
    assert result["photos"] == 1 and drawn


def test_of_two_concurrent_builds_the_later_keeps_the_first_ones_graph(copy_run):
    """A build that finds the graph put in place meanwhile (another process renamed first) keeps that one."""
    from hybridpose.engines import onnx_graph
    from hybridpose.run.folder import RunFolder

    run = _fresh_run(copy_run)
    folder = RunFolder(run)
    config = folder.read_config()
    first = onnx_graph.run_graph(folder, config)
    written = first.path.stat().st_mtime_ns
    later = onnx_graph._build(folder, config, False, first.path.parent)  # it started before the first was in place
    assert later == first and first.path.stat().st_mtime_ns == written
    assert _graphs(run) == [first.path.parent]  # its temporary is gone


# --- lighter networks: the int8 graph ---------------------------------------------------------------


def test_mcnemar_exact_on_known_counts():
    from hybridpose.export import mcnemar

    assert mcnemar(0, 0) == 1.0
    assert mcnemar(5, 0) == pytest.approx(2 / 32) and mcnemar(0, 5) == mcnemar(5, 0)
    assert mcnemar(3, 3) == 1.0
    assert mcnemar(10, 2) == pytest.approx(2 * sum(__import__("math").comb(12, k) for k in range(3)) / 4096)
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(10, 2), (1, 9), (7, 4), (40, 25), (0, 1)]:
        assert mcnemar(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9), (b, c)


@pytest.fixture(scope="module")
def int8_bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "bundle"
    export(tiny_run, out, int8=True)
    return out


def test_int8_bundle_says_so_and_predicts_the_float_bundles_labels(int8_bundle, bundle):
    """`export --int8`: a quantized graph (QDQ nodes, int8 weights, a smaller file), calibrated on the run's
    crops; manifest and config say int8; it loads and labels sample photos as the float bundle does."""
    import onnx

    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    precision = manifest["image_model"]["precision"]
    assert precision["precision"] == "int8" and precision["calibration_crops"] >= 8
    assert "crops_" in precision["calibration"]  # the run's own training crops
    assert json.loads((int8_bundle / "config.json").read_text())["bundle"]["precision"] == "int8"
    assert json.loads((bundle / "config.json").read_text())["bundle"]["precision"] == "float32"
    graph = onnx.load(str(int8_bundle / "image_model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)
    assert (int8_bundle / "image_model.onnx").stat().st_size < 0.5 * (bundle / "image_model.onnx").stat().st_size
    photos = sample_photos(1)
    want = HybridPoseClassifier.load(bundle).predict(photos)
    got = HybridPoseClassifier.load(int8_bundle).predict(photos)
    assert (want["status"] == "ok").sum() >= 6
    assert got["class"].tolist() == want["class"].tolist()
    a, _ = HybridPoseClassifier.load(bundle).predict_proba(photos)
    b, _ = HybridPoseClassifier.load(int8_bundle).predict_proba(photos)
    ok = np.isfinite(a["class"]).all(1)
    assert np.allclose(b["class"][ok].sum(1), 1, atol=1e-5)  # still probabilities (float softmax at the end)


def test_int8_without_crops_to_calibrate_on_is_one_error_before_any_file(copy_run, tmp_path):
    run = copy_run()
    for p in run.glob("crops_*.npz"):
        p.unlink()
    poses = pd.read_csv(run / "poses.csv")
    poses["path"] = [str(tmp_path / "gone" / f"{i}.jpg") for i in range(len(poses))]
    poses.to_csv(run / "poses.csv", index=False)
    with pytest.raises(RunError, match="no training crops to calibrate the int8 graph on"):
        export(run, tmp_path / "b", int8=True)
    assert not (tmp_path / "b").exists()


# --- a clip run's bundle ------------------------------------------------------------------------------

HELD_OUT = {"squat": "squat_correct_005.mp4", "jumpingjack": "jumpingjack_correct_002.mp4"}


def _held_out_clips(dest: Path) -> Path:
    """Clips no fold trained on, cut as tests/clipdata.py cuts the training ones (1.2 s, 320 px, 10 fps), and
    one as a folder of frames."""
    from PIL import Image

    from clipdata import SHARED
    from hybridpose.data.video import Sampling, VideoWriter, iter_frames

    for cls, name in HELD_OUT.items():
        frames = [f for f in iter_frames(SHARED / cls / name, Sampling(fps=10), max_side=320) if f.time < 1.2]
        (dest / cls).mkdir(parents=True)
        with VideoWriter(dest / cls / name, 10, frames[0].rgb.shape[1], frames[0].rgb.shape[0]) as w:
            for f in frames:
                w.write(f.rgb)
    folder = dest / "squat" / "squat_frames"
    folder.mkdir()
    for i, f in enumerate(iter_frames(SHARED / "squat" / "squat_correct_006.mp4", Sampling(n=6), max_side=240)):
        Image.fromarray(f.rgb).save(folder / f"frame{i + 1}.jpg", quality=80)
    return dest


@pytest.fixture(scope="module")
def clip_export(clip_data, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny clip run (as test_clips fits it), its bundle, and held-out clips."""
    from hybridpose.train.fit import fit

    tmp = tmp_path_factory.mktemp("clip_export")
    fit(clip_data, tmp / "run", folds=2, preset="tiny", show_progress=False, clips={"fps": 5})
    manifest = export(tmp / "run", tmp / "bundle")
    assert manifest["kind"] == "clips" and set(manifest["branches"]) == {"image", "clip_keypoint", "sequence", "trajectory"}
    return tmp / "run", tmp / "bundle", _held_out_clips(tmp / "held_out")


@pytest.mark.slow
def test_an_exported_clip_run_predicts_held_out_clips_as_the_run(clip_export, tmp_path):
    """The bundle of a clip run (image graph, clip keypoint XGBoost, the sequence branch as ONNX) labels clips
    it never saw, videos and a frame folder, as the run's checkpoints do: the same labels, probabilities within
    1e-4 for every branch; `--per-frame` from the bundle gives the run's frame table."""
    from hybridpose.inference.clips import ClipPredictor, predict_clips

    run, bundle, clips = clip_export
    for name in ("clip_keypoint_model.json", "sequence_model.json", "sequence_model.pt", "sequence_model.onnx",
                 "trajectory_model.json", "fusion.json", "config.json", "image_model.onnx"):
        assert (bundle / name).exists(), name
    want, got = ClipPredictor(run, engine="torch"), ClipPredictor(bundle)
    assert got.clf.branches["sequence"].session_ is not None and want.clf.branches["sequence"].session_ is None
    from hybridpose.data.clips import list_samples

    samples = list_samples(clips, frames_folder=True)
    assert sorted(s.kind for s in samples) == ["frames", "video", "video"]
    for s in samples:
        a, b = want.predict_clip(s), got.predict_clip(s)
        assert a.status == b.status == "ok", (s.path, a.reason, b.reason)
        assert {k: v for k, v in b.row.items() if not k.endswith("_prob") and k != "confidence"} == \
               {k: v for k, v in a.row.items() if not k.endswith("_prob") and k != "confidence"}
        for branch in ("image", "clip_keypoint", "sequence", "trajectory", "fused"):
            diff = max_difference(a.probs[branch], b.probs[branch])
            assert all(d <= 1e-4 for d in diff.values()), (s.path, branch, diff)
        assert np.nanstd(b.probs["sequence"]["class"]) > 0 or b.probs["sequence"]["class"].shape[1] == 1
    for model, name in ((run, "run"), (bundle, "bundle")):
        predict_clips(clips, model, tmp_path / f"{name}.csv", per_frame=tmp_path / f"{name}_frames.csv",
                      show_progress=False, engine="torch" if model == run else None)
    frames = {n: pd.read_csv(tmp_path / f"{n}_frames.csv", keep_default_na=False) for n in ("run", "bundle")}
    assert len(frames["bundle"]) >= 18 and (frames["bundle"]["motion_label"] != "").any()
    labels = ["clip", "frame", "status", "label", "smoothed_label", "motion_label"]
    pd.testing.assert_frame_equal(frames["bundle"][labels], frames["run"][labels])
    rows = {n: pd.read_csv(tmp_path / f"{n}.csv", keep_default_na=False) for n in ("run", "bundle")}
    assert rows["bundle"]["class"].tolist() == rows["run"]["class"].tolist()


@pytest.mark.slow
def test_a_clip_bundle_predicts_where_pytorch_cannot_be_imported(clip_export, tmp_path):
    """Videos from a clip bundle need ONNX Runtime only: the sequence branch runs its ONNX graph."""
    run, bundle, clips = clip_export
    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'timm'): raise ImportError('no ' + name + ' here')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from hybridpose.inference.clips import predict_clips\n"
            "r = predict_clips(sys.argv[2], sys.argv[1], sys.argv[3], show_progress=False)\n"
            "print(r['status'], 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(clips), str(tmp_path / "p.csv")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("False"), proc.stdout
    from hybridpose.inference.clips import predict_clips

    predict_clips(clips, run, tmp_path / "want.csv", show_progress=False)
    got, want = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "want.csv")
    assert got["class"].tolist() == want["class"].tolist() and len(got) == 3


def test_the_sequence_branchs_graph_gives_its_networks_probabilities(tmp_path):
    """A bundle's sequence branch runs its seed networks as one ONNX graph: the same probabilities as the
    weights (a clip without a skeleton still abstains), and a damaged graph is one error."""
    from hybridpose.branches.sequence import SequenceClassifier
    from test_sequence import DIRECTIONS, SK, swipe

    rng = np.random.default_rng(1)
    hand = rng.normal(0, 30, (SK.n, 2))
    X = [swipe(rng, d, int(rng.integers(10, 20)), hand, missing=1) for d in DIRECTIONS for _ in range(3)]
    y = [d for d in DIRECTIONS for _ in range(3)]
    model = SequenceClassifier(skeleton="hand", epochs=8, seeds=2).fit(X, y)
    model.save(tmp_path / "sequence_model.json")
    graph = model.write_onnx(tmp_path / "sequence_model.json")
    back = SequenceClassifier.load(tmp_path / "sequence_model.json")
    assert graph.name == "sequence_model.onnx" and back.session_ is not None and back.models_ == []
    clips = [*X[:5], np.full((6, SK.n, 4), np.nan)]
    want, got = model.predict_proba(clips), back.predict_proba(clips)
    assert np.isnan(got[-1]).all() and np.abs(got[:-1] - want[:-1]).max() <= 1e-5 and want[:-1].std() > 0
    assert np.nanmax(np.abs(back.running_proba(X[0]) - model.running_proba(X[0]))) <= 1e-5
    graph.write_bytes(b"not a graph")
    with pytest.raises(RunError, match="sequence_model.onnx: ONNX Runtime cannot load it"):
        SequenceClassifier.load(tmp_path / "sequence_model.json")
