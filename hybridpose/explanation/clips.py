"""`explain` on a clip run: each clip as a strip of its frames (crop, CAM of the clip's label averaged over
the fold networks), with the clip's label, the rule that decided it and the temporal statistics the rules
read (or, without rules, those the clip keypoint branch leans on most)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import atomic
from ..data.clips import list_samples
from ..data.crops import crop_photo
from ..defaults import DEFAULTS
from ..engines import with_gradients
from ..inference.classifier import channels_first
from ..inference.clips import ClipPredictor
from ..run.folder import RunFolder
from .cam import cam_maps, grad_cam_class, overlay
from .photos import printable

STRIP = 6  # frames drawn per clip


def explain_clips(inputs: str | Path, run: str | Path, out: str | Path, *, method: str = DEFAULTS.cam_method,
                  limit: int = DEFAULTS.explain_limit) -> dict:
    grad_cam_class(method)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pred = ClipPredictor(run, engine=with_gradients(RunFolder(run)))  # CAMs need the checkpoints
    written = []
    for s in list_samples(inputs, frames_folder=True)[:limit]:
        res = pred.predict_clip(s)
        if res.status not in ("ok", "no_person"):
            continue
        leaf = res.row[pred.h.leaf_level]
        crops = _strip_crops(pred, s, res)
        maps = cam_maps(pred.clf, crops, [pred.h.leaves.index(leaf)] * len(crops), method)
        png = out / f"{printable(s.path.stem or s.path.name)}_clip_explain.png"
        _figure(png, crops, maps, s, res, pred)
        written.append(str(png))
    return {"photos": len(written), "files": written, "contact_sheet": written[0] if written else ""}


def _strip_crops(pred: ClipPredictor, sample, res) -> np.ndarray:
    from PIL import Image

    keep = {res.frames[i].index for i in np.unique(np.linspace(0, len(res.frames) - 1, STRIP).round().astype(int))}
    prep, crops = pred.clf.image_branch.preprocessing_, []
    by_index = {f.index: f for f in res.frames}
    for fr in pred.frames(sample):
        if fr.index in keep:
            kp = by_index[fr.index].keypoints
            box = pred.sk.keypoint_box(kp, fr.rgb.shape[1], fr.rgb.shape[0]) if np.isfinite(kp).all() else None
            crop, _ = crop_photo(Image.fromarray(fr.rgb), box, None, prep.eval_margin, prep.input_size, pred.sk.n)
            crops.append(crop)
    return channels_first(np.stack(crops))


def _statistics_shown(pred: ClipPredictor, res) -> list[str]:
    from ..pose.temporal import clip_statistics

    stats = clip_statistics(np.stack([f.keypoints for f in res.frames]), [f.time for f in res.frames], pred.sk)
    if pred.rules is not None and pred.rules.rules:
        names = list(dict.fromkeys(r.statistic for r in pred.rules.rules))
    else:
        imp = pred.clf.branches["clip_keypoint"].model_.feature_importances_
        names = [pred.clf.branches["clip_keypoint"].feature_names_[i] for i in np.argsort(-imp)[:4]]
    return [f"{n} = {stats[n]:.3g}" for n in names[:6]]


def _figure(png: Path, crops: np.ndarray, maps: np.ndarray, sample, res, pred: ClipPredictor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(crops)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 3.2), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(overlay(crops[j], maps[j]))
        axes[0, j].axis("off")
    row = res.row
    rule = f"rule {row['rule']} ({row.get('rule_statistic', '')})" if row.get("rule") else "no rule"
    fig.suptitle(f"{printable(sample.path.name)}: {row[pred.h.leaf_level]} {row['confidence']:.2f}, {rule}", fontsize=10)
    fig.text(0.01, 0.02, "   ".join(_statistics_shown(pred, res)), fontsize=8)
    atomic.save_figure(png, fig, dpi=90)
    plt.close(fig)
