"""The `hybridpose` command: a thin layer over the library."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from hybridpose.defaults import DEFAULTS
from hybridpose.errors import HybridPoseError
from hybridpose.progress import console
from hybridpose.train.config import (
    MIN_BATCH_SIZE,
    MIN_INPUT_SIZE,
    CamMethod,
    Device,
    FitOptions,
    Preset,
    TrainConfig,
)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Which pose is the person in the photo holding, at every level of a class hierarchy.",
)



def _version(value: bool) -> None:
    if value:
        from hybridpose import __version__

        typer.echo(f"hybridpose {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="Print the version and exit."),
) -> None:
    """hybridpose: fit, calibrate, predict, evaluate and explain pose classifiers."""


def _skeleton_name(value: str) -> str:
    from hybridpose.skeletons import available

    if value.lower().endswith((".yaml", ".yml")):  # a described skeleton, read (and checked) by the command
        return value
    if value not in available():
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, available()))}, "
                                 "nor a skeleton description (.yaml).")
    return value


def _with_hands(skeleton: str, hands: int) -> str:
    """``--hands 2`` turns the one-hand skeleton into the two-hand one."""
    if hands == 1:
        return skeleton
    if skeleton != "hand":
        raise typer.BadParameter("--hands 2 goes with --skeleton hand.", param_hint="'--hands'")
    return "two_hands"


def _writable(path: Optional[Path], kind: str, what: str = "--out") -> None:
    """An output that cannot be written fails here, before any work (hybridpose.outputs)."""
    from hybridpose.outputs import check_writable

    if path is not None:
        check_writable(path, kind, what)


class Format(str, Enum):
    csv = "csv"
    json = "json"


WorkersOpt = typer.Option(DEFAULTS.pose_workers, "--workers", "-j", min=1, help="Processes running the pose model.")
SkeletonOpt = typer.Option(DEFAULTS.skeleton, "--skeleton", callback=_skeleton_name,
                           help="Which keypoints the front end finds (hybridpose.skeletons): body, hand, two_hands, "
                                "or a skeleton description FILE.yaml (with --keypoints).")
HandsOpt = typer.Option(1, "--hands", min=1, max=2, help="With --skeleton hand: 1 (the larger hand) or 2 (both).")
KeypointsOpt = typer.Option(None, "--keypoints", help="Read keypoints from this CSV/JSON file instead of running "
                            "the pose model (docs/FORMATS.md).")
UnitsOpt = typer.Option("pixels", "--keypoint-units", help="Coordinates in the --keypoints file: pixels or normalized.")
CacheOpt = typer.Option(None, "--cache", help="Pose cache folder (default $HYBRIDPOSE_CACHE or ~/.cache/hybridpose).")


@app.command()
def extract(
    data: Path = typer.Argument(..., help="An image, or a folder of images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for poses.csv and summary.json."),
    workers: int = WorkersOpt,
    cache: Optional[Path] = CacheOpt,
    skeleton: str = SkeletonOpt,
    hands: int = HandsOpt,
    keypoints: Optional[Path] = KeypointsOpt,
    keypoint_units: str = UnitsOpt,
    max_people: int = typer.Option(DEFAULTS.max_people, "--max-people", min=1, help="A row per person found, up to this many, with its index (left to right) and score; 1: the single-person model, one row per file."),
    second_look: bool = typer.Option(False, "--second-look", help="A photo where nobody (no hand) was found gets a second look: a lower detection threshold (and a padded or zoomed view), kept only when the landmark model is sure. Off by default: see docs/RESULTS.md."),
) -> None:
    """Find the people and their keypoints in every image: one row per person (or per file) in OUT/poses.csv."""
    from hybridpose.pose.extraction import extract_folder

    _writable(out, "folder")
    _writable(cache, "folder", "--cache")
    table, summary = extract_folder(data, out, workers=workers, cache_dir=cache, skeleton=_with_hands(skeleton, hands),
                                    keypoints=keypoints, keypoint_units=keypoint_units, max_people=max_people,
                                    second_look=second_look)
    _print_summary(summary, out / "poses.csv")


class PersonChoice(str, Enum):
    largest = "largest"
    center = "center"


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


ExecutorOpt = typer.Option(FitOptions.executor, "--executor", help="Where the pieces run: local (this process) or ray (a Ray cluster; docs/SCALING.md).")
AddressOpt = typer.Option(None, "--address", help="With --executor ray: auto joins the running cluster, ray://HOST:10001 a remote one; none: start a local Ray.")
TrackOpt = typer.Option(None, "--track", help="Log to this MLflow tracking URI, e.g. sqlite:///mlflow.db or a folder (default $HYBRIDPOSE_TRACKING_URI; none: no tracking; docs/TRACKING.md).")


@app.command()
def fit(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Image folder (one sub-folder per class) or a Yoga-82 list file."),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Run directory (rerun the same command to resume)."),
    folds: int = typer.Option(DEFAULTS.folds, "--folds", "-k", min=2, help="Cross-validation folds (one image model each)."),
    preset: Preset = typer.Option(TrainConfig.preset, "--preset", help="quick (CPU, minutes), full (GPU, long schedule) or tiny (tests)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Any timm model name (default efficientnet_lite0)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="State dict to start the backbone from."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Download timm hub weights (needs a network)."),
    epochs: Optional[str] = typer.Option(None, "--epochs", help="Epochs of stages 1,2,3, e.g. 8,6,4."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help=f"Crop size fed to the CNN (at least {MIN_INPUT_SIZE}; default: the preset's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Photos per training batch (at least {MIN_BATCH_SIZE}; default: the preset's)."),
    cam_method: Optional[CamMethod] = typer.Option(None, "--cam-method", help=f"Stage-3 CAM (default {TrainConfig.cam_method})."),
    cam_weight: Optional[float] = typer.Option(None, "--cam-weight", min=0.0, help=f"Weight of stage 3's CAM loss (default {TrainConfig.cam_weight:g}; 0: plain fine-tuning)."),
    device: Optional[Device] = typer.Option(None, "--device", help=f"auto: the GPU when there is one, else the CPU (default {TrainConfig.device})."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0),
    hierarchy: Optional[Path] = typer.Option(None, "--hierarchy", help="Hierarchy CSV (default DATA/hierarchy.csv)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root for a Yoga-82 list."),
    flip_pairs: Optional[str] = typer.Option(None, "--flip-pairs", help="Left/right class pairs swapped by a mirror, LEFT:RIGHT,..."),
    workers: int = WorkersOpt,
    cache: Optional[Path] = CacheOpt,
    skeleton: str = SkeletonOpt,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of fit options (e.g. tune's best.yaml); options given here override it."),
    executor: ExecutorName = ExecutorOpt,
    address: Optional[str] = AddressOpt,
    cpus_per_fold: float = typer.Option(FitOptions.cpus_per_fold, "--cpus-per-fold", min=0.0, help="With --executor ray: CPUs a fold task asks for."),
    gpus_per_fold: float = typer.Option(FitOptions.gpus_per_fold, "--gpus-per-fold", min=0.0, help="With --executor ray: GPUs a fold task asks for (e.g. 1, or 0.5 to share one)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.01, help="Clips: frames sampled per second of video (default 4)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Clips: N frames spread evenly over each clip (instead of --fps)."),
    min_frames: Optional[int] = typer.Option(None, "--min-frames", min=0, help=f"Clips: with --fps, at least this many frames from a short clip, spread evenly (default {DEFAULTS.min_frames}; 0: none)."),
    image_frames: Optional[int] = typer.Option(None, "--image-frames", min=0, help=f"Clips: frames per clip the image branch trains on (default {DEFAULTS.image_frames}; 0: every sampled frame); the keypoint branches read them all."),
    groups: Optional[Path] = typer.Option(None, "--groups", help="CSV of 'path,group': samples of one group (subject, session) share a fold."),
    clips: bool = typer.Option(False, "--clips", help="Sub-folders of frames inside class folders are clips (automatic when DATA holds a video)."),
    hands: int = HandsOpt,
    keypoints: Optional[Path] = KeypointsOpt,
    keypoint_units: str = UnitsOpt,
    max_people: int = typer.Option(FitOptions.max_people, "--max-people", min=1, help="Above 1: find every person of a training photo (the multi-person pose model) and give the label to one of them (--person); 1: the single-person model."),
    person: PersonChoice = typer.Option(FitOptions.person, "--person", help="With --max-people above 1: the person a photo's label belongs to, the largest or the one nearest the centre."),
    track: Optional[str] = TrackOpt,
    second_look: bool = typer.Option(FitOptions.second_look, "--second-look", help="A training photo where nobody (no hand) was found gets a second look (a lower detection threshold, a padded or zoomed view; kept only when the landmark model is sure); recorded in the run, so predict does the same. docs/RESULTS.md has what it recovers."),
) -> None:
    """Train the image branch per fold, the keypoint branch and their fusion; out-of-fold predictions included."""
    from hybridpose.train.config import read_fit_config, stage_epochs, train_overrides
    from hybridpose.train.fit import fit as run_fit

    given = _from_file(ctx, read_fit_config(config) if config else {})
    preset_name = given("preset", preset.value)
    overrides = dict(backbone=backbone, weights=str(weights) if weights else None, pretrained=pretrained or None,
                     input_size=input_size, batch_size=batch_size, cam_method=cam_method and cam_method.value,
                     cam_weight=cam_weight, device=device and device.value, seed=seed)
    overrides.update(stage_epochs(preset_name, epochs))
    if config:  # the file's training settings, under those given on the command line
        file_train = train_overrides(read_fit_config(config), preset_name)
        overrides = {**file_train, **{k: v for k, v in overrides.items() if v is not None}}
    _writable(out, "folder")
    _writable(cache, "folder", "--cache")
    clip_opts = {"fps": fps, "frames": frames, "groups": groups, "force": clips, "min_frames": min_frames,
                 "image_frames": image_frames}
    clip_opts = clip_opts if any(v not in (None, False) for v in clip_opts.values()) else None
    summary = run_fit(data, out, folds=given("folds", folds), preset=preset_name, hierarchy=given("hierarchy", hierarchy),
                      images=given("images", images), flip_pairs=given("flip_pairs", flip_pairs),
                      workers=given("workers", workers), cache_dir=given("cache", cache),
                      skeleton=_with_hands(given("skeleton", skeleton), hands), executor=given("executor", executor.value),
                      address=given("address", address), cpus_per_fold=given("cpus_per_fold", cpus_per_fold),
                      gpus_per_fold=given("gpus_per_fold", gpus_per_fold), clips=clip_opts,
                      keypoints=keypoints, keypoint_units=keypoint_units,
                      max_people=given("max_people", max_people), person=getattr(given("person", person), "value", given("person", person)),
                      track=track, second_look=given("second_look", second_look), **overrides)
    if not summary.get("already_complete"):  # else fit said so, in one line
        _print_fit(summary, out)


def _from_file(ctx: typer.Context, values: dict):
    """``given(name, value)``: the command line's value when the option was typed, else the file's, else the default."""
    def given(name: str, value):  # by the source's name: typer may carry its own copy of click
        typed = getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
        return value if typed or name not in values else values[name]
    return given


def _print_fit(summary: dict, out: Path) -> None:
    from rich.table import Table

    unit = "clips" if "n_clips" in summary else "photos"
    table = Table(title=f"out-of-fold top-1 ({summary['n_images']} {unit})")
    levels = list(next(iter(summary["oof_top1"].values())))
    table.add_column("branch")
    for lv in levels:
        table.add_column(lv, justify="right")
    for branch, accs in summary["oof_top1"].items():
        table.add_row(branch, *(f"{accs[lv]:.3f}" for lv in levels))
    console.print(table)
    cam = ", ".join(f"after {s.replace('stage', 'stage ')} {v:.3f}" for s, v in summary["cam_inside_oof"].items())
    console.print(f"share of CAM energy on the keypoint body region, out-of-fold photos: {cam}")
    for note in summary.get("notes", []):
        console.print(note)
    if "several_people" in summary:
        console.print(f"{summary['several_people']} training photos showed more than one person (the label went to one, --person).")
    console.print(f"run saved in {out} ({summary['seconds']:.0f} s); next: hybridpose calibrate {out}")


@app.command()
def tune(
    data: Path = typer.Argument(..., help="Image folder (one sub-folder per class) or a Yoga-82 list file."),
    study: str = typer.Option(..., "--study", help="Optuna storage, e.g. sqlite:///study.db (a rerun continues the study)."),
    trials: int = typer.Option(20, "--trials", "-n", min=1, help="Finished trials the study should hold (a rerun runs only the missing ones)."),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="Folder for the trials' runs, trials.csv and best.yaml."),
    folds: int = typer.Option(3, "--folds", "-k", min=2, help="Folds of each trial's fit (the objective is its out-of-fold macro-F1)."),
    preset: Preset = typer.Option(TrainConfig.preset, "--preset", help="The settings not searched, and the centre of the learning-rate search."),
    backbones: Optional[str] = typer.Option(None, "--backbones", help="Backbones to choose from, comma-separated timm names (default: the preset's)."),
    input_sizes: Optional[str] = typer.Option(None, "--input-sizes", help="Input sizes to choose from, e.g. 160,224 (default: the preset's)."),
    epochs: Optional[str] = typer.Option(None, "--epochs", help="Epochs of stages 1,2,3 in every trial, e.g. 8,6,4."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Photos per training batch (at least {MIN_BATCH_SIZE})."),
    device: Optional[Device] = typer.Option(None, "--device"),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the sampler and of every trial's fit."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Name of the study in the storage (default hybridpose-<data folder>)."),
    hierarchy: Optional[Path] = typer.Option(None, "--hierarchy", help="Hierarchy CSV (default DATA/hierarchy.csv)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root for a Yoga-82 list."),
    cache: Optional[Path] = CacheOpt,
    skeleton: str = SkeletonOpt,
    executor: ExecutorName = ExecutorOpt,
    address: Optional[str] = AddressOpt,
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", min=0.0, help="With --executor ray: CPUs a trial task asks for."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", min=0.0, help="With --executor ray: GPUs a trial task asks for."),
    track: Optional[str] = TrackOpt,
) -> None:
    """Search learning rates, CAM and SupCon weights, crop margins, input size and backbone with Optuna."""
    from hybridpose.train.config import stage_epochs
    from hybridpose.train.tune import SearchSpace
    from hybridpose.train.tune import tune as run_tune

    if not all(v.isdigit() for v in _csv(input_sizes)):
        raise typer.BadParameter(f"{input_sizes!r}: give whole numbers of pixels, e.g. 160,224.", param_hint="'--input-sizes'")
    space = SearchSpace(preset=preset.value, backbones=_csv(backbones), input_sizes=[int(v) for v in _csv(input_sizes)])
    fixed = {k: v for k, v in dict(batch_size=batch_size, device=device and device.value).items() if v is not None}
    fixed.update(stage_epochs(preset.value, epochs))
    _writable(out, "folder")
    res = run_tune(data, out, storage=study, trials=trials, folds=folds, space=space, study_name=study_name,
                   executor=executor.value, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                   seed=seed, hierarchy=hierarchy, images=images, skeleton=skeleton, cache_dir=cache, track=track,
                   **fixed)
    console.print(f"study {res['study']}: {res['trials']} trial(s), {res['complete']} complete, {res['pruned']} pruned "
                  f"-> {res['trials_csv']}")
    if res["best"]:
        console.print(f"best: trial {res['best']['trial']}, out-of-fold leaf macro-F1 {res['best']['value']:.4f} "
                      f"-> {res['best_yaml']}; next: hybridpose fit {data} --config {res['best_yaml']}")


def _csv(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@app.command()
def calibrate(
    run: Path = typer.Argument(..., help="Run directory written by `hybridpose fit`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the rules here (a .yaml file or a folder, e.g. rules/)."),
    min_gain: float = typer.Option(DEFAULTS.min_gain, "--min-gain", min=0.0, max=1.0, help="Keep a rule only if it improves its pair's out-of-fold accuracy by this much."),
    min_fired: int = typer.Option(DEFAULTS.min_fired, "--min-fired", min=1, help="... and decides at least this many photos."),
    alpha: float = typer.Option(DEFAULTS.alpha, "--alpha", min=0.0, max=1.0,
                                help="... and passes a one-sided sign test at this level, Bonferroni-corrected over "
                                     "the statistics scanned (fixes significantly more photos than it breaks)."),
    statistics: Optional[str] = typer.Option(None, "--statistics", help="Consider only these statistics: "
                                             "NAME[,NAME...], globs allowed (e.g. 'net_path_index_tip_*,turning_*'); "
                                             "the sign test's bar then counts only these. Default: all but frame_*."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be found; write nothing."),
    track: Optional[str] = TrackOpt,
) -> None:
    """Find threshold rules on keypoint statistics for the sibling classes the model confuses."""
    from rich.table import Table

    from hybridpose.rules.runs import calibrate as run_calibrate

    res = run_calibrate(run, out=out, dry_run=dry_run, min_gain=min_gain, min_fired=min_fired, alpha=alpha,
                        statistics=_csv(statistics) or None, track=track)
    table = Table(title="confusable sibling pairs (out-of-fold photos where the fused top-2 is the pair)",
                  caption=f"decided_by: the test that settled the pair (min_fired {min_fired}, min_gain {min_gain}, "
                          f"sign_test at alpha {alpha} / statistics scanned) or kept if it passed all")
    for col in ("pair", "confused", "fired", "scanned", "statistic", "threshold", "before", "after", "gain", "decided_by",
                "kept"):
        table.add_column(col, justify="left" if col in ("pair", "statistic") else "right")
    for r in res["table"].itertuples(index=False):
        table.add_row(str(r.pair), str(r.n_confused), str(r.n_fired), str(r.n_scanned), str(r.statistic or "-"),
                      _num(r.threshold),
                      _num(r.accuracy_before), _num(r.accuracy_after), _num(r.gain), str(r.decided_by),
                      "yes" if r.kept else f"no: {r.why}")
    console.print(table)
    console.print(f"{len(res['rules'].rules)} rule(s). Cross-validated leaf top-1 (rules calibrated on the other folds): "
                  f"fused {res['cv_before']:.4f} -> fused + rules {res['cv_after']:.4f}, {res['cv_fired']} photo(s) decided by a rule.")
    for backup in res["backups"]:
        console.print(f"kept your edited {Path(backup).with_suffix('').name} as {backup}")
    for path in res["written"]:
        console.print(f"wrote {path}")
    if dry_run:
        console.print("dry run: nothing written.")


def _num(v) -> str:
    try:
        return "-" if v != v else f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


@app.command()
def predict(
    inputs: Optional[Path] = typer.Argument(None, help="An image or a folder (searched recursively); with a clip run also a video, a frame folder, or a folder of them."),
    model: Path = typer.Option(..., "--model", "-m", help="Run directory written by `hybridpose fit`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output table (default predictions.csv, predictions.jsonl with --format json)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules file (default RUN/rules.yaml when present)."),
    no_rules: bool = typer.Option(False, "--no-rules", help="Fused prediction without rules."),
    fmt: Format = typer.Option("csv", "--format", help="csv, or json (one JSON object per line)."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size", min=1, help="Photos per batch."),
    cache: Optional[Path] = CacheOpt,
    partial: bool = typer.Option(False, "--partial", help="Predict with the finished folds of an incomplete run (noted in every row)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="What runs the image networks: onnxruntime (a bundle's ONNX graph, or a run's, built from its checkpoints on first use into RUN/onnx/) or torch (a run's checkpoints, for checking); default: onnxruntime wherever it is installed, else torch."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=0, help="Local: processes that decode, pose and crop photos while the networks run on the cores left (default: one per CPU core; 0: all in one process). With --executor ray: model actors, each loading the run once (default 1)."),
    executor: ExecutorName = ExecutorOpt,
    address: Optional[str] = AddressOpt,
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0.0, help="With --executor ray: CPUs per model actor."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="With --executor ray: GPUs per model actor."),
    per_frame: Optional[Path] = typer.Option(None, "--per-frame", help="Clip run: also write this per-frame table (frame, time, label, confidence, smoothed) and FILE_segments.csv."),
    annotate: Optional[Path] = typer.Option(None, "--annotate", help="Clip run: write the first clip as an .mp4 with the skeleton and the running label (several people: each one's box, track id and label)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.01, help="Clip run: frames sampled per second (default: the run's)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Clip run: N frames spread evenly over each clip."),
    camera: Optional[str] = typer.Option(None, "--camera", help="Run live on camera N (OpenCV), or on a video file standing in for one; q quits."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="With --camera: stop after this many frames."),
    show: bool = typer.Option(True, "--show/--no-show", help="With --camera: draw the frames in a window."),
    realtime: bool = typer.Option(True, "--realtime/--every-frame", help="With --camera FILE: play the file at its own frame rate and drop the frames the loop has no time for, as a camera would (default), or label every frame."),
    keypoints: Optional[Path] = KeypointsOpt,
    keypoint_units: str = UnitsOpt,
    max_people: Optional[int] = typer.Option(None, "--max-people", min=1, help=f"Photos: a row (crop, keypoints, label) per person found, up to this many, with its index (left to right), box and score (default {DEFAULTS.max_people}). Clips and --camera: above 1, every person tracked across the frames and labelled as a clip of its own (a row per track, column `track`; default 1, one person per clip). 1: the single-person model."),
    tracker: Optional[str] = typer.Option(None, "--tracker", help="Clips and --camera with --max-people above 1: the multi-object tracker that keeps each person's id (norfair, or bytetrack with supervision<0.27; default norfair, docs/CLIPS.md)."),
    second_look: Optional[bool] = typer.Option(None, "--second-look/--no-second-look", help="Photos: one where nobody (no hand) was found gets a second look (lower detection threshold, padded or zoomed view; kept only when the landmark model is sure). Default: as the run was fitted (fit --second-look)."),
) -> None:
    """Label every photo at every hierarchy level: one row per person found (a photo with nobody: one row), whatever the file holds."""
    from hybridpose.inference.api import predict as run_predict

    _writable(cache, "folder", "--cache")

    def on_frame(f: dict) -> None:
        people = "".join(f"  #{p['track']}: {p['label']} {p['confidence']:.2f}" for p in f.get("people") or [])
        said = people.strip() or f"{f['label']} {f['confidence']:.2f}"
        rule = f" [rule {f['rule']}]" if f.get("rule") else ""
        console.print(f"frame {f['frame']}: {said}{rule} ({f['fps']:.1f} frames/s, {f.get('dropped', 0)} dropped)")

    res = run_predict(inputs, model, out, rules=rules, no_rules=no_rules, fmt=fmt.value, batch_size=batch_size,
                      cache_dir=cache, partial=partial, engine=engine, workers=workers, executor=executor.value,
                      address=address, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                      per_frame=per_frame, annotate=annotate, fps=fps, frames=frames, camera=camera,
                      max_frames=max_frames, show=show, on_frame=on_frame, keypoints=keypoints,
                      keypoint_units=keypoint_units, max_people=max_people, tracker=tracker, realtime=realtime,
                      second_look=second_look)
    _print_predict(res, camera)


def _print_predict(res: dict, camera: Optional[str]) -> None:
    if res["kind"] == "camera":
        if not res["frames"]:
            console.print(f"--camera {camera}: no frame read.")
        else:
            console.print(f"--camera {camera}: {res['frames']} frames labelled at {res['fps']:.1f} frames/s, "
                          f"{res['dropped']} dropped")
        return
    counts = ", ".join(f"{k}: {v}" for k, v in res["status"].items())
    if res["kind"] == "ray":
        people = _rows_note(res["images"], res.get("rows"))
        console.print(f"{res['images']} files{people} ({counts}) -> {res['out']} ({res['shards']} Parquet shard(s)"
                      + (f", {res['csv']})" if res["csv"] else ")"))
        return
    rules = f" (rules: {res['rules']})" if res["rules"] else ""
    if res["kind"] == "clips":
        tracks = f", {res['rows']} people tracked" if res.get("rows", res["clips"]) != res["clips"] else ""
        console.print(f"{res['clips']} clips{tracks} ({counts}) -> {res['out']}{rules}")
        if res.get("per_frame"):
            console.print(f"per frame: {res['per_frame']}, segments: {res['segments']} ({res['smoothing']})")
        if res["annotated"]:
            console.print(f"annotated video: {res['annotated']}")
        return
    if res["missing_folds"]:
        console.print(f"[yellow]warning:[/] folds {res['missing_folds']} of the run have no model; "
                      "predicted with the others (column `ensemble`).")
    console.print(f"{res['images']} files{_rows_note(res['images'], res.get('rows'))} ({counts}) -> {res['out']}{rules}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory written by `hybridpose fit`."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder: ONNX image model, keypoint model, fusion, rules, manifest."),
    partial: bool = typer.Option(False, "--partial", help="Export the finished folds of an incomplete run."),
    int8: bool = typer.Option(False, "--int8", help="Quantize the image networks to int8 (ONNX Runtime, calibrated on the run's own crops): faster, see docs/FORMATS.md for what it costs in accuracy."),
) -> None:
    """Export a run as a portable bundle that predict, evaluate and explain accept (docs/FORMATS.md)."""
    from hybridpose.export import export as run_export

    _writable(out, "folder")
    manifest = run_export(run, out, partial=partial, int8=int8)
    what = "CLIPS" if manifest["kind"] == "clips" else "PHOTOS"
    precision = " (int8)" if manifest["image_model"]["precision"]["precision"] == "int8" else ""
    console.print(f"bundle of {len(manifest['image_model']['folds'])} fold network(s){precision} + "
                  f"{', '.join(b for b in manifest['branches'] if b != 'image')} in {out}; "
                  f"next: hybridpose predict {what} --model {out}")


@app.command()
def serve(
    run: Path = typer.Argument(..., help="Run directory written by `hybridpose fit` (or an exported bundle)."),
    host: str = typer.Option(DEFAULTS.serve_host, "--host", help="Address to listen on (default: this machine only; 0.0.0.0: every network the machine is on)."),
    port: int = typer.Option(DEFAULTS.serve_port, "--port", help="Port (0: any free port; the address is printed)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules file (default RUN/rules.yaml when present)."),
    no_rules: bool = typer.Option(False, "--no-rules", help="Fused prediction without rules."),
    partial: bool = typer.Option(False, "--partial", help="Serve the finished folds of an incomplete run."),
    engine: Optional[str] = typer.Option(None, "--engine", help="What runs the image networks (as predict's --engine)."),
    max_upload_mb: float = typer.Option(DEFAULTS.serve_max_upload_mb, "--max-upload-mb", help="Largest request body in MB (413 beyond)."),
    max_files: int = typer.Option(DEFAULTS.serve_max_files, "--max-files", help="Files in one request (413 beyond)."),
    timeout: float = typer.Option(DEFAULTS.serve_timeout_s, "--timeout", help="Seconds a prediction may take, its wait included (504 beyond)."),
    queue: int = typer.Option(DEFAULTS.serve_queue, "--queue", help="Predictions admitted at once, running or waiting (503 beyond)."),
) -> None:
    """Serve a run: POST /predict, GET /health, GET /model and a web page at / (docs/SERVE.md)."""
    from hybridpose.serve import require

    require()
    from hybridpose.serve.app import Limits
    from hybridpose.serve.server import is_loopback
    from hybridpose.serve.server import serve as run_serve

    limits = Limits(max_upload_bytes=int(max_upload_mb * 1e6), timeout_s=timeout, queue=queue, max_files=max_files)
    if not is_loopback(host):
        console.print(f"[yellow]warning:[/] --host {host}: other machines can reach this server; it has no login.")

    def started(url: str) -> None:
        console.print(f"serving {run} at {url}/ (POST /predict, GET /health, GET /model); Ctrl-C stops", soft_wrap=True)

    run_serve(run, host=host, port=port, limits=limits, rules=rules, no_rules=no_rules, partial=partial,
              engine=engine, on_start=started)


@app.command()
def evaluate(
    target: Path = typer.Argument(..., help="A run directory (its out-of-fold predictions), a labelled folder or Yoga-82 list (with --model), or a predictions CSV (with --data)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Run directory, to evaluate on a labelled data set."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled folder, to evaluate a predictions CSV."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root for a Yoga-82 list."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (tables, PNGs, report.html)."),
    track: Optional[str] = TrackOpt,
    max_people: int = typer.Option(DEFAULTS.max_people, "--max-people", min=1, help="A labelled data set with --model: find up to this many people per photo, as predict does; the label's person is scored (--person), the others listed apart. 1: the single-person model."),
    person: Optional[PersonChoice] = typer.Option(None, "--person", help="Whose row of a photo with several people is scored: largest or center (default: the run's fit --person, else largest)."),
) -> None:
    """Accuracy, top-5 and macro-F1 per level, per-class table, confusion matrices, ablation, label review, report.html."""
    from rich.table import Table

    from hybridpose.evaluation.evaluate import evaluate as run_evaluate

    res = run_evaluate(target, model=model, out=out, data=data, images=images, track=track, max_people=max_people,
                       person=person.value if person is not None else None)
    table = Table(title=res["title"])
    for col in ("branch", "level", "photos", "abstained", "top-1", "top-1 all", "top-5", "macro-F1"):
        table.add_column(col, justify="left" if col in ("branch", "level") else "right")
    for r in res["metrics"]:
        table.add_row(r["branch"], r["level"], str(r["n"]), str(r.get("n_abstained", 0)), _num(r["top1"]),
                      _num(r.get("top1_all")), _num(r["top5"]), _num(r["macro_f1"]))
    console.print(table)
    console.print("top-1: on the photos the branch answered; top-1 all: abstentions (no person found) count as wrong.")
    if res.get("other_people"):
        console.print(f"{res['other_people']} more people in the labelled photos were not scored (the "
                      f"{res['person_scored']} one of each photo was): {Path(res['out']) / 'other_people.csv'}")
    console.print(f"report: {res['report']}")


@app.command()
def explain(
    inputs: Path = typer.Argument(..., help="An image or a folder of images."),
    model: Path = typer.Option(..., "--model", "-m", help="Run directory written by `hybridpose fit`."),
    out: Path = typer.Option(Path("explain"), "--out", "-o", help="Output folder for the PNGs."),
    method: CamMethod = typer.Option(TrainConfig.cam_method, "--method", help="Class activation map."),
    tsne: Optional[Path] = typer.Option(None, "--tsne", help="Also plot a t-SNE of the embeddings of this labelled folder."),
    limit: int = typer.Option(DEFAULTS.explain_limit, "--limit", min=1, help="At most this many photos."),
    max_people: int = typer.Option(DEFAULTS.max_people, "--max-people", min=1, help="Photos: explain every person found, up to this many (a photo with several also gets NAME_people.png, each person's skeleton and label); 1: the single-person model."),
) -> None:
    """Per photo: crop with keypoints, CAM overlay of the predicted class, top-5 and the rule that fired."""
    from hybridpose.explanation import explain as run_explain

    _writable(out, "folder")
    if tsne is not None:  # checked now, not after every explanation was drawn
        from hybridpose.data.datasets import load_dataset

        load_dataset(tsne)
    res = run_explain(inputs, model, out, method=method.value, tsne=tsne, limit=limit, max_people=max_people)
    several = f" ({len(res['people'])} photos with several people: NAME_people.png)" if res.get("people") else ""
    console.print(f"{res.get('explanations', res['photos'])} explanations in {out}{several}; contact sheet {res['contact_sheet']}"
                  + (f"; t-SNE {res['tsne']}" if "tsne" in res else ""))


def _rows_note(files: int, rows: int | None) -> str:
    return f", {rows} rows (a row per person)" if rows is not None and rows != files else ""


def _print_summary(summary: dict, path: Path) -> None:
    counts = ", ".join(f"{k}: {v}" for k, v in summary["status"].items())
    people = _rows_note(summary["images"], summary.get("rows"))
    console.print(f"[bold]{summary['images']}[/] files{people} ({counts}) in {summary['seconds']:.1f} s -> {path}")


# click's ClickException: the click package's, or the copy of click that newer typer versions carry.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _error(message: str) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def main() -> None:
    """Run the app; every error a user can act on is one line (usage errors: exit 2), never a traceback."""
    try:
        code = app(standalone_mode=False)
    except _USAGE_ERROR as e:  # a bad option value, a missing argument, an unknown command
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # the help was printed
        ctx = getattr(e, "ctx", None)
        message = e.format_message().replace("Value error, ", "")  # typer's pydantic-based checks add it
        _error(message + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""))
        sys.exit(e.exit_code)
    except typer.Abort:
        code = 130
    except HybridPoseError as e:
        _error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    except OSError as e:  # the machine, not the input: a full disk, a vanished folder
        _error(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""))
        sys.exit(1)
    if code == 130:
        console.print("[yellow]interrupted[/]: finished work is saved; run the same command again to resume.")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
