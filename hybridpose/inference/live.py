"""The live loop: a camera (or a video file standing in for one) labelled frame by frame by a clip run."""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from ..data.crops import crop_photo
from ..data.video import FRAME_MAX_SIDE
from ..errors import RunError
from ..pose.result import analyse_array
from .classifier import channels_first
from .clips import ClipPredictor


def live(pred: ClipPredictor, source: int | str, *, show: bool = True, max_frames: int | None = None,
         window: int = 5) -> Iterator[dict]:
    """The camera loop (OpenCV): every frame's pose, image probabilities, the label averaged over the last
    ``window`` frames, and the frames per second; drawn in a window when ``show`` (q or Esc quits)."""
    import cv2
    from PIL import Image

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise RunError(f"--camera {source}: cannot open (no such camera or file, or no permission).")
    prep, leaves = pred.clf.image_branch.preprocessing_, pred.h.leaves
    recent: list[np.ndarray] = []
    sequence = pred.clf.branches.get("sequence")  # a clip run's: the running label of the last frames' motion
    track: list[tuple[float, np.ndarray]] = []
    # the last seconds a training clip spans at the run's sampling, whatever the camera's frame rate
    span = sequence.frames_ / pred.sampling.fps if sequence is not None else 0.0
    ticks: list[float] = [time.perf_counter()]
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            scale = min(1.0, FRAME_MAX_SIDE / max(rgb.shape[:2]))
            if scale < 1:
                rgb = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            h, w = rgb.shape[:2]
            result = analyse_array(rgb, w, h, pred.clf.estimator)
            crop, _ = crop_photo(Image.fromarray(rgb), result.box, None, prep.eval_margin, prep.input_size, pred.sk.n)
            p = pred.clf.image_branch.predict_level_proba(channels_first(crop[None]),
                                                          pred.h)[pred.h.leaf_level][0]
            recent = (recent + [p])[-window:]
            avg = np.mean(recent, 0)
            n += 1
            ticks = (ticks + [time.perf_counter()])[-11:]  # frames per second over the last 10 frames
            fps = (len(ticks) - 1) / (ticks[-1] - ticks[0])
            label = leaves[int(avg.argmax())]
            out = {"frame": n - 1, "status": result.status, "label": label, "confidence": float(avg.max()), "fps": fps}
            kp = np.asarray(result.keypoints, float).reshape(pred.sk.n, 4) if result.keypoints is not None else None
            text = f"{label} {avg.max():.2f}"
            if sequence is not None:
                now = time.perf_counter()
                track = [(t, k) for t, k in track if now - t <= span] + [(now, kp if kp is not None else pred.sk.empty(1)[0])]
                m = sequence.predict_proba([np.stack([k for _, k in track])])[0]
                if np.isfinite(m).all():
                    out.update(motion_label=sequence.classes_[int(m.argmax())], motion_confidence=float(m.max()))
                    text += f"  motion: {out['motion_label']} {m.max():.2f}"
            if show:
                from ..viz.annotate import draw

                shown = draw(rgb, kp, pred.sk, f"{text}  {fps:.1f} fps")
                cv2.imshow("hybridpose", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            yield out
    finally:
        cap.release()
        if show:
            cv2.destroyAllWindows()
