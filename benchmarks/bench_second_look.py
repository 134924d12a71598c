"""A second look before "nobody" (``extract --second-look``): what it recovers, what it finds where nothing is, its cost.

    .venv/bin/python benchmarks/bench_second_look.py [--hands DIR] [--bodies DIR] [--json PATH]
    .venv/bin/python benchmarks/bench_second_look.py --smoke

For each pose model (--hands: MediaPipe Hands on a folder of hand photos, default ../shared/data/hands14;
--bodies: MediaPipe Pose and the multi-person model on a folder of body photos, default ../shared/data/yoga8):
the photos the first look finds nobody (no hand) in, and how many of them the second look recovers (their
paths are printed, to check by eye). False finds: the left 35 % of each hand photo (a webcam frame's room,
often with a person's edge) is cut out, and the second look runs on the strips the first look finds nothing
in; every find is printed (a real hand or person cut by the strip's edge is not a false one: look). Time:
seconds per photo of a first look and of a second look, each model warmed first, the second look timed on
the photos it runs on (the misses, or the strips). --smoke: tests/data/hands and data/sample, numbers
meaningless.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

HANDS = _common.REPO.parent / "shared" / "data" / "hands14"
SMOKE_HANDS = _common.REPO / "tests" / "data" / "hands"


def timed_looks(estimator: type, photos: list[str]) -> tuple[list[bool], float]:
    """Whether ``estimator`` finds someone in each photo, and its seconds per photo (warmed on the first)."""
    import numpy as np

    from hybridpose.data.images import open_rgb

    images = [np.asarray(open_rgb(p)) for p in photos]
    with estimator() as est:
        if images:
            est.landmarks(images[0])
        t0 = time.perf_counter()
        found = [est.landmarks(im) is not None for im in images]
    return found, (time.perf_counter() - t0) / max(len(images), 1)


def strips(photos: list[str], dest: Path) -> list[str]:
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(photos):
        with Image.open(p) as im:
            f = dest / f"strip_{i:04d}.jpg"
            im.convert("RGB").crop((0, 0, int(0.35 * im.width), im.height)).save(f, quality=95)
            out.append(str(f))
    return out


def one_model(name: str, skeleton: str, max_people: int, photos: list[str], negatives: list[str]) -> dict:
    from hybridpose.pose.frontend import estimator_class, retry_class

    first = estimator_class(skeleton, max_people)
    second = retry_class(first, "second_look_of")
    found, t_first = timed_looks(first, photos)
    misses = [p for p, f in zip(photos, found) if not f]
    again, t_second = timed_looks(second, misses)
    recovered = [p for p, f in zip(misses, again) if f]
    neg_found, _ = timed_looks(first, negatives)
    empty = [p for p, f in zip(negatives, neg_found) if not f]
    neg_again, t_neg = timed_looks(second, empty)
    false = [p for p, f in zip(empty, neg_again) if f]
    print(f"{name}: recovered {recovered}\n{name}: found in strips {false}\n")
    return {"model": f"{first.name} -> {second.name}", "photos": len(photos), "nobody": len(misses),
            "recovered": len(recovered), "strips_nobody": len(empty), "strip_finds": len(false),
            "s_first": t_first, "s_second_on_misses": t_second if misses else None, "s_second_on_strips": t_neg,
            "recovered_paths": recovered, "strip_find_paths": false}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hands", help=f"class folders of hand photos (default {HANDS})")
    ap.add_argument("--bodies", help="class folders of body photos (default ../shared/data/yoga8)")
    ap.add_argument("--json")
    _common.add_smoke_arg(ap, "tests/data/hands and 8 photos of data/sample")
    args = ap.parse_args()
    keep = _common.setup_env()
    _common.apply_smoke(args)
    from hybridpose.data.datasets import list_images

    hands_dir = Path(args.hands) if args.hands else SMOKE_HANDS if args.smoke else HANDS
    hands = [str(p) for p in list_images(hands_dir)]
    bodies = [str(p) for p in list_images(_common.resolve_data(args.bodies, args.smoke))]
    if args.smoke:
        bodies = _common.spread(bodies, 8)
    negatives = strips(hands, Path(keep.name) / "strips")
    print(_common.busy_warning("at start") + "\n")
    rows = {"hands": one_model("hands", "hand", 1, hands, negatives),
            "body, single": one_model("body, single", "body", 1, bodies, negatives),
            "body, --max-people 4": one_model("body, --max-people 4", "body", 4, bodies, negatives)}
    _common.print_table("second look (" + _common.busy_warning("") + ")",
                        ["model", "photos", "nobody", "recovered", "strips w/o find", "strip finds", "s/photo first",
                         "s/photo second (misses)", "s/photo second (strips)"],
                        [[k, r["photos"], r["nobody"], r["recovered"], r["strips_nobody"], r["strip_finds"], r["s_first"],
                          r["s_second_on_misses"] if r["s_second_on_misses"] is not None else "", r["s_second_on_strips"]]
                         for k, r in rows.items()])
    _common.smoke_check(all(r["photos"] > 0 for r in rows.values()), "every model looked at photos")
    _common.finish(args, {"models": rows, "machine": _common.machine_info()})


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
