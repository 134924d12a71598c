"""Training curves of a run: one PNG, a row of panels per metric, one line per fold and stage."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import atomic


def plot_training_curves(run: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [pd.read_csv(p) for p in sorted(run.glob("fold_*/metrics.csv"))]
    if not frames:
        return None
    hist = pd.concat(frames, ignore_index=True)
    hist["step"] = hist.groupby("fold").cumcount() + 1
    panels = [("train_loss", "training loss"), ("val_loss", "validation loss (leaf NLL)"),
              ("val_macro_f1", "validation macro-F1"), ("cam_inside", "CAM energy on the body")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    colours = plt.cm.tab10.colors
    for ax, (col, title) in zip(axes, panels):
        for i, (fold, g) in enumerate(hist.groupby("fold")):
            ax.plot(g["step"], g[col], color=colours[i % 10], lw=1.4, label=f"fold {fold}")
        for _, g in hist[hist["fold"] == hist["fold"].min()].groupby("stage"):
            ax.axvline(g["step"].min() - 0.5, color="grey", lw=0.6, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch (stages 1 | 2 | 3)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = run / "training_curves.png"
    atomic.save_figure(path, fig)
    plt.close(fig)
    return path
