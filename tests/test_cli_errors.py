"""No traceback, ever, and errors before work: bad option values, unwritable outputs, bad data.

Every case asserts the exit code, that no traceback is shown, that the output is one short
error line naming the option or file, and (for output cases) that files written earlier are
byte-identical afterwards. The work functions are replaced by ones that fail the test, so an
error that came only after the work started is caught too.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import hybridpose
from test_cli import _lines, cli, cli_process

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
UNWRITABLE = "/proc/hybridpose_test/x"  # even root cannot create anything under /proc


def one_line_error(code: int, text: str, *needles: str) -> str:
    """The one error line, after checking exit 2, no traceback and that the line names ``needles``."""
    assert code == 2, text
    assert "Traceback" not in text, text
    lines = _lines(text)
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    for needle in needles:
        assert needle in lines[0], (needle, text)
    return lines[0]


def digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    out = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return out


def tiny_data(root: Path, counts: dict[str, int], hierarchy: str | None = None) -> Path:
    """A small labelled folder from data/sample: ``counts`` photos of each class."""
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for src in sorted((SAMPLE / cls).glob("*.jpg"))[:n]:
            shutil.copy(src, root / cls / src.name)
    if hierarchy is not None:
        (root / "hierarchy.csv").write_text(hierarchy)
    return root


THREE = {"Vrukshasana": 4, "Triangle": 4, "BaddhaKonasana": 4}


@pytest.fixture
def data(tmp_path) -> Path:
    return tiny_data(tmp_path / "data", THREE)


# --- item 2: bad option values, checked at entry -------------------------------------------------

FIT_OPTIONS = [  # (options, what the error line names)
    (["--preset", "bogus"], ["--preset", "quick", "full", "tiny"]),
    (["--epochs", "abc"], ["--epochs", "8,6,4"]),
    (["--epochs", "1,2"], ["--epochs", "three numbers"]),
    (["--epochs", "8,0,4"], ["--epochs", "at least 1"]),
    (["--epochs", "8,6,-4"], ["--epochs"]),
    (["--batch-size", "0"], ["--batch-size", "at least 2"]),
    (["--batch-size", "1"], ["--batch-size", "at least 2"]),
    (["--batch-size", "abc"], ["--batch-size"]),
    (["--input-size", "8"], ["--input-size", "32"]),
    (["--cam-method", "bogus"], ["--cam-method", "hirescam", "xgradcam", "gradcam"]),
    (["--device", "tpu"], ["--device", "auto", "cpu", "cuda"]),
    (["--folds", "1"], ["--folds", "2"]),
    (["--folds", "0"], ["--folds"]),
    (["--workers", "0"], ["--workers"]),
    (["--skeleton", "bogus"], ["--skeleton", "body"]),
    (["--seed", "-1"], ["--seed"]),
    (["--cam-weight", "-1"], ["--cam-weight"]),
    (["--backbone", "no_such_net"], ["--backbone", "timm"]),
    (["--weights", "missing.pt"], ["--weights", "not found"]),
]


@pytest.mark.parametrize("options,needles", FIT_OPTIONS, ids=[" ".join(o) for o, _ in FIT_OPTIONS])
def test_fit_bad_option_values(monkeypatch, capsys, no_work, data, tmp_path, options, needles):
    out = tmp_path / "run"
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--out", out, *options), *needles)
    assert not out.exists()


def test_fit_cuda_without_a_gpu(monkeypatch, capsys, no_work, data, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    line = one_line_error(*cli(monkeypatch, capsys, "fit", data, "--device", "cuda", "--out", out))
    assert line == "error: --device cuda: no CUDA GPU found; use --device cpu or auto."
    assert not out.exists()


OTHER_OPTIONS = [  # (command line after the command name, with RUN for the tiny run; what the error names)
    (["extract", "DATA", "--out", "OUT", "--skeleton", "paw"], ["--skeleton", "body", "hand"]),
    (["extract", "DATA", "--out", "OUT", "--hands", "2"], ["--hands", "--skeleton hand"]),
    (["extract", "DATA", "--out", "OUT", "--hands", "3"], ["--hands"]),
    (["extract", "DATA", "--out", "OUT", "--workers", "0"], ["--workers"]),
    (["predict", "DATA", "-m", "RUN", "--out", "OUT/p.csv", "--format", "xml"], ["--format", "csv", "json"]),
    (["predict", "DATA", "-m", "RUN", "--out", "OUT/p.csv", "--batch-size", "0"], ["--batch-size"]),
    (["predict", "DATA", "-m", "RUN", "--out", "OUT/p.csv", "--rules", "r.yaml", "--no-rules"], ["--no-rules"]),
    (["explain", "DATA", "-m", "RUN", "--out", "OUT", "--method", "bogus"], ["--method", "hirescam", "gradcam"]),
    (["explain", "DATA", "-m", "RUN", "--out", "OUT", "--limit", "0"], ["--limit"]),
    (["calibrate", "RUN", "--out", "OUT", "--min-fired", "0"], ["--min-fired"]),
    (["calibrate", "RUN", "--out", "OUT", "--min-gain", "2"], ["--min-gain"]),
    (["calibrate", "RUN", "--out", "OUT", "--alpha", "1.5"], ["--alpha"]),
    (["fitt", "DATA"], ["No such command", "fit"]),
    (["fit", "DATA", "--bogus"], ["--bogus"]),
    (["extract", "DATA"], ["--out"]),
]


@pytest.mark.parametrize("args,needles", OTHER_OPTIONS, ids=[" ".join(a) for a, _ in OTHER_OPTIONS])
def test_other_bad_option_values(monkeypatch, capsys, no_work, data, tmp_path, args, needles):
    run = tmp_path / "run"  # never read: the option fails first
    out = tmp_path / "out"
    args = [a.replace("DATA", str(data)).replace("RUN", str(run)).replace("OUT", str(out)) for a in args]
    one_line_error(*cli(monkeypatch, capsys, *args), *needles)
    assert not out.exists()


def test_usage_error_in_a_real_process(tmp_path):
    """The console script as a user runs it: typer's usage errors are one line too."""
    code, text = cli_process("fit", SAMPLE, "--preset", "bogus", "--out", tmp_path / "run")
    one_line_error(code, text, "--preset", "quick")
    assert not (tmp_path / "run").exists()


# --- item 3: outputs checked before any work -----------------------------------------------------


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "existing.txt"
    path.write_text("earlier output\n")
    return path


@pytest.mark.parametrize("command", ["extract", "fit", "explain"])
@pytest.mark.parametrize("target", ["existing_file", "unwritable", "under_a_file"])
def test_output_folder_that_cannot_be_written(monkeypatch, capsys, no_work, data, a_file, tiny_run, command, target):
    out = {"existing_file": a_file, "unwritable": Path(UNWRITABLE), "under_a_file": a_file / "sub"}[target]
    before = digest(a_file, tiny_run)
    args = {"extract": ["extract", data], "fit": ["fit", data, "--preset", "tiny", "--folds", "2"],
            "explain": ["explain", data, "-m", tiny_run]}[command]
    line = one_line_error(*cli(monkeypatch, capsys, *args, "--out", out), "--out", str(out))
    assert {"existing_file": "is a file", "unwritable": "cannot write", "under_a_file": "is a file"}[target] in line
    assert digest(a_file, tiny_run) == before


@pytest.mark.parametrize("target", ["folder", "unwritable", "under_a_file"])
def test_predict_output_that_cannot_be_written(monkeypatch, capsys, no_work, data, a_file, tiny_run, tmp_path, target):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    out = {"folder": folder, "unwritable": Path(UNWRITABLE + ".csv"), "under_a_file": a_file / "p.csv"}[target]
    before = digest(a_file, tiny_run, folder)
    line = one_line_error(*cli(monkeypatch, capsys, "predict", data, "-m", tiny_run, "--out", out), "--out", str(out))
    if target == "folder":
        assert "is a folder" in line and str(folder / "predictions.csv") in line
    assert digest(a_file, tiny_run, folder) == before
    assert not any(folder.iterdir())


@pytest.mark.parametrize("out", [UNWRITABLE + ".yaml", UNWRITABLE, "FILE", "FILE/rules.yaml"])
def test_calibrate_output_that_cannot_be_written_leaves_the_run_alone(monkeypatch, capsys, no_work, copy_run, a_file, out):
    run = copy_run()
    out = out.replace("FILE", str(a_file))
    before = digest(run, a_file)
    one_line_error(*cli(monkeypatch, capsys, "calibrate", run, "--out", out), "--out")
    assert digest(run, a_file) == before


@pytest.mark.parametrize("target", ["existing_file", "unwritable"])
def test_evaluate_output_that_cannot_be_written(monkeypatch, capsys, no_work, tiny_run, a_file, target):
    out = {"existing_file": a_file, "unwritable": Path(UNWRITABLE)}[target]
    before = digest(tiny_run, a_file)
    one_line_error(*cli(monkeypatch, capsys, "evaluate", tiny_run, "--out", out), "--out", str(out))
    assert digest(tiny_run, a_file) == before


@pytest.mark.parametrize("option", ["--data", "--images"])
def test_evaluate_run_refuses_options_it_would_ignore(monkeypatch, capsys, no_work, tiny_run, option):
    before = digest(tiny_run)
    one_line_error(*cli(monkeypatch, capsys, "evaluate", tiny_run, option, SAMPLE), "--data/--images", "--model")
    assert digest(tiny_run) == before


@pytest.mark.parametrize("command", ["extract", "fit", "predict"])
def test_cache_that_is_a_file(monkeypatch, capsys, no_work, data, a_file, tiny_run, tmp_path, command):
    args = {"extract": ["extract", data, "--out", tmp_path / "e"],
            "fit": ["fit", data, "--out", tmp_path / "e", "--preset", "tiny", "--folds", "2"],
            "predict": ["predict", data, "-m", tiny_run, "--out", tmp_path / "e" / "p.csv"]}[command]
    before = digest(a_file)
    one_line_error(*cli(monkeypatch, capsys, *args, "--cache", a_file), "--cache", "is a file")
    assert digest(a_file) == before and not (tmp_path / "e").exists()


def test_unwritable_output_in_a_real_process(a_file, tmp_path):
    code, text = cli_process("extract", SAMPLE / "Vrukshasana" / "v63.jpg", "--out", a_file)
    one_line_error(code, text, "--out", "is a file")
    assert a_file.read_text() == "earlier output\n"


# --- item 4: a class with too few photos: checked before anything is written ----------------------


def test_class_with_one_photo_is_refused_before_writing(monkeypatch, capsys, tmp_path):
    data = tiny_data(tmp_path / "data", {**THREE, "Triangle": 1})
    out = tmp_path / "run"
    line = one_line_error(*cli(monkeypatch, capsys, "fit", data, "--folds", "2", "--out", out, "--preset", "tiny"),
                          "'Triangle' (1)", "add photos")
    assert "--folds" not in line.split(";", 1)[1]  # no advice to use fewer folds: 1 fold is no cross-validation
    assert not (out / "config.json").exists() and not (out / "poses.csv").exists()


def test_fewer_photos_than_folds_suggests_a_fold_count(monkeypatch, capsys, data, tmp_path):
    out = tmp_path / "run"
    line = one_line_error(*cli(monkeypatch, capsys, "fit", data, "--folds", "5", "--out", out), "--folds 4")
    assert "--folds 5" not in line and not (out / "config.json").exists()


@pytest.mark.slow
def test_refused_run_does_not_block_the_fixed_rerun(monkeypatch, capsys, sample_poses, tmp_path):
    """Refused for a class of one photo; the same command after adding photos trains (poses from the cache)."""
    data = tiny_data(tmp_path / "data", {**THREE, "Triangle": 1})
    out = tmp_path / "run"
    args = ("fit", data, "--folds", "2", "--preset", "tiny", "--out", out)
    one_line_error(*cli(monkeypatch, capsys, *args), "'Triangle' (1)")
    for src in sorted((SAMPLE / "Triangle").glob("*.jpg"))[1:4]:
        shutil.copy(src, data / "Triangle" / src.name)
    code, text = cli(monkeypatch, capsys, *args)
    assert code == 0 and "Traceback" not in text, text
    assert json.loads((out / "config.json").read_text())["n_images"] == 12
    assert (out / "oof_predictions.csv").is_file()


# --- item 5: clearer messages -----------------------------------------------------------------------


def test_semicolon_hierarchy_is_read(monkeypatch, capsys, tmp_path):
    """A `;`-separated hierarchy (spreadsheet export) is read: the data check gets past it to the fold count."""
    data = tiny_data(tmp_path / "data", THREE, "class;group\nVrukshasana;standing\nTriangle;standing\nBaddhaKonasana;sitting\n")
    out = tmp_path / "run"
    line = one_line_error(*cli(monkeypatch, capsys, "fit", data, "--folds", "5", "--out", out), "--folds 4")
    assert "hierarchy" not in line and not out.exists()


def test_hierarchy_with_an_unknown_separator_says_so(monkeypatch, capsys, tmp_path):
    data = tiny_data(tmp_path / "data", THREE, "class|group\nVrukshasana|standing\nTriangle|standing\nBaddhaKonasana|sitting\n")
    out = tmp_path / "run"
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--out", out), str(data / "hierarchy.csv"), "commas")
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "half_run", "missing"])
def test_evaluate_a_folder_that_is_not_a_run(monkeypatch, capsys, tmp_path, case):
    target = tmp_path / "not_a_run"
    if case != "missing":
        target.mkdir()
    if case == "half_run":
        (target / "poses.csv").write_text("path,status\n")
    line = one_line_error(*cli(monkeypatch, capsys, "evaluate", target), str(target))
    assert ("no such file" if case == "missing" else "not a run directory (no config.json)") in line
    assert not (target / "evaluation").exists()


def test_evaluate_a_data_set_without_model_asks_for_it(monkeypatch, capsys, data):
    one_line_error(*cli(monkeypatch, capsys, "evaluate", data), "--model RUN")


def test_truncated_checkpoint_names_the_fit_command(monkeypatch, capsys, copy_run, tmp_path):
    run = copy_run()
    ckpt = run / "fold_1" / "stage3.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    out = tmp_path / "p.csv"
    line = one_line_error(*cli(monkeypatch, capsys, "predict", SAMPLE / "Vrukshasana" / "v63.jpg", "-m", run, "-o", out),
                          str(ckpt), f"hybridpose fit {SAMPLE} --out {run} --folds 2 --preset tiny")
    assert "same command" not in line and not out.exists()


@pytest.mark.parametrize("content,needles", [
    ("left,right\nVrukshasana\n", [":2", "left,right"]),
    ("left,right\nVrukshasana,Nope\n", [":2", "'Nope'"]),
    ("left,right\nVrukshasana,Triangle\nTriangle,BaddhaKonasana\n", [":3", "two flip pairs"]),
], ids=["one_column", "unknown_class", "class_in_two_pairs"])
def test_bad_flip_pairs_file_is_named(monkeypatch, capsys, data, tmp_path, content, needles):
    (data / "flip_pairs.csv").write_text(content)
    out = tmp_path / "run"
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--out", out), str(data / "flip_pairs.csv"), *needles)
    assert not out.exists()


def test_bad_flip_pairs_option_is_named(monkeypatch, capsys, data, tmp_path):
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--out", tmp_path / "run", "--flip-pairs", "Vrukshasana-Triangle"),
                   "--flip-pairs", "LEFT_CLASS:RIGHT_CLASS")


@pytest.fixture
def yoga82_list(tmp_path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    lines = []
    for i, (cls, (c6, c20, c82)) in enumerate({"Vrukshasana": (0, 1, 2), "Triangle": (0, 2, 3)}.items()):
        for src in sorted((SAMPLE / cls).glob("*.jpg"))[:3]:
            (images / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, images / cls / src.name)
            lines.append(f"{cls}/{src.name},{c6},{c20},{c82}")
    (tmp_path / "yoga_train.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "yoga_train.txt", images


def test_hierarchy_with_a_yoga82_list_is_refused(monkeypatch, capsys, yoga82_list, data, tmp_path):
    list_file, images = yoga82_list
    hierarchy = tmp_path / "h.csv"
    hierarchy.write_text("class,group\nVrukshasana,standing\nTriangle,standing\n")
    out = tmp_path / "run"
    one_line_error(*cli(monkeypatch, capsys, "fit", list_file, "--images", images, "--hierarchy", hierarchy, "--out", out),
                   "--hierarchy", "Yoga-82", "class82")
    assert not out.exists()


def test_missing_hierarchy_file_is_an_error(monkeypatch, capsys, data, yoga82_list, tmp_path):
    list_file, images = yoga82_list
    for target in (["fit", data], ["fit", list_file, "--images", images]):
        one_line_error(*cli(monkeypatch, capsys, *target, "--hierarchy", tmp_path / "nope.csv", "--out", tmp_path / "run"),
                       "--hierarchy", "not found")
    assert not (tmp_path / "run").exists()


def test_images_option_with_an_image_folder_is_refused(monkeypatch, capsys, data, tmp_path):
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--images", tmp_path, "--out", tmp_path / "run"),
                   "--images", "Yoga-82")


def test_weights_with_pretrained_is_refused(monkeypatch, capsys, data, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not used")
    one_line_error(*cli(monkeypatch, capsys, "fit", data, "--weights", weights, "--pretrained", "--out", tmp_path / "run"),
                   "--weights", "--pretrained")
    assert not (tmp_path / "run").exists()


# --- item 11: --version, predictions.jsonl -------------------------------------------------------


def test_version(monkeypatch, capsys):
    code, text = cli(monkeypatch, capsys, "--version")
    assert code == 0 and _lines(text) == [f"hybridpose {hybridpose.__version__}"]


@pytest.mark.parametrize("fmt,name", [("json", "predictions.jsonl"), ("csv", "predictions.csv")])
def test_predict_default_output_follows_the_format(monkeypatch, capsys, tiny_run, tmp_path, fmt, name):
    monkeypatch.chdir(tmp_path)
    code, text = cli(monkeypatch, capsys, "predict", SAMPLE / "Vrukshasana" / "v63.jpg", "-m", tiny_run, "--format", fmt)
    assert code == 0 and "Traceback" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    first = (tmp_path / name).read_text().splitlines()[0]
    assert json.loads(first)["status"] if fmt == "json" else first.startswith("path,")


# --- the checks behind the options, for library users too -------------------------------------------


def test_choices_have_one_source():
    from hybridpose.skeletons import available
    from hybridpose.train.cam import CAM_METHODS
    from hybridpose.train.config import PRESETS, CamMethod, Preset

    assert [p.value for p in Preset] == list(PRESETS)
    assert {m.value for m in CamMethod} == set(CAM_METHODS)
    from hybridpose.defaults import CAM_METHODS as NAMED
    from hybridpose.explanation.cam import grad_cam_class

    assert set(NAMED) == set(CAM_METHODS) and all(grad_cam_class(m) for m in NAMED)  # explain draws every one
    assert "body" in available()


@pytest.mark.parametrize("overrides,needle", [
    ({"cam_method": "bogus"}, "--cam-method"), ({"batch_size": 1}, "--batch-size"), ({"device": "tpu"}, "--device"),
])
def test_library_fit_checks_options_before_writing(no_work, data, tmp_path, overrides, needle):
    from hybridpose.errors import HybridPoseError
    from hybridpose.train.fit import fit

    with pytest.raises(HybridPoseError, match=needle) as info:
        fit(data, tmp_path / "run", folds=2, preset="tiny", show_progress=False, **overrides)
    assert isinstance(info.value, ValueError)  # ConfigError: also a ValueError, as before
    assert not (tmp_path / "run").exists()
