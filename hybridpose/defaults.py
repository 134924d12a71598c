"""Every default in one place: the CLI's options and the library's signatures both read them here."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defaults:
    folds: int = 5                 # cross-validation folds (one image network each)
    preset: str = "quick"          # training preset (train/config.py PRESETS)
    skeleton: str = "body"
    batch_size: int = 32           # photos per prediction batch
    fps: float = 4.0               # frames per second sampled from a video: a squat (~2 s) gets ~8 frames
    min_frames: int = 48           # ... but at least this many from a clip (all of them if it has fewer): a
                                   # 1-second swipe at 4 fps would give 4 frames, too few for its path; on
                                   # egogestar (1-7 s gestures) 16 gave 0.946 out of fold, 32 0.955, 48 0.973
    image_frames: int = 8          # fit on clips: frames per clip the image branch trains on (the keypoint
                                   # branches read every sampled frame); 0: all of them
    pose_workers: int = 1          # fit / extract: processes running the pose model
    predict_workers: int | None = None  # predict: processes that decode, pose and crop; None: one per CPU core
    min_gain: float = 0.02         # calibrate: a rule must improve its pair's out-of-fold accuracy by this much,
    min_fired: int = 3             # ... decide at least this many photos,
    alpha: float = 0.05            # ... and pass a sign test at alpha / statistics scanned
    cam_method: str = "hirescam"
    explain_limit: int = 48        # explain: at most this many photos or clips
    top_k: int = 5                 # top-k columns of the prediction table
    max_people: int = 4            # predict / extract: a row per person found, up to this many (1: the single-person model)
    tracker: str = "norfair"       # videos with several people: the multi-object tracker (benchmarks/bench_tracks.py)
    person: str = "largest"        # fit: whose pose a training photo's label belongs to when several people are found
    serve_host: str = "127.0.0.1"  # serve: this machine only unless told otherwise
    serve_port: int = 8000
    serve_max_upload_mb: float = 32.0  # serve: the largest request body (all its files together)
    serve_max_files: int = 32      # serve: files in one request
    serve_timeout_s: float = 60.0  # serve: a prediction's time, its wait for the model included
    serve_queue: int = 8           # serve: predictions admitted at once (running or waiting); 503 beyond


DEFAULTS = Defaults()

# CAM methods, by name: stage 3 of training computes them in-graph (train/cam.py); `explain` draws them
# with pytorch-grad-cam's classes, named here.
CAM_METHODS = {"hirescam": "HiResCAM", "xgradcam": "XGradCAM", "gradcam": "GradCAM"}
