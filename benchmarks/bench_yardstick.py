"""The yardstick `hybridpose predict` is compared with: the keypoint-only recipe users reach for instead.

MediaPipe Pose (static images, the bundled complexity-1 model) on every photo, one process, then a
k-nearest-neighbour classifier on the normalised keypoints (5-fold cross-validated over the same photos,
labels from the class folders). The timed part is the whole process, as for the CLI:

    .venv/bin/python benchmarks/bench_yardstick.py [DATA] [--out labels.csv] [--smoke]

DATA: a class-folder tree (default ../shared/data/yoga8). Prints the photos, wall seconds, photos/s and
the k-NN accuracy (for information). --smoke: 8 photos of data/sample, seconds, numbers meaningless.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

T0 = time.perf_counter()  # the clock starts before the heavy imports, as a user's process does
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
REPO = Path(__file__).resolve().parent.parent


def photos(data: Path) -> list[tuple[Path, str]]:
    return [(p, d.name) for d in sorted(data.iterdir()) if d.is_dir()
            for p in sorted(d.rglob("*")) if p.suffix.lower() in EXTENSIONS and p.is_file()]


def features(lm: np.ndarray) -> np.ndarray:
    """x, y of every landmark, centred on the hip midpoint and scaled by the torso (shoulders to hips)."""
    xy = lm[:, :2]
    hips, shoulders = xy[[23, 24]].mean(0), xy[[11, 12]].mean(0)
    return ((xy - hips) / max(np.linalg.norm(shoulders - hips), 1e-6)).reshape(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data" / "yoga8"))
    ap.add_argument("--out", help="write path,label,predicted as CSV")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="8 photos of data/sample; numbers meaningless")
    args = ap.parse_args()
    data = REPO / "data" / "sample" if args.smoke and args.data == ap.get_default("data") else Path(args.data)
    items = photos(data)
    if args.smoke:
        items = items[:: max(1, len(items) // 8)][:8]
    if not items:
        sys.exit(f"{data}: no class folders with photos")

    import mediapipe
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    feats, labels, found = [], [], []
    with mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        for path, label in items:
            try:
                with warnings.catch_warnings(), Image.open(path) as im:
                    warnings.simplefilter("ignore")
                    rgb = np.asarray(im.convert("RGB"))
            except OSError:
                found.append(False)
                continue
            res = pose.process(rgb)
            found.append(res.pose_landmarks is not None)
            if res.pose_landmarks is not None:
                feats.append(features(np.array([[p.x, p.y, p.z, p.visibility] for p in res.pose_landmarks.landmark])))
                labels.append(label)
    X, y = np.array(feats), np.array(labels)
    folds = min(5, int(min(np.unique(y, return_counts=True)[1]))) if len(y) else 0
    if folds >= 2:
        pred = cross_val_predict(KNeighborsClassifier(min(args.k, len(y) - len(y) // folds)), X, y,
                                 cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    else:  # too few photos per class to cross-validate (smoke): fitted and scored on the same photos
        pred = KNeighborsClassifier(1).fit(X, y).predict(X) if len(y) else np.array([])
    wall = time.perf_counter() - T0
    if args.out:
        rows = iter(pred)
        with open(args.out, "w") as fh:
            fh.write("path,label,predicted\n")
            for (path, label), ok in zip(items, found):
                fh.write(f"{path},{label},{next(rows) if ok else ''}\n")
    acc = float(np.mean(pred == y)) if len(y) else float("nan")
    print(f"yardstick: {len(items)} photos, {len(y)} with a person, k-NN top-1 {acc:.3f}; "
          f"wall {wall:.2f} s, {len(items) / wall:.2f} photos/s (whole process)")


if __name__ == "__main__":
    main()
