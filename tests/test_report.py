"""evaluate_frame + write_review + write_report on a synthetic frame; the page renders."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hybridpose.evaluation.metrics import evaluate_frame
from hybridpose.evaluation.report import write_report
from hybridpose.evaluation.review import duplicate_groups, top_losses, write_review
from hybridpose.viz.plots import contact_sheet

try:
    from test_metrics import make_oof_frame
except ImportError:  # tests/ collected as a package
    from tests.test_metrics import make_oof_frame

TITLE = "Synthetic poses"


def _folds(frame: pd.DataFrame) -> pd.DataFrame:
    folds = pd.DataFrame(
        {"path": frame["path"], "label": frame["true_pose"], "group": [f"g{i}" for i in range(len(frame))], "fold": frame["fold"]}
    )
    folds.loc[[0, 1], "group"] = "dup-mixed"  # first two photos: near-duplicates, labels forced apart
    folds.loc[0, "label"], folds.loc[1, "label"] = "a1", "b2"
    folds.loc[[2, 3], "group"] = "dup-same"
    folds.loc[3, "label"] = folds.loc[2, "label"]
    return folds


def _write_images(root: Path, paths: list[str]) -> None:
    rng = np.random.default_rng(1)
    for k, rel in enumerate(paths[::2]):  # every other photo missing: grey tiles
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(60 + 10 * (k % 3), 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(target)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    frame, h = make_oof_frame()
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("eval")
    _write_images(root, list(frame["path"]))
    summary = evaluate_frame(frame, h, out, title=TITLE)
    review = write_review(frame, _folds(frame), h, out, image_root=root)
    contact_sheet([(root / frame["path"][0], ["extra figure"])], out / "tsne.png", cols=1, thumb=120)
    summary["captions"] = {"tsne.png": "t-SNE of image embeddings"}
    report = write_report(out, summary, title=TITLE)
    return frame, h, out, summary, review, report


def test_evaluate_frame_writes_files(evaluated):
    frame, h, out, summary, _, _ = evaluated
    expected = ["metrics.csv", "metrics.json", "ablation.csv"]
    expected += [f"per_class_{lv}.csv" for lv in h.levels] + [f"confusion_{lv}.png" for lv in h.levels]
    for name in expected:
        assert (out / name).is_file(), name
    assert not (out / "yoga82_table.csv").exists()
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns[:8]) == ["branch", "level", "n", "n_abstained", "top1", "top1_all", "top5", "macro_f1"]
    assert len(metrics) == 4 * len(h.levels)
    assert summary["best_branch"] == "rules"
    per_class = pd.read_csv(out / "per_class_pose.csv")
    assert per_class["support"].sum() == len(frame)


def test_metrics_json_is_strict_json(evaluated):
    out = evaluated[2]

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    data = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert data["headline"]["group"]["top5"] is None  # rules have no top-5


def test_yoga82_table_written_for_yoga82_levels(tmp_path):
    frame, h = make_oof_frame(levels=["class82", "class20", "class6"], n=60)
    summary = evaluate_frame(frame, h, tmp_path, title="Yoga-82")
    table = pd.read_csv(tmp_path / "yoga82_table.csv")
    assert list(table.columns)[1:3] == ["2 classes top-1", "2 classes top-5"]
    assert summary["yoga82"] is not None


def test_top_losses_rank_every_photo_by_loss(evaluated):
    frame, h = evaluated[:2]
    losses = top_losses(frame, h, "fused", n=len(frame))
    assert list(losses.columns) == ["path", "true", "predicted", "correct", "p_true", "p_pred", "loss"]
    assert len(losses) == len(frame)
    assert (losses["correct"] == (losses["true"] == losses["predicted"])).all()
    wrong_first = losses["correct"].to_numpy()
    # a wrong photo never has a higher true-class probability than a right one ranked above it here
    assert losses.loc[~wrong_first, "loss"].min() >= losses.loc[wrong_first, "loss"].min() or wrong_first.all()
    losses = losses.head(10)
    assert losses["loss"].is_monotonic_decreasing
    np.testing.assert_allclose(losses["loss"], -np.log(losses["p_true"]))
    row = frame.set_index("path").loc[losses["path"][0]]
    assert losses["p_true"][0] == pytest.approx(row[f"fused:pose:{losses['true'][0]}"])
    # nothing wrong ranks above the first
    wrong = frame[frame["pred_fused_pose"] != frame["true_pose"]]
    p_true = [r[f"fused:pose:{r['true_pose']}"] for _, r in wrong.iterrows()]
    assert losses["p_true"][0] == pytest.approx(min(p_true))


def test_duplicate_groups_finds_mixed_labels(evaluated):
    frame = evaluated[0]
    dups = duplicate_groups(_folds(frame))
    assert list(dups.columns) == ["group", "path", "label"]
    assert set(dups["group"]) == {"dup-mixed"}
    assert sorted(dups["label"]) == ["a1", "b2"]


def test_review_files(evaluated):
    out, review = evaluated[2], evaluated[4]
    for name in ("top_losses.csv", "top_losses.png", "duplicates_across_classes.csv"):
        assert (out / name).is_file()
    assert review["duplicate_groups"] == 1
    with Image.open(out / "top_losses.png") as im:
        assert im.width > 600 and im.height > 200


def test_report_is_self_contained(evaluated):
    h, report = evaluated[1], evaluated[5]
    html = report.read_text(encoding="utf-8")
    assert 'src="http' not in html and "href=\"http" not in html
    assert "<link" not in html and "<script src" not in html
    n_images = html.count('src="data:image/png;base64,')
    assert n_images == len(h.levels) + 2  # confusions, top losses, extra t-SNE
    for text in (TITLE, "Ablation", "Per-class", "Top losses", "Near-duplicates", "t-SNE of image embeddings"):
        assert text in html, text
    assert "Yoga-82 table" not in html


def _chromium() -> str | None:
    """Debian's `chromium` or `chromium-headless-shell` (what .ci/run installs), or another distribution's name."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-headless-shell", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed")
def test_report_renders_in_chromium(evaluated, tmp_path):
    report = evaluated[5]
    shot = tmp_path / "report.png"
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
        report.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        gray = np.asarray(im.convert("L"), dtype=float)
    assert gray.shape == (2000, 1280)
    assert gray.std() > 20 and not math.isclose(gray.min(), gray.max())


def test_contact_sheet_tiles_unreadable_images(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    image = Image.new("RGB", (300, 150), (200, 30, 30))
    contact_sheet([(image, ["ok"]), (broken, ["broken"]), (tmp_path / "missing.jpg", ["missing"])],
                  tmp_path / "sheet.png", cols=2, thumb=100)
    with Image.open(tmp_path / "sheet.png") as sheet:
        rgb = sheet.convert("RGB")
        assert rgb.size[0] < rgb.size[1]  # 2 columns, 2 rows
        assert rgb.getpixel((20, 40)) == (200, 30, 30)  # thumbnail pasted
        assert (170, 170, 170) in {c for _, c in rgb.getcolors(1 << 16)}  # grey tile
