"""`evaluate RUN` on a real (tiny) run agrees with scikit-learn computed independently from its files."""
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, top_k_accuracy_score

from hybridpose.evaluation.evaluate import evaluate


def test_evaluate_run_matches_sklearn(copy_run, tmp_path):
    run = copy_run()
    summary = evaluate(run, out=tmp_path / "ev", show_progress=False)
    oof = pd.read_csv(run / "oof_predictions.csv", keep_default_na=False, na_values=[""])
    metrics = pd.read_csv(tmp_path / "ev" / "metrics.csv").set_index(["branch", "level"])
    levels = summary["levels"]
    for level in levels:
        classes = sorted({c.split(":", 2)[2] for c in oof.columns if c.startswith(f"fused:{level}:")})
        probs = oof[[f"fused:{level}:{c}" for c in classes]].to_numpy()
        y = oof[f"true_{level}"].astype(str).to_numpy()
        pred = np.array(classes)[probs.argmax(1)]
        row = metrics.loc[("fused", level)]
        assert np.isclose(row["top1"], accuracy_score(y, pred))
        assert np.isclose(row["macro_f1"], f1_score(y, pred, average="macro"))
        if len(classes) > 2:
            k = min(5, len(classes) - 1)
            if k == 5:
                assert np.isclose(row["top5"], top_k_accuracy_score(y, probs, k=5, labels=classes))
    leaf = levels[0]  # levels are finest first
    per_class = pd.read_csv(tmp_path / "ev" / f"per_class_{leaf}.csv")
    branch = summary["best_branch"]
    y = oof[f"true_{leaf}"].astype(str)
    pred = oof[f"pred_{branch}_{leaf}"].astype(str) if f"pred_{branch}_{leaf}" in oof else oof[f"rules_{leaf}"].astype(str)
    labels = sorted(set(y) | set(pred))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    got = per_class.set_index("class").loc[labels]
    assert np.allclose(got["precision"], p) and np.allclose(got["recall"], r) and np.allclose(got["f1"], f)
    assert (got["support"].to_numpy() == s).all()
    for name in ("report.html", "ablation.csv", "top_losses.csv", f"confusion_{leaf}.png"):
        assert (tmp_path / "ev" / name).exists(), name
