"""Shared fixtures: an isolated pose cache, the poses table of data/sample and one tiny fitted run.

tests/ is not a package: helpers live in corpus.py (``from corpus import ...``) and here as fixtures.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLE = ROOT / "data" / "sample"

if str(TESTS) not in sys.path:  # `from corpus import ...` also when pytest runs from elsewhere
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory):
    """Every session gets its own pose cache; no progress bars. Subprocesses inherit both."""
    cache = tmp_path_factory.mktemp("pose_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDPOSE_CACHE", str(cache))
        mp.setenv("HYBRIDPOSE_NO_PROGRESS", "1")
        mp.setenv("GLOG_minloglevel", "2")
        mp.delenv("HYBRIDPOSE_TRACKING_URI", raising=False)  # a developer's own store stays out of the tests
        yield cache


@pytest.fixture(scope="session")
def pose_cache_dir(_isolated_env) -> Path:
    return _isolated_env


@pytest.fixture(scope="session")
def sample_dataset():
    from hybridpose.data.datasets import load_dataset

    return load_dataset(SAMPLE)


@pytest.fixture(scope="session")
def sample_poses(sample_dataset):
    """The poses table of the 80 photos of data/sample (MediaPipe runs once per session)."""
    from hybridpose.pose.frontend import extract

    return extract(sample_dataset.paths, show_progress=False)


@pytest.fixture(scope="session")
def clip_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny clips cut from ../shared/data/exercise_clips (tests/clipdata.py); skips where that is absent."""
    from clipdata import make_clips

    folder = make_clips(tmp_path_factory.mktemp("clips"))
    if folder is None:
        pytest.skip("../shared/data/exercise_clips is not here (the repository holds none of its clips)")
    return folder


@pytest.fixture(scope="session")
def clip_run(tmp_path_factory: pytest.TempPathFactory, clip_data: Path):
    """A tiny clip run fitted on clip_data (2 folds, preset tiny, 5 frames per second), once per session."""
    from hybridpose.train.fit import fit

    run = tmp_path_factory.mktemp("clip_run") / "run"
    summary = fit(clip_data, run, folds=2, preset="tiny", show_progress=False, clips={"fps": 5})
    return run, summary


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The bad-input corpus (tests/corpus.py) and the status each file should get."""
    from corpus import make_bad_corpus

    directory = tmp_path_factory.mktemp("bad_corpus")
    return directory, make_bad_corpus(directory)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, sample_poses) -> Path:
    """One tiny run on data/sample (2 folds, 64 px, 1 epoch per stage), fitted once per session.

    Tests must not change it; copy it first (see copy_run) when a test writes into the run. (Predicting it with
    the default engine adds its ONNX graph, RUN/onnx/, once: what every later load and copy reuses.)
    ``sample_poses`` comes first so the fit reads its poses from the session cache.
    """
    from hybridpose.train.fit import fit

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    fit(SAMPLE, run, folds=2, preset="tiny", show_progress=False)
    return run


@pytest.fixture
def copy_run(tiny_run, tmp_path):
    """A private copy of the tiny run for tests that write into it."""
    import shutil

    def make() -> Path:
        dest = tmp_path / "run_copy"
        shutil.copytree(tiny_run, dest)
        return dest

    return make


def standing_keypoints(width: float = 400.0, height: float = 600.0, cx: float = 200.0) -> np.ndarray:
    """A synthetic upright person (33 x 4, pixels, all visible), arms slightly out, feet apart."""
    from hybridpose.skeletons.body import KEYPOINT_NAMES

    s = height / 600.0
    spots = {  # (x offset from centre, y) in a 600 px tall frame; the person's left is image right
        "nose": (0, 80), "left_eye_inner": (6, 72), "left_eye": (10, 72), "left_eye_outer": (14, 72),
        "right_eye_inner": (-6, 72), "right_eye": (-10, 72), "right_eye_outer": (-14, 72),
        "left_ear": (22, 78), "right_ear": (-22, 78), "mouth_left": (8, 92), "mouth_right": (-8, 92),
        "left_shoulder": (45, 140), "right_shoulder": (-45, 140), "left_elbow": (70, 220),
        "right_elbow": (-68, 222), "left_wrist": (85, 300), "right_wrist": (-80, 296),
        "left_pinky": (90, 318), "right_pinky": (-86, 314), "left_index": (88, 322),
        "right_index": (-84, 318), "left_thumb": (80, 312), "right_thumb": (-76, 308),
        "left_hip": (30, 320), "right_hip": (-30, 320), "left_knee": (38, 430), "right_knee": (-34, 432),
        "left_ankle": (44, 540), "right_ankle": (-40, 538), "left_heel": (40, 555), "right_heel": (-36, 553),
        "left_foot_index": (62, 560), "right_foot_index": (-58, 558),
    }
    kp = np.zeros((len(KEYPOINT_NAMES), 4))
    for i, name in enumerate(KEYPOINT_NAMES):
        dx, y = spots[name]
        kp[i] = (cx + dx * s * width / 400.0, y * s, -0.01 * i, 0.95)
    return kp


@pytest.fixture
def standing():
    """Factory for a synthetic upright skeleton (see standing_keypoints)."""
    return standing_keypoints


@pytest.fixture
def no_work(monkeypatch):
    """Pose extraction, model loading, calibration and evaluation fail the test if they start."""
    import hybridpose.evaluation.metrics
    import hybridpose.explanation.photos
    import hybridpose.inference.classifier
    import hybridpose.pose.extraction
    import hybridpose.rules.runs
    import hybridpose.train.fit

    def forbidden(*args, **kwargs):
        raise AssertionError("the work started before the error")

    monkeypatch.setattr(hybridpose.pose.extraction, "extract", forbidden)
    monkeypatch.setattr(hybridpose.train.fit, "extract", forbidden)
    monkeypatch.setattr(hybridpose.inference.classifier.HybridPoseClassifier, "load", forbidden)
    monkeypatch.setattr(hybridpose.explanation.photos.HybridPoseClassifier, "load", forbidden)
    monkeypatch.setattr(hybridpose.rules.runs, "calibrate_rules", forbidden)
    monkeypatch.setattr(hybridpose.evaluation.metrics, "evaluate_frame", forbidden)
