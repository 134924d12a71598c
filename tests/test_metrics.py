"""metrics.py against sklearn computed directly on a synthetic oof_predictions frame."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from hybridpose.data.hierarchy import Hierarchy
from hybridpose.evaluation.metrics import (
    ablation_table,
    confusion,
    frame_branches,
    level_metrics,
    per_class_report,
    yoga82_table,
)

BRANCHES = ("keypoint", "image", "fused", "rules")  # the branches make_oof_frame writes
LEVELS = ["pose", "family", "group"]
ANCESTORS = {
    "a1": ["A", "X"], "a2": ["A", "X"],
    "b1": ["B", "X"], "b2": ["B", "X"],
    "c1": ["C", "Y"], "c2": ["C", "Y"],
}
N_ROWS = 150


def make_oof_frame(levels=LEVELS, n=N_ROWS, seed=0) -> tuple[pd.DataFrame, Hierarchy]:
    """A frame in the oof_predictions.csv format: 6 leaves, 3 parents, 2 groups.

    The keypoint branch abstains on ~15% of rows; fused predictions are
    hierarchy-consistent (ancestors of the leaf argmax), so at coarse levels they may
    differ from the argmax of the coarse probabilities.
    """
    rng = np.random.default_rng(seed)
    h = Hierarchy(list(levels), {k: list(v) for k, v in ANCESTORS.items()})
    leaf_idx = rng.integers(0, len(h.leaves), n)
    true_leaves = [h.leaves[i] for i in leaf_idx]
    cols: dict[str, object] = {
        "path": [f"img/p{i:03d}.jpg" for i in range(n)],
        "fold": [i % 3 + 1 for i in range(n)],
        "status": ["ok"] * n,
    }
    for level in h.levels:
        cols[f"true_{level}"] = [h.ancestor(leaf, level) for leaf in true_leaves]
    abstain = rng.random(n) < 0.15
    fused_leaf_pred = None
    for branch, strength in (("image", 1.2), ("keypoint", 0.8), ("fused", 1.6)):
        logits = rng.normal(size=(n, len(h.leaves)))
        logits[np.arange(n), leaf_idx] += strength
        leaf_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        if branch == "keypoint":
            leaf_p[abstain] = np.nan
        leaf_pred = [h.leaves[j] for j in leaf_p.argmax(axis=1)]
        for level in h.levels:
            p = leaf_p @ h.leaf_to_level(level)
            names = h.classes(level)
            for j, name in enumerate(names):
                cols[f"{branch}:{level}:{name}"] = p[:, j]
            if branch == "fused":
                pred = [h.ancestor(leaf, level) for leaf in leaf_pred]
            else:
                pred = [names[j] for j in np.nan_to_num(p, nan=0).argmax(axis=1)]
            if branch == "keypoint":
                pred = [None if a else x for a, x in zip(abstain, pred)]
            cols[f"pred_{branch}_{level}"] = pred
        if branch == "fused":
            fused_leaf_pred = leaf_pred
    fixed = rng.random(n) < 0.1  # a rule repairs some fused mistakes
    rules_leaf = [t if f else p for t, p, f in zip(true_leaves, fused_leaf_pred, fixed)]
    for level in h.levels:
        cols[f"rules_{level}"] = [h.ancestor(leaf, level) for leaf in rules_leaf]
    cols["rule"] = ["knee_angle" if f else "" for f in fixed]
    return pd.DataFrame(cols), h


def _reference(frame, h, branch, level):
    """Independent computation with sklearn."""
    col = f"rules_{level}" if branch == "rules" else f"pred_{branch}_{level}"
    answered = frame[col].notna().to_numpy()
    y_true = frame[f"true_{level}"].to_numpy()[answered]
    y_pred = frame[col].to_numpy()[answered]
    ref = {
        "n": len(frame),
        "n_abstained": int((~answered).sum()),
        "top1": accuracy_score(y_true, y_pred),
        "top1_all": accuracy_score(y_true, y_pred, normalize=False) / len(frame),
        "macro_f1": f1_score(y_true, y_pred, average="macro"),
        "top5": math.nan,
    }
    if branch != "rules":
        names = h.classes(level)
        scores = frame[[f"{branch}:{level}:{c}" for c in names]].to_numpy()[answered]
        if len(names) == 2:
            ref["top5"] = 1.0  # k >= number of classes
        else:
            ref["top5"] = top_k_accuracy_score(y_true, scores, k=min(5, len(names)), labels=names)
    return ref


@pytest.fixture(scope="module")
def oof():
    return make_oof_frame()


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to")  # k >= classes at coarse levels
@pytest.mark.parametrize("branch", BRANCHES)
def test_level_metrics_match_sklearn(oof, branch):
    frame, h = oof
    got = level_metrics(frame, h, branch).set_index("level")
    assert list(got.index) == h.levels
    for level in h.levels:
        ref = _reference(frame, h, branch, level)
        row = got.loc[level]
        assert row["n"] == ref["n"]
        assert row["n_abstained"] == ref["n_abstained"]
        for key in ("top1", "top1_all", "macro_f1", "top5"):
            if math.isnan(ref[key]):
                assert math.isnan(row[key]), (branch, level, key)
            else:
                assert row[key] == pytest.approx(ref[key]), (branch, level, key)


def test_keypoint_abstentions_counted(oof):
    frame, h = oof
    got = level_metrics(frame, h, "keypoint")
    n_abst = int(frame["pred_keypoint_pose"].isna().sum())
    assert n_abst > 0
    assert (got["n_abstained"] == n_abst).all()
    assert (got["top1_all"] < got["top1"]).all()
    assert (got["n"] == len(frame)).all()


def test_top5_meaningful_at_leaf_level(oof):
    frame, h = oof
    got = level_metrics(frame, h, "image").set_index("level")
    assert 0 < got.loc["pose", "top5"] < 1  # 6 classes: top-5 can still miss
    assert got.loc["group", "top5"] == 1.0


def test_pred_column_preferred_over_argmax(oof):
    frame, h = oof
    with_pred = level_metrics(frame, h, "fused").set_index("level")
    no_pred = frame.drop(columns=[f"pred_fused_{lv}" for lv in h.levels])
    argmax = level_metrics(no_pred, h, "fused").set_index("level")
    for level in h.levels:
        names = h.classes(level)
        scores = frame[[f"fused:{level}:{c}" for c in names]].to_numpy()
        y_pred = np.array(names)[scores.argmax(axis=1)]
        assert argmax.loc[level, "top1"] == pytest.approx(accuracy_score(frame[f"true_{level}"], y_pred))
    # hierarchy-consistent predictions differ from the coarse argmax on some rows
    assert (with_pred["top1"] != argmax["top1"]).any()


def test_csv_round_trip_gives_same_metrics(oof, tmp_path):
    frame, h = oof
    frame.to_csv(tmp_path / "oof.csv", index=False)
    back = pd.read_csv(tmp_path / "oof.csv")
    for branch in BRANCHES:
        pd.testing.assert_frame_equal(level_metrics(back, h, branch), level_metrics(frame, h, branch))


@pytest.mark.parametrize("branch,level", [("keypoint", "pose"), ("fused", "family"), ("rules", "group")])
def test_per_class_report_matches_sklearn(oof, branch, level):
    frame, h = oof
    col = f"rules_{level}" if branch == "rules" else f"pred_{branch}_{level}"
    keep = frame[col].notna()
    names = h.classes(level)
    prec, rec, f1, sup = precision_recall_fscore_support(
        frame.loc[keep, f"true_{level}"], frame.loc[keep, col], labels=names, zero_division=0
    )
    got = per_class_report(frame, h, branch, level)
    assert list(got.columns) == ["class", "precision", "recall", "f1", "support"]
    assert list(got["class"]) == names
    np.testing.assert_allclose(got["precision"], prec)
    np.testing.assert_allclose(got["recall"], rec)
    np.testing.assert_allclose(got["f1"], f1)
    np.testing.assert_array_equal(got["support"], sup)


@pytest.mark.parametrize("branch", BRANCHES)
def test_confusion_counts(oof, branch):
    frame, h = oof
    for level in h.levels:
        counts, names = confusion(frame, h, branch, level)
        col = f"rules_{level}" if branch == "rules" else f"pred_{branch}_{level}"
        keep = frame[col].notna()
        assert names == h.classes(level)
        assert counts.sum() == keep.sum()
        np.testing.assert_array_equal(
            counts, confusion_matrix(frame.loc[keep, f"true_{level}"], frame.loc[keep, col], labels=names)
        )


def test_ablation_table_lists_branches_with_columns(oof):
    frame, h = oof
    full = ablation_table(frame, h)
    assert list(full["branch"]) == ["image branch", "keypoint branch", "fused", "fused + rules"]  # the table's order
    assert list(full.columns[:4]) == ["branch", "group top-1", "group top-1 all", "group top-5"]
    no_rules = frame.drop(columns=[c for c in frame.columns if c.startswith("rules_")])
    assert "fused + rules" not in list(ablation_table(no_rules, h)["branch"])
    fused = level_metrics(frame, h, "fused").set_index("level")
    assert full.set_index("branch").loc["fused", "pose top-1"] == pytest.approx(fused.loc["pose", "top1"])


def test_yoga82_table_only_for_yoga82_levels(oof):
    frame, h = oof
    assert yoga82_table(frame, h) is None
    yframe, yh = make_oof_frame(levels=["class82", "class20", "class6"])
    table = yoga82_table(yframe, yh)
    assert table is not None
    assert list(table.columns) == [
        "branch",
        "2 classes top-1", "2 classes top-5",
        "3 classes top-1", "3 classes top-5",
        "6 classes top-1", "6 classes top-5",
    ]
    kp = level_metrics(yframe, yh, "keypoint").set_index("level")
    row = table.set_index("branch").loc["keypoint branch"]
    assert row["6 classes top-1"] == pytest.approx(100 * kp.loc["class82", "top1_all"])
    assert math.isnan(table.set_index("branch").loc["fused + rules", "6 classes top-5"])


def test_frame_branches_come_from_the_table(oof):
    frame, h = oof
    assert frame_branches(frame, h) == ["image", "keypoint", "fused", "rules"]
    extra = frame.assign(**{f"pred_pose_net_{lv}": frame[f"pred_image_{lv}"] for lv in h.levels})
    assert frame_branches(extra, h) == ["image", "keypoint", "pose_net", "fused", "rules"]
    got = level_metrics(extra, h, "pose_net")
    cols = ["level", "n", "top1", "macro_f1"]  # labels only: no probabilities, so no top-5
    pd.testing.assert_frame_equal(got[cols], level_metrics(frame, h, "image")[cols])
