"""`hybridpose explain`: why the model decided as it did.

Per photo: the crop with its keypoints, the class activation map of the predicted class
(pytorch-grad-cam: HiResCAM, XGrad-CAM or Grad-CAM, averaged over the K fold models), the
top-5 with probabilities and the rule that fired. Also a t-SNE of backbone embeddings.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..data.crops import crop_square
from ..data.datasets import load_dataset
from ..data.sources import open_inputs, photos
from ..defaults import DEFAULTS
from ..engines import with_gradients
from ..inference.classifier import HybridPoseClassifier
from ..pose.frontend import estimator_class, keypoints_array
from ..run.folder import RunFolder
from ..viz.plots import contact_sheet
from .cam import cam_maps, grad_cam_class, overlay


def explain_photos(inputs: str | Path, run: str | Path, out: str | Path, *, method: str = DEFAULTS.cam_method,
                   tsne: str | Path | None = None, limit: int = DEFAULTS.explain_limit,
                   max_people: int = DEFAULTS.max_people) -> dict:
    """Per photo ``NAME_explain.png``; a photo with several people (``max_people`` > 1) gets one per person,
    ``NAME_person<k>_explain.png``, and ``NAME_people.png``: the whole photo with every person's skeleton, box
    and label."""
    inputs, out = Path(inputs), Path(out)
    grad_cam_class(method)  # an unknown method fails before any work
    paths = photos(open_inputs(inputs))[:limit]
    names = dict(zip(map(str, paths), output_names(paths)))
    clf = HybridPoseClassifier.load(run, engine=with_gradients(RunFolder(run)))  # CAMs need the checkpoints
    several = max_people > 1 and estimator_class(clf.skeleton, max_people) is not estimator_class(clf.skeleton)
    clf.max_people = max_people if several else None  # a skeleton without a multi-person model: one row per photo
    written, people, sheet = [], [], []
    for i in range(0, len(paths), 16):
        poses, crops = clf.poses_and_crops(paths[i : i + 16])
        b = clf.batch_from(poses, crops)
        targets = [clf.hierarchy.leaves.index(leaf) for leaf in b.leaf]
        # an exported bundle (ONNX) has no gradients: its explanations are drawn without the CAM
        maps = cam_maps(clf, crops, targets, method) if hasattr(clf.image_branch, "models_") else [None] * len(crops)
        rows = poses["path"].astype(str).to_numpy()
        for j, path in enumerate(rows):
            several = int((rows == path).sum()) > 1
            stem = names[path] + (f"_person{int(poses['person'].iat[j])}" if several else "")
            png = out / f"{stem}_explain.png"
            _figure(png, crops[j], maps[j], _crop_keypoints(clf, poses.iloc[j]), b, j, clf, method)
            written.append(str(png))
            conf = b.fused[clf.hierarchy.leaf_level][j, targets[j]]
            if not several:
                sheet.append((overlay(crops[j], maps[j]), [printable(Path(path).name), f"{b.leaf[j]} {conf:.2f}",
                                                             f"rule: {b.rule[j]}" if b.rule[j] else "no rule"]))
            elif j == 0 or rows[j - 1] != path:  # the photo's first person: its overview, once
                overview = out / f"{names[path]}_people.png"
                picked = np.flatnonzero(rows == path)
                _people_figure(overview, path, poses.iloc[picked], [b.leaf[k] for k in picked],
                               [float(b.fused[clf.hierarchy.leaf_level][k, targets[k]]) for k in picked], clf)
                people.append(str(overview))
                sheet.append((str(overview), [printable(Path(path).name), f"{len(picked)} people",
                                              " | ".join(b.leaf[k] for k in picked)]))
    contact_sheet(sheet, out / "explain_contact_sheet.png", cols=5, thumb=240)
    result = {"photos": len(paths), "explanations": len(written), "files": written, "people": people,
              "contact_sheet": str(out / "explain_contact_sheet.png")}
    if tsne is not None:
        result["tsne"] = str(tsne_plot(clf, tsne, out / "tsne.png"))
    return result


def _people_figure(path: Path, photo: str, rows: pd.DataFrame, leaves: list[str], confidences: list[float],
                   clf: HybridPoseClassifier) -> None:
    """The whole photo with every person's skeleton, box and ``#person label confidence``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.images import open_rgb

    rgb = np.asarray(open_rgb(photo))
    w, h = float(rows["width"].iat[0]), float(rows["height"].iat[0])  # the keypoints' pixels
    fig, ax = plt.subplots(figsize=(min(12, 2 + 5 * w / h), 5.4))
    ax.imshow(rgb, extent=(0, w, h, 0))
    kps = keypoints_array(rows, clf.skeleton)
    for (_, row), kp, leaf, conf, colour in zip(rows.iterrows(), kps, leaves, confidences, PERSON_COLOURS * len(rows)):
        if row["status"] != "ok":
            continue
        x0, y0, x1, y1 = (float(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, color=colour))
        seen = kp[:, 3] > 0.3
        for a, c in clf.skeleton.edges:
            i, k = clf.skeleton.index[a], clf.skeleton.index[c]
            if seen[i] and seen[k]:
                ax.plot([kp[i, 0], kp[k, 0]], [kp[i, 1], kp[k, 1]], color=colour, lw=2)
        ax.scatter(kp[seen, 0], kp[seen, 1], s=8, c="#ff1744", zorder=3)
        ax.text(x0, max(y0 - 4, 10), f"#{int(row['person'])} {leaf} {conf:.2f}", color="white", fontsize=9,
                va="bottom", bbox={"facecolor": colour, "alpha": 0.85, "pad": 2, "lw": 0})
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    ax.set_title(f"{printable(Path(photo).name)}: {len(rows)} people", fontsize=11)
    fig.tight_layout()
    atomic.save_figure(path, fig, dpi=100)
    plt.close(fig)


PERSON_COLOURS = ["#00c853", "#2979ff", "#ff9100", "#d500f9", "#00b8d4", "#ffd600"]


def output_names(paths: list[Path]) -> list[str]:
    """A distinct file-name stem per photo: the stem, or its path below the common folder where stems repeat."""
    stems = [printable(p.stem) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    import os

    common = Path(os.path.commonpath([str(p.parent.resolve()) for p in paths])) if paths else Path(".")
    return [printable(str(p.resolve().relative_to(common)).replace(os.sep, "__").replace(".", "_")) for p in paths]


def printable(name: str) -> str:
    """``name`` with its control characters (a newline in a file name) as "_": one line to draw, a plain file name."""
    return "".join("_" if unicodedata.category(c) == "Cc" else c for c in name)


def _crop_keypoints(clf: HybridPoseClassifier, row: pd.Series) -> np.ndarray | None:
    if row["status"] != "ok":
        return None
    kp = keypoints_array(row.to_frame().T, clf.skeleton)[0]
    prep = clf.image_branch.preprocessing_
    sq = crop_square((row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"]), row["width"], row["height"],
                     prep.eval_margin)
    pts = sq.to_crop(kp[:, :2], prep.input_size)
    # a hand skeleton's v is its handedness, not a visibility: every point found is drawn
    vis = np.isfinite(kp[:, :1]).astype(float) if clf.skeleton.handed else kp[:, 3:4]
    return np.concatenate([pts, vis], axis=1)


def _figure(path: Path, crop: np.ndarray, cam: np.ndarray | None, kp: np.ndarray | None, b, j: int,
            clf: HybridPoseClassifier, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = np.asarray(crop).transpose(1, 2, 0)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9), gridspec_kw={"width_ratios": [1, 1, 1.15]})
    axes[0].imshow(rgb)
    if kp is not None:
        for a, c in clf.skeleton.edges:
            p, q = kp[clf.skeleton.index[a]], kp[clf.skeleton.index[c]]
            if min(p[2], q[2]) > 0.3:
                axes[0].plot([p[0], q[0]], [p[1], q[1]], color="#00e676", lw=2)
        vis = kp[:, 2] > 0.3
        axes[0].scatter(kp[vis, 0], kp[vis, 1], s=10, c="#ff1744", zorder=3)
    axes[0].set_title(f"crop + {clf.skeleton.name} keypoints" if kp is not None
                      else f"{b.poses['status'].iat[j].replace('_', ' ')}: whole photo", fontsize=10)
    axes[1].imshow(rgb)
    if cam is not None:
        axes[1].imshow(cam, cmap="jet", alpha=0.45, extent=(0, rgb.shape[1], rgb.shape[0], 0), interpolation="bilinear")
    axes[1].set_title(f"{method} for '{b.leaf[j]}'" if cam is not None else
                      "no CAM: an exported bundle has no gradients\n(explain the run folder for one)", fontsize=10)
    for ax in axes[:2]:
        ax.axis("off")
    _top5(axes[2], b, j, clf)
    fig.suptitle(printable(Path(b.poses["path"].iat[j]).name), fontsize=11)
    fig.tight_layout()
    atomic.save_figure(path, fig, dpi=100)
    plt.close(fig)


def _top5(ax, b, j: int, clf: HybridPoseClassifier) -> None:
    leaves = clf.hierarchy.leaves
    p = b.fused[clf.hierarchy.leaf_level][j]
    order = np.argsort(-p)[:5][::-1]
    ax.barh(range(len(order)), p[order], color=["#1976d2" if leaves[i] == b.leaf[j] else "#90caf9" for i in order])
    ax.set_yticks(range(len(order)), [leaves[i] for i in order], fontsize=9)
    ax.set_xlim(0, 1)
    for y, i in enumerate(order):
        ax.text(min(p[i] + 0.02, 0.8), y, f"{p[i]:.2f}", va="center", fontsize=9)
    tops = []
    for name, probs in b.branches.items():
        row = probs[clf.hierarchy.leaf_level][j]
        tops.append(f"{name}: {leaves[int(row.argmax())] if np.isfinite(row).all() else 'abstains'}")
    labels = " > ".join(clf.hierarchy.ancestor(b.leaf[j], lv) for lv in reversed(clf.hierarchy.levels))
    ax.set_title(f"{labels}\nrule: {b.rule[j] or 'none'} | {' | '.join(tops)}", fontsize=8)
    ax.set_xlabel("fused probability (top 5)")


def tsne_plot(clf: HybridPoseClassifier, data: str | Path, path: Path) -> Path:
    """2-D t-SNE of the mean backbone embedding over the fold models, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    ds = load_dataset(data)
    embs = []
    for i in range(0, len(ds), 64):
        _, crops = clf.poses_and_crops(ds.paths[i : i + 64])
        embs.append(clf.image_branch.embed(crops))
    emb = np.concatenate(embs)
    xy = TSNE(n_components=2, perplexity=min(30, max(5, len(emb) // 4)), init="pca", random_state=0).fit_transform(emb)
    fig, ax = plt.subplots(figsize=(8, 7))
    classes = sorted(set(ds.labels))
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(classes), 2)))
    labels = np.array(ds.labels)
    for c, col in zip(classes, colours):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=14, color=col, label=c, alpha=0.85)
    ax.legend(fontsize=8, markerscale=1.5, loc="best", ncol=1 if len(classes) <= 12 else 2)
    ax.set_title(f"t-SNE of backbone embeddings ({len(emb)} photos of {Path(data).name})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    atomic.save_figure(path, fig)
    plt.close(fig)
    return path
