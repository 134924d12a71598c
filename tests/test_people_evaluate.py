"""Several people in evaluate, the report and explain (issue 22, item 4): a labelled photo's label belongs to one
person (the one ``fit --person`` would choose), the others are listed apart; explain draws every person."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_people import LEFT, RIGHT, tile


def frame_of_rows() -> pd.DataFrame:
    """Three photos: a with three people (the largest in the middle), b with nobody, c with one."""
    return pd.DataFrame({
        "path": ["a", "a", "a", "b", "c"], "status": ["ok", "ok", "ok", "no_person", "ok"],
        "person": [0, 1, 2, 0, 0], "person_score": [0.9, 0.8, 0.7, np.nan, 0.9],
        "box_x0": [0.0, 100.0, 250.0, np.nan, 10.0], "box_y0": [40.0, 0.0, 0.0, np.nan, 10.0],
        "box_x1": [40.0, 200.0, 300.0, np.nan, 20.0], "box_y1": [100.0, 100.0, 50.0, np.nan, 20.0],
        "width": [300] * 5, "height": [100] * 5,
        "class": ["x", "y", "x", "y", "x"], "true_class": ["y", "y", "y", "y", "x"]})


def test_the_label_goes_to_one_person_and_the_others_are_kept_apart():
    from hybridpose.evaluation.people import one_row_per_photo

    scored, others = one_row_per_photo(frame_of_rows(), "largest")
    assert scored["path"].tolist() == ["a", "b", "c"] and scored["person"].tolist() == [1, 0, 0]
    assert scored["people"].tolist() == [3, 0, 1]
    assert sorted(zip(others["path"], others["person"])) == [("a", 0), ("a", 2)]
    center, _ = one_row_per_photo(frame_of_rows().assign(box_x0=[110.0, 0.0, 145.0, np.nan, 10.0],
                                                         box_x1=[150.0, 120.0, 155.0, np.nan, 20.0],
                                                         box_y0=[40.0, 0.0, 25.0, np.nan, 10.0],
                                                         box_y1=[100.0, 100.0, 75.0, np.nan, 20.0]), "center")
    assert center["person"].tolist() == [2, 0, 0]  # the box whose centre is nearest the photo's, not the largest


def test_photos_are_counted_by_the_number_of_people():
    from hybridpose.evaluation.people import one_row_per_photo, people_bands

    class Flat:  # the one-level hierarchy people_bands reads
        leaf_level = "class"

    scored, _ = one_row_per_photo(frame_of_rows(), "largest")
    bands = {r["people found"]: r for r in people_bands(scored, Flat())}
    assert [bands[k]["photos"] for k in ("nobody", "1", "2", "3", "4 or more")] == [1, 1, 0, 1, 0]
    assert bands["3"]["top-1 %"] == 100.0 and bands["nobody"]["top-1 %"] == 100.0 and bands["2"]["top-1 %"] is None


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Two one-person photos and one two-person photo (a small person left, a larger one right)."""
    data = tmp_path_factory.mktemp("people") / "data"
    for cls, p in (("Triangle", LEFT), ("UtkataKonasana", RIGHT)):
        (data / cls).mkdir(parents=True)
        (data / cls / p.name).write_bytes(p.read_bytes())
    tile([LEFT, RIGHT], data / "UtkataKonasana" / "two.jpg")
    return data


def test_evaluate_scores_the_largest_person_of_a_predictions_csv_and_lists_the_other(tiny_run, labelled, tmp_path):
    import hybridpose
    from hybridpose.evaluation.evaluate import evaluate

    preds = tmp_path / "predictions.csv"
    hybridpose.predict(labelled, tiny_run, preds, workers=0, show_progress=False, max_people=4)
    table = pd.read_csv(preds)
    two = table[table["path"].str.endswith("two.jpg")]
    assert len(two) == 2 and len(table) == 4
    largest = int(two["person"].iloc[int(np.argmax((two["box_x1"] - two["box_x0"]) * (two["box_y1"] - two["box_y0"])))])
    summary = evaluate(preds, data=labelled, out=tmp_path / "ev", show_progress=False)
    assert summary["n_photos"] == 3 and summary["other_people"] == 1 and summary["person_scored"] == "largest"
    bands = {r["people found"]: r["photos"] for r in summary["people"]}
    assert bands["1"] == 2 and bands["2"] == 1
    scored = pd.read_csv(tmp_path / "ev" / "predictions_evaluated.csv")
    assert len(scored) == 3 and scored.loc[scored["path"].str.endswith("two.jpg"), "person"].item() == largest
    others = pd.read_csv(tmp_path / "ev" / "other_people.csv")
    assert others["person"].tolist() == [1 - largest] and others["class"].notna().all()
    html = (tmp_path / "ev" / "report.html").read_text()
    assert 'id="people"' in html and "People per photo" in html and "other_people.csv" in html
    center = evaluate(preds, data=labelled, out=tmp_path / "ev_center", show_progress=False, person="center")
    assert center["person_scored"] == "center" and center["n_photos"] == 3
    # a data set with the run: the same rows as the predictions file it would write
    direct = evaluate(labelled, model=tiny_run, out=tmp_path / "ev_data", show_progress=False)
    assert direct["n_photos"] == 3 and direct["people"] == summary["people"] and direct["other_people"] == 1
    single = evaluate(labelled, model=tiny_run, out=tmp_path / "ev_single", show_progress=False, max_people=1)
    assert single["n_photos"] == 3 and "people" not in single
    assert "people" not in json.loads((tmp_path / "ev_single" / "metrics.json").read_text())


def test_explain_draws_every_person_of_a_photo(tiny_run, labelled, tmp_path):
    from hybridpose.explanation import explain

    res = explain(labelled, tiny_run, tmp_path / "ex", limit=8)
    names = sorted(Path(f).name for f in res["files"])
    assert names == ["UK_41_explain.png", "triangle1_explain.png", "two_person0_explain.png", "two_person1_explain.png"]
    assert [Path(p).name for p in res["people"]] == ["two_people.png"] and res["photos"] == 3
    rgb = np.asarray(Image.open(tmp_path / "ex" / "two_people.png").convert("RGB")).astype(int)
    half = rgb.shape[1] // 2

    def near(colour: str) -> np.ndarray:  # pixels of a person's colour (its box and bones)
        c = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return (np.abs(rgb - c).sum(axis=2) < 40)

    first, second = near("#00c853"), near("#2979ff")  # person 0 (left), person 1 (right)
    assert first[:, :half].sum() > 200 > first[:, half:].sum() and second[:, half:].sum() > 200 > second[:, :half].sum()
    plain = explain(labelled, tiny_run, tmp_path / "ex1", limit=8, max_people=1)
    assert sorted(Path(f).name for f in plain["files"]) == ["UK_41_explain.png", "triangle1_explain.png", "two_explain.png"]
    assert plain["people"] == []
