"""The `hybridpose` command: a thin layer over the library."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from hybridpose.errors import HybridPoseError
from hybridpose.progress import console

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Which pose is the person in the photo holding, at every level of a class hierarchy.",
)



@app.callback()
def _root() -> None:
    """hybridpose: fit, calibrate, predict, evaluate and explain pose classifiers."""


WorkersOpt = typer.Option(1, "--workers", "-j", min=1, help="Processes running the pose model.")
CacheOpt = typer.Option(None, "--cache", help="Pose cache folder (default $HYBRIDPOSE_CACHE or ~/.cache/hybridpose).")


@app.command()
def extract(
    data: Path = typer.Argument(..., help="An image, or a folder of images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for poses.csv and summary.json."),
    workers: int = WorkersOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Find the person and their 33 keypoints in every image: one row per file in OUT/poses.csv."""
    from hybridpose.api import extract_folder

    table, summary = extract_folder(data, out, workers=workers, cache_dir=cache)
    _print_summary(summary, out / "poses.csv")


@app.command()
def fit(
    data: Path = typer.Argument(..., help="Image folder (one sub-folder per class) or a Yoga-82 list file."),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Run directory (rerun the same command to resume)."),
    folds: int = typer.Option(5, "--folds", "-k", min=2, help="Cross-validation folds (one image model each)."),
    preset: str = typer.Option("quick", "--preset", help="quick (CPU, minutes), full (GPU, long schedule) or tiny (tests)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Any timm model name (default efficientnet_lite0)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="State dict to start the backbone from."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Download timm hub weights (needs a network)."),
    epochs: Optional[str] = typer.Option(None, "--epochs", help="Epochs of stages 1,2,3, e.g. 8,6,4."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Crop size fed to the CNN."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    cam_method: Optional[str] = typer.Option(None, "--cam-method", help="Stage-3 CAM: hirescam, xgradcam or gradcam."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    hierarchy: Optional[Path] = typer.Option(None, "--hierarchy", help="Hierarchy CSV (default DATA/hierarchy.csv)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image root for a Yoga-82 list."),
    flip_pairs: Optional[str] = typer.Option(None, "--flip-pairs", help="Left/right class pairs swapped by a mirror, LEFT:RIGHT,..."),
    workers: int = WorkersOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Train the image branch per fold, the keypoint branch and their fusion; out-of-fold predictions included."""
    from hybridpose.train.fit import fit as run_fit

    overrides = dict(backbone=backbone, weights=str(weights) if weights else None, pretrained=pretrained or None,
                     input_size=input_size, batch_size=batch_size, cam_method=cam_method, device=device, seed=seed)
    overrides.update(_stage_epochs(preset, epochs))
    summary = run_fit(data, out, folds=folds, preset=preset, hierarchy=hierarchy, images=images,
                      flip_pairs=flip_pairs, workers=workers, cache_dir=cache, **overrides)
    _print_fit(summary, out)


def _stage_epochs(preset: str, epochs: Optional[str]) -> dict:
    if not epochs:
        return {}
    from dataclasses import replace

    from hybridpose.train.config import make_config

    parts = [int(e) for e in epochs.split(",")]
    if len(parts) != 3:
        raise typer.BadParameter("give three numbers, e.g. --epochs 8,6,4")
    base = make_config(preset)
    return {f"stage{i}": replace(base.stage(i), epochs=n) for i, n in enumerate(parts, start=1)}


def _print_fit(summary: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"out-of-fold top-1 ({summary['n_images']} photos)")
    levels = list(next(iter(summary["oof_top1"].values())))
    table.add_column("branch")
    for lv in levels:
        table.add_column(lv, justify="right")
    for branch, accs in summary["oof_top1"].items():
        table.add_row(branch, *(f"{accs[lv]:.3f}" for lv in levels))
    console.print(table)
    console.print(f"CAM energy on the body (validation): {summary['cam_inside_val']}")
    console.print(f"run saved in {out} ({summary['seconds']:.0f} s); next: hybridpose calibrate {out}")


def _print_summary(summary: dict, path: Path) -> None:
    counts = ", ".join(f"{k}: {v}" for k, v in summary["status"].items())
    console.print(f"[bold]{summary['images']}[/] images ({counts}) in {summary['seconds']:.1f} s -> {path}")


def main() -> None:
    try:
        app()
    except HybridPoseError as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is saved; run the same command again to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
