"""Several people per photo: tiles of real one-person photos, each person's row matched to its tile.

    .venv/bin/python benchmarks/bench_people.py --model RUN [--data DIR] [--n 96] [--json PATH]
    .venv/bin/python benchmarks/bench_people.py --model RUN --keypoints [--data DIR]
    .venv/bin/python benchmarks/bench_people.py --smoke [--model RUN]

Tiles mode. Photos of --data (class folders; spread over the classes) in which the multi-person model finds
exactly one person are each letterboxed into a square cell (grey borders) and pasted 2 x 1 and 2 x 2.
Every photo is predicted alone (the original file; --max-people 4, and the single-person model) and in its
tiles (--max-people 4). A row of a tile belongs to the cell that holds its box's centre: a cell with no row
is a person missed, a cell with more than one is a person found twice (the surest row is the one scored).
Per-person top-1 (the label of the person's row against its photo's folder) in the tiles against alone: the
goal is within 1 point. Photos of the run's own training set (its poses.csv) are left out unless
--all-photos. Speed: photos/s of `HybridPoseClassifier.predict` (in-process, fresh pose cache) on the photos
alone with the single-person model and with the multi-person one, and on the 2 x 1 and 2 x 2 tiles, the four
timed in turn --rounds times (median).
Keypoints mode: the multi-person model's largest person against the single-person model on every photo of
--data: mean absolute difference (normalised x, y) and the photos where only one of them finds a person.
--smoke: data/sample, a few photos, a tiny run fitted first when --model is not given; numbers meaningless.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

CELL = 400


def letterbox(path: str):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    s = CELL / max(im.width, im.height)
    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
    cell = Image.new("RGB", (CELL, CELL), (127, 127, 127))
    cell.paste(im, ((CELL - im.width) // 2, (CELL - im.height) // 2))
    return cell


def make_tiles(paths: list[str], cols: int, rows: int, dest: Path) -> list[tuple[Path, list[str]]]:
    """Tiles of ``cols`` x ``rows`` cells, each photo once (a short last group is dropped)."""
    from PIL import Image

    k = cols * rows
    out = []
    dest.mkdir(parents=True, exist_ok=True)
    for t in range(len(paths) // k):
        group = paths[t * k:(t + 1) * k]
        tile = Image.new("RGB", (cols * CELL, rows * CELL))
        for j, p in enumerate(group):
            tile.paste(letterbox(p), ((j % cols) * CELL, (j // cols) * CELL))
        f = dest / f"tile{cols}x{rows}_{t:03d}.jpg"
        tile.save(f, quality=95)
        out.append((f, group))
    return out


def timed_predict(clf, paths: list[str], max_people: int | None, cache: Path):
    clf.max_people, clf.cache_dir = max_people, cache
    clf.predict(paths[:1])  # warm-up: pose model made, first network call
    clf.cache_dir = cache / f"fresh-{time.time_ns()}"
    t0 = time.perf_counter()
    table = clf.predict(paths)
    return table, time.perf_counter() - t0


def label_of(path: str) -> str:
    return Path(path).parent.name


def score_tiles(table, tiles: list[tuple[Path, list[str]]], cols: int) -> dict:
    """Each cell's rows; missed, found twice, per-person labels."""
    rows_by_tile = {str(f): table[table["path"] == str(f)] for f, _ in tiles}
    missed = twice = right = 0
    persons = 0
    for f, group in tiles:
        rows = rows_by_tile[str(f)]
        rows = rows[rows["status"] == "ok"]
        cx = ((rows["box_x0"] + rows["box_x1"]) / 2 // CELL).astype(int)
        cy = ((rows["box_y0"] + rows["box_y1"]) / 2 // CELL).astype(int)
        cell = (cy * cols + cx).to_numpy()
        for j, p in enumerate(group):
            mine = rows[cell == j]
            persons += 1
            if mine.empty:
                missed += 1
                continue
            twice += len(mine) > 1
            best = mine.loc[mine["person_score"].idxmax()] if mine["person_score"].notna().any() else mine.iloc[0]
            right += best["class"] == label_of(p)
    return {"persons": persons, "missed": missed, "found_twice": twice, "top1": right / max(persons, 1),
            "rows": int(sum(len(r) for r in rows_by_tile.values()))}


def tiles_mode(args, tmp: Path) -> dict:
    import pandas as pd

    from hybridpose.data.datasets import list_images
    from hybridpose.inference.classifier import HybridPoseClassifier
    from hybridpose.pose.frontend import extract

    data = _common.resolve_data(args.data, args.smoke)
    photos = [str(p) for p in list_images(data)]
    if not args.all_photos:
        trained = set(pd.read_csv(Path(args.model) / "poses.csv")["sha256"])
        poses = extract(photos, cache_dir=tmp / "c0", max_people=1, show_progress=False)
        photos = [p for p, s in zip(poses["path"], poses["sha256"]) if s not in trained]
    people = extract(photos, cache_dir=tmp / "c1", max_people=4, show_progress=False)
    count = people[people["status"] == "ok"].groupby("path").size()
    one = [p for p in photos if count.get(p, 0) == 1]
    chosen = _common.spread(one, args.n)
    chosen = [chosen[i] for i in _interleave(len(chosen))]  # neighbouring cells hold different classes
    print(f"{len(photos)} photos of {data} (held out of the run), {len(one)} with exactly one person found; "
          f"{len(chosen)} used")
    print(_common.busy_warning("at start") + "\n")
    two = make_tiles(chosen, 2, 1, tmp / "tiles")
    four = make_tiles(chosen, 2, 2, tmp / "tiles")
    clf = HybridPoseClassifier.load(args.model)
    times: dict[str, list[float]] = {"s": [], "a": [], "t2": [], "t4": []}
    for r in range(args.rounds):  # the four in turn, each round: a load that comes and goes skews all alike
        alone1, t = timed_predict(clf, chosen, None, tmp / f"s{r}")
        times["s"].append(t)
        alone, t = timed_predict(clf, chosen, 4, tmp / f"a{r}")
        times["a"].append(t)
        t2_table, t = timed_predict(clf, [str(f) for f, _ in two], 4, tmp / f"t2{r}")
        times["t2"].append(t)
        t4_table, t = timed_predict(clf, [str(f) for f, _ in four], 4, tmp / f"t4{r}")
        times["t4"].append(t)
    t_single, t_alone, t_two, t_four = (statistics.median(times[k]) for k in ("s", "a", "t2", "t4"))
    alone = alone[alone["status"] == "ok"].sort_values("person_score").groupby("path").tail(1).set_index("path")
    alone_top1 = float((alone.loc[chosen, "class"] == [label_of(p) for p in chosen]).mean())
    single_top1 = float((alone1["class"].to_numpy() == [label_of(p) for p in chosen]).mean())
    s2, s4 = score_tiles(t2_table, two, 2), score_tiles(t4_table, four, 2)
    n_alone = len(chosen)
    _common.print_table("per-person top-1 (held-out photos)", ["set", "persons", "top-1", "missed", "found twice", "rows"], [
        ["alone, single-person model", n_alone, single_top1, "", "", len(alone1)],
        ["alone, --max-people 4", n_alone, alone_top1, "", "", n_alone],
        ["2 x 1 tiles", s2["persons"], s2["top1"], s2["missed"], s2["found_twice"], s2["rows"]],
        ["2 x 2 tiles", s4["persons"], s4["top1"], s4["missed"], s4["found_twice"], s4["rows"]],
    ])
    for name, s in (("2 x 1", s2), ("2 x 2", s4)):
        print(f"goal: {name} top-1 within 1 point of alone: {100 * (s['top1'] - alone_top1):+.1f} points")
    speed = [["alone, single-person model", n_alone, n_alone / t_single, n_alone / t_single],
             ["alone, --max-people 4", n_alone, n_alone / t_alone, n_alone / t_alone],
             ["2 x 1 tiles (2 people)", len(two), len(two) / t_two, 2 * len(two) / t_two],
             ["2 x 2 tiles (4 people)", len(four), len(four) / t_four, 4 * len(four) / t_four]]
    _common.print_table(f"\nspeed (in-process, fresh pose cache, median of {args.rounds} rounds taken in turn; "
                        + _common.busy_warning("") + ")",
                        ["input", "photos", "photos/s", "people/s"], speed)
    _common.smoke_check(s2["persons"] > 0 and len(alone1) == n_alone, "tiles predicted, one row per photo alone")
    return {"photos": n_alone, "alone_single_top1": single_top1, "alone_top1": alone_top1, "tiles_2x1": s2,
            "tiles_2x2": s4, "speed": {r[0]: {"photos_per_s": r[2], "people_per_s": r[3]} for r in speed}}


def _interleave(n: int) -> list[int]:
    """0, n/2, 1, n/2 + 1, ...: the class-sorted photos mixed so that a tile's cells differ in class."""
    half = (n + 1) // 2
    return [i for pair in zip(range(half), range(half, n)) for i in pair] + ([half - 1] if n % 2 else [])


def keypoints_mode(args, tmp: Path) -> dict:
    import numpy as np

    from hybridpose.data.datasets import list_images
    from hybridpose.pose.frontend import extract, keypoints_array

    data = _common.resolve_data(args.data, args.smoke)
    photos = [str(p) for p in list_images(data)]
    if args.smoke:
        photos = _common.spread(photos, 8)
    t0 = time.perf_counter()
    old = extract(photos, cache_dir=tmp / "k0", max_people=1, show_progress=False)
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = extract(photos, cache_dir=tmp / "k1", max_people=4, show_progress=False)
    t_new = time.perf_counter() - t0
    main = new.assign(area=(new["box_x1"] - new["box_x0"]) * (new["box_y1"] - new["box_y0"]))
    main = main.sort_values("area").groupby("path").tail(1).set_index("path").loc[photos].reset_index()
    a, b = keypoints_array(old, "body"), keypoints_array(main, "body")
    size = old[["width", "height"]].to_numpy(float)[:, None, :]
    both = (old["status"] == "ok").to_numpy() & (main["status"] == "ok").to_numpy()
    diff = np.abs(a[both, :, :2] - b[both, :, :2]) / size[both]
    per_photo = diff.mean(axis=(1, 2))
    only_old = int(((old["status"] == "ok") & (main["status"] != "ok")).sum())
    only_new = int(((old["status"] != "ok") & (main["status"] == "ok")).sum())
    several = int((new[new["status"] == "ok"].groupby("path").size() > 1).sum())
    _common.print_table(f"keypoints on {len(photos)} photos of {data}: multi-person model (largest person) vs single-person",
                        ["measure", "value"], [
                            ["both find a person", int(both.sum())], ["mean abs difference (x, y / size)", float(diff.mean())],
                            ["median per photo", float(np.median(per_photo))], ["photos with a difference > 0.01", int((per_photo > 0.01).sum())],
                            ["only the single-person model finds one", only_old], ["only the multi-person model finds one", only_new],
                            ["photos with more than one person (multi)", several],
                            ["seconds, single-person (fresh cache)", t_old], ["seconds, multi-person (fresh cache)", t_new]])
    _common.smoke_check(bool(both.any()), "both models found people")
    return {"photos": len(photos), "both": int(both.sum()), "mean_abs_diff": float(diff.mean()),
            "median_per_photo": float(np.median(per_photo)), "over_0.01": int((per_photo > 0.01).sum()),
            "only_single": only_old, "only_multi": only_new, "several_people": several, "seconds_single": t_old,
            "seconds_multi": t_new}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a photo run (required unless --smoke)")
    ap.add_argument("--data", help="class folders of photos (default ../shared/data/yoga8)")
    ap.add_argument("--n", type=int, default=96, help="photos used (multiple of 4)")
    ap.add_argument("--keypoints", action="store_true", help="compare the two pose models' keypoints instead")
    ap.add_argument("--all-photos", action="store_true", help="also the run's own training photos")
    ap.add_argument("--rounds", type=int, default=3, help="speed: the four inputs timed in turn, this many times")
    ap.add_argument("--json")
    _common.add_smoke_arg(ap, "8 photos of data/sample")
    args = ap.parse_args()
    keep = _common.setup_env()
    _common.apply_smoke(args, n=8, all_photos=True, rounds=1)
    tmp = Path(keep.name)
    if args.keypoints:
        return _common.finish(args, {"mode": "keypoints", **keypoints_mode(args, tmp), "machine": _common.machine_info()}) and None
    if args.model is None:
        if not args.smoke:
            sys.exit("--model RUN is required (or --smoke)")
        from hybridpose.train.fit import fit

        args.model = str(tmp / "run")
        sample = _common.subset_folder(_common.SAMPLE_DATA, 3, tmp / "sample")
        fit(sample, args.model, folds=2, preset="tiny", show_progress=False)
    _common.finish(args, {"mode": "tiles", **tiles_mode(args, tmp), "machine": _common.machine_info()})


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
