"""No traceback on any input, nothing silently missing (tracker items 8-10), through the `hybridpose` command.

8. Every entry under an input folder gets a row with a status and a reason: broken links, link loops, a
   link to a folder that leads back up, a FIFO, HEIC photos (real and garbage), .mp4, .txt, empty and
   truncated JPEGs, a folder named x.jpg, files and folders nobody may read; nothing but regular files is
   opened, so a FIFO never hangs a run (every run here has a timeout).
9. A damaged pose cache (garbage file, malformed database, bad entries) is moved aside or recomputed; the
   run goes on and says where the cache lives.
10. Temporaries left by killed writers are removed on the next write of the same output.

Each test checks the exit code, that no traceback was printed, and that earlier outputs are intact.
Permission cases need a non-root user (root reads everything): they are marked and, as root, covered by
a simulated "permission denied" instead.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import hybridpose.atomic as atomic
import hybridpose.pose.frontend as pose_mod
import hybridpose_cli.main as cli_main
from corpus import PHOTO, SECOND_PHOTO, heif_available, make_entry_corpus, running_as_root
from hybridpose.pose.estimators.mediapipe_pose import POSE_VERSION

ROOT = Path(__file__).resolve().parents[1]
needs_non_root = pytest.mark.skipif(running_as_root(), reason="root reads every file and lists every folder")
TIMEOUT = 300  # seconds; a run that opened the FIFO would wait for a writer forever


def run_cli(*args: object, timeout: int = TIMEOUT, prelude: str = "pass") -> tuple[int, str]:
    """`hybridpose ARGS` in a subprocess with a timeout (``prelude``: Python run before the command)."""
    code = f"import sys; {prelude}; sys.argv = ['hybridpose', *sys.argv[1:]]; from hybridpose_cli.main import main; main()"
    try:
        proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hybridpose {' '.join(map(str, args))} did not finish in {timeout} s (opened a FIFO?): {e.output}")
    return proc.returncode, proc.stdout + proc.stderr


def cli_in_process(monkeypatch, capsys, *args: object) -> tuple[int, str]:
    """`hybridpose ARGS` in this process (for tests that patch the file system); no FIFO may be involved."""
    monkeypatch.setattr(sys, "argv", ["hybridpose", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli_main.main()
    captured = capsys.readouterr()
    return (0 if info.value.code is None else int(info.value.code)), captured.out + captured.err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def earlier_outputs(folder: Path) -> dict[str, bytes]:
    """An output folder holding earlier results that a later run must not touch."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.md").write_text("written by hand before the run\n")
    (folder / "old_predictions.csv").write_text("path,status\nx.jpg,ok\n")
    return snapshot(folder)


def assert_clean(code: int, text: str, expected_code: int = 0) -> None:
    assert code == expected_code, text
    assert "Traceback" not in text, text


def rows_by_entry(table: pd.DataFrame, root: Path) -> dict[str, tuple[str, str]]:
    return {str(Path(p).relative_to(root)): (s, r) for p, s, r in zip(table["path"], table["status"], table["reason"])}


@pytest.fixture(scope="module")
def entry_corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("entries")
    return directory, make_entry_corpus(directory)


# --- item 8: every entry gets a row --------------------------------------------------------------------


def test_corpus_holds_every_case(entry_corpus):
    """The corpus really contains what the other tests claim to cover."""
    directory, expected = entry_corpus
    assert (directory / "fifo.jpg").is_fifo()
    assert (directory / "broken_link.jpg").is_symlink() and not (directory / "broken_link.jpg").exists()
    with pytest.raises(OSError) as info:
        (directory / "loop_a.jpg").stat()
    assert info.value.errno == errno.ELOOP
    assert (directory / "sub" / "up").resolve() == directory.resolve()
    assert (directory / "folder.jpg").is_dir()
    assert (directory / "empty.jpg").stat().st_size == 0
    if heif_available():
        with Image.open(directory / "iphone.heic") as img:
            assert img.format == "HEIF"
    assert len(expected) == (15 if running_as_root() else 17)


def test_extract_folder_gives_every_entry_a_row(entry_corpus, tmp_path):
    directory, expected = entry_corpus
    out = tmp_path / "out"
    before = earlier_outputs(out)
    code, text = run_cli("extract", directory, "--out", out)
    assert_clean(code, text)
    table = pd.read_csv(out / "poses.csv", keep_default_na=False)
    rows = rows_by_entry(table, directory)
    assert {k: s for k, (s, _) in rows.items()} == expected
    for name, (status, reason) in rows.items():
        assert status == "ok" or reason.strip(), name
    assert f"{len(expected)} files" in text
    assert {k: v for k, v in snapshot(out).items() if k in before} == before


def test_extract_reasons_say_what_the_entry_is(entry_corpus, tmp_path):
    directory, _ = entry_corpus
    code, text = run_cli("extract", directory, "--out", tmp_path)
    assert_clean(code, text)
    rows = rows_by_entry(pd.read_csv(tmp_path / "poses.csv", keep_default_na=False), directory)
    assert "missing.jpg" in rows["broken_link.jpg"][1]
    assert "link loop" in rows["loop_a.jpg"][1] and "link loop" in rows["loop_b.jpg"][1]
    assert "not followed" in rows["sub/up"][1]
    assert "FIFO" in rows["fifo.jpg"][1]
    assert "folder" in rows["folder.jpg"][1]
    assert ".mp4" in rows["clip.mp4"][1] and ".txt" in rows["notes.txt"][1]
    assert "zero-byte" in rows["empty.jpg"][1]
    assert "truncated" in rows["truncated.jpg"][1]


@pytest.mark.parametrize("name, status", [("fifo.jpg", "not_a_file"), ("broken_link.jpg", "broken_link"),
                                          ("loop_a.jpg", "broken_link"), ("clip.mp4", "unsupported")])
def test_extract_one_entry_given_directly(entry_corpus, tmp_path, name, status):
    directory, _ = entry_corpus
    out = tmp_path / "out"
    before = earlier_outputs(out)
    code, text = run_cli("extract", directory / name, "--out", out, timeout=120)
    assert_clean(code, text)
    table = pd.read_csv(out / "poses.csv", keep_default_na=False)
    assert list(table["status"]) == [status] and table["reason"].iloc[0].strip()
    assert {k: v for k, v in snapshot(out).items() if k in before} == before


def test_heic_without_decoder_is_unsupported_with_advice(entry_corpus, tmp_path):
    """Without pillow-heif (its import blocked here) a HEIC photo gets an `unsupported` row saying what to install."""
    directory, _ = entry_corpus
    code, text = run_cli("extract", directory / "iphone.heic", "--out", tmp_path, timeout=120,
                         prelude="sys.modules['pillow_heif'] = None")
    assert_clean(code, text)
    row = pd.read_csv(tmp_path / "poses.csv", keep_default_na=False).iloc[0]
    assert row["status"] == "unsupported"
    assert "pip install pillow-heif" in row["reason"]


@pytest.mark.skipif(not heif_available(), reason="pillow-heif is not installed")
def test_heic_photo_is_read(entry_corpus, tmp_path):
    directory, _ = entry_corpus
    code, text = run_cli("extract", directory / "iphone.heic", "--out", tmp_path, timeout=120)
    assert_clean(code, text)
    row = pd.read_csv(tmp_path / "poses.csv").iloc[0]
    with Image.open(PHOTO) as img:
        assert (row["status"], row["width"], row["height"]) == ("ok", *img.size)


def test_predict_folder_gives_every_entry_a_row(entry_corpus, tiny_run, tmp_path):
    directory, expected = entry_corpus
    out = tmp_path / "predictions.csv"
    before = earlier_outputs(tmp_path)
    code, text = run_cli("predict", directory, "--model", tiny_run, "--out", out)
    assert_clean(code, text)
    table = pd.read_csv(out, keep_default_na=False)
    rows = rows_by_entry(table, directory)
    assert {k: s for k, (s, _) in rows.items()} == expected
    for name, (status, reason) in rows.items():
        assert status == "ok" or reason.strip(), name
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_predict_fifo_given_directly(entry_corpus, tiny_run, tmp_path):
    directory, _ = entry_corpus
    out = tmp_path / "predictions.csv"
    code, text = run_cli("predict", directory / "fifo.jpg", "--model", tiny_run, "--out", out, timeout=120)
    assert_clean(code, text)
    assert list(pd.read_csv(out)["status"]) == ["not_a_file"]


@needs_non_root
def test_unreadable_file_and_folder_get_rows(tmp_path):
    photos = tmp_path / "photos"
    (photos / "locked").mkdir(parents=True)
    (photos / "ok.jpg").write_bytes(PHOTO.read_bytes())
    (photos / "no_read.jpg").write_bytes(PHOTO.read_bytes())
    (photos / "locked" / "inside.jpg").write_bytes(PHOTO.read_bytes())
    (photos / "no_read.jpg").chmod(0)
    (photos / "locked").chmod(0)
    try:
        code, text = run_cli("extract", photos, "--out", tmp_path / "out")
    finally:
        (photos / "locked").chmod(0o755)
    assert_clean(code, text)
    rows = rows_by_entry(pd.read_csv(tmp_path / "out" / "poses.csv", keep_default_na=False), photos)
    assert rows["no_read.jpg"] == ("unreadable", "cannot read file (Permission denied)")
    assert rows["locked"] == ("unreadable", "cannot list folder (Permission denied)")
    assert rows["ok.jpg"][0] == "ok"


def test_unreadable_file_and_folder_get_rows_simulated(tmp_path, monkeypatch, capsys):
    """The same as the non-root test for root too: the OS answers "permission denied" for one file and one folder."""
    photos = tmp_path / "photos"
    (photos / "locked").mkdir(parents=True)
    (photos / "ok.jpg").write_bytes(PHOTO.read_bytes())
    (photos / "no_read.jpg").write_bytes(PHOTO.read_bytes())
    (photos / "locked" / "inside.jpg").write_bytes(PHOTO.read_bytes())
    denied_file, denied_folder = str(photos / "no_read.jpg"), str(photos / "locked")
    real_open, real_scandir = os.open, os.scandir

    def os_open(path, *args, **kwargs):
        if os.fspath(path) == denied_file:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied_file)
        return real_open(path, *args, **kwargs)

    def scandir(path="."):
        if os.fspath(path) == denied_folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied_folder)
        return real_scandir(path)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    before = earlier_outputs(out)
    code, text = cli_in_process(monkeypatch, capsys, "extract", photos, "--out", out)
    assert_clean(code, text)
    rows = rows_by_entry(pd.read_csv(out / "poses.csv", keep_default_na=False), photos)
    assert rows == {"locked": ("unreadable", "cannot list folder (Permission denied)"),
                    "no_read.jpg": ("unreadable", "cannot read file (Permission denied)"),
                    "ok.jpg": ("ok", "")}
    assert {k: v for k, v in snapshot(out).items() if k in before} == before


def test_unlistable_input_folder_is_one_clear_line(tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(photos):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(photos))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    before = earlier_outputs(out)
    code, text = cli_in_process(monkeypatch, capsys, "extract", photos, "--out", out)
    assert_clean(code, text, expected_code=2)
    assert f"{photos}: cannot read folder (Permission denied)" in text
    assert snapshot(out) == before


# --- item 9: a damaged pose cache ------------------------------------------------------------------------


@pytest.fixture
def two_photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO.read_bytes())
    (folder / "b.jpg").write_bytes(SECOND_PHOTO.read_bytes())
    return folder


class _NoModel:
    """Stands in for the pose model where the result must come from the cache."""

    name, version, skeleton_name = "mediapipe_pose", POSE_VERSION, "body"

    def __init__(self, *a, **k):
        raise AssertionError("the pose model ran although the result should come from the cache")


def _extract(monkeypatch, capsys, photos: Path, out: Path, cache: Path) -> tuple[int, str, pd.DataFrame | None]:
    monkeypatch.setenv("HYBRIDPOSE_CACHE", str(cache))  # not --cache: the command checks that one up front
    code, text = cli_in_process(monkeypatch, capsys, "extract", photos, "--out", out)
    table = pd.read_csv(out / "poses.csv", keep_default_na=False) if (out / "poses.csv").exists() else None
    return code, text, table


def _corrupt_page(db: Path, page: int = 2) -> None:
    """Overwrite one page of a SQLite file (its tables' b-tree) with garbage."""
    with sqlite3.connect(db) as con:
        size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xa5" * size)


@pytest.mark.parametrize("damage", ["garbage_file", "malformed_database"])
def test_damaged_cache_database_is_moved_aside_and_rebuilt(two_photos, tmp_path, monkeypatch, capsys, damage):
    cache = tmp_path / "cache"
    code, text, first = _extract(monkeypatch, capsys, two_photos, tmp_path / "out1", cache)
    assert_clean(code, text)
    db = cache / "poses.sqlite"
    if damage == "garbage_file":
        db.write_bytes(b"this is not a database\n" * 100)
    else:
        _corrupt_page(db)
    damaged = db.read_bytes()
    earlier = snapshot(tmp_path / "out1")
    code, text, second = _extract(monkeypatch, capsys, two_photos, tmp_path / "out2", cache)
    assert_clean(code, text)
    pd.testing.assert_frame_equal(first, second)  # recomputed: the same table
    aside = sorted(cache.glob("poses.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # the damaged file is kept, untouched
    note = " ".join(text.split())
    assert f"pose cache {db} was damaged" in note and f"moved it to {aside[0]}" in note
    assert snapshot(tmp_path / "out1") == earlier
    # the rebuilt cache works: a third run is served from it (the pose model may not run), silently
    monkeypatch.setitem(pose_mod.ESTIMATORS, "mediapipe_pose", _NoModel)
    code, text, third = _extract(monkeypatch, capsys, two_photos, tmp_path / "out3", cache)
    assert_clean(code, text)
    assert "pose cache" not in text
    pd.testing.assert_frame_equal(first, third)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM pose").fetchone()[0] == 2
    con.close()


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"status": "ok", "reason": "", "width": 1, "height": 1}),
                                 json.dumps({"status": "ok", "reason": "", "width": 1, "height": 1, "box": "abcd",
                                             "keypoints": [[1, 2, 3, 4]]})],
                         ids=["bad_json", "missing_box", "box_not_numbers"])
def test_bad_cache_entry_is_recomputed_and_replaced(two_photos, tmp_path, monkeypatch, capsys, bad):
    cache = tmp_path / "cache"
    code, text, first = _extract(monkeypatch, capsys, two_photos, tmp_path / "out1", cache)
    assert_clean(code, text)
    db = cache / "poses.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE pose SET result = ?", (bad,))
    con.close()
    code, text, second = _extract(monkeypatch, capsys, two_photos, tmp_path / "out2", cache)
    assert_clean(code, text)
    pd.testing.assert_frame_equal(first, second)
    assert f"pose cache {db}: 2 damaged entries; recomputing them." in " ".join(text.split())
    with sqlite3.connect(db) as con:
        stored = [r for (r,) in con.execute("SELECT result FROM pose")]
    con.close()
    assert len(stored) == 2 and bad not in stored and all(json.loads(r)["box"] for r in stored)
    assert not list(cache.glob("poses.sqlite.corrupt-*"))  # entries are replaced, the file is kept


def test_cache_that_cannot_be_created_runs_without_it(two_photos, tmp_path, monkeypatch, capsys):
    """$HYBRIDPOSE_CACHE under a regular file (works as root too, unlike a read-only folder)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, text, table = _extract(monkeypatch, capsys, two_photos, tmp_path / "out", blocker / "cache")
    assert_clean(code, text)
    assert list(table["status"]) == ["ok", "ok"]
    lines = [line for line in text.splitlines() if "pose cache" in line]
    assert len(lines) == 1 and "running without it" in lines[0] and str(blocker / "cache") in lines[0]
    assert blocker.read_text() == "not a folder"


@needs_non_root
def test_read_only_cache_folder_runs_without_it(two_photos, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        code, text, table = _extract(monkeypatch, capsys, two_photos, tmp_path / "out", cache)
    finally:
        cache.chmod(0o755)
    assert_clean(code, text)
    assert list(table["status"]) == ["ok", "ok"]
    assert "running without it" in text


def test_damaged_cache_during_predict(entry_corpus, tiny_run, tmp_path):
    directory, expected = entry_corpus
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "poses.sqlite").write_bytes(b"garbage" * 500)
    code, text = run_cli("predict", directory, "--model", tiny_run, "--out", tmp_path / "p.csv", "--cache", cache)
    assert_clean(code, text)
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(expected)
    assert f"pose cache {cache / 'poses.sqlite'} was damaged" in " ".join(text.split())
    assert len(list(cache.glob("poses.sqlite.corrupt-*"))) == 1


# --- item 10: temporaries of killed writers ---------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out" / "poses.csv"
    kill = ("import os, signal, sys; from hybridpose.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1]) as fh:\n    fh.write('half'); fh.flush(); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", kill, str(target)], cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = list(target.parent.glob(".poses.csv.*.tmp"))
    assert len(left) == 1 and not target.exists()  # what the tracker saw: a hidden temporary, forever
    atomic.write_text(target, "complete\n")
    assert target.read_text() == "complete\n"
    assert not list(target.parent.glob(".*.tmp"))


def test_stale_temporaries_removed_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    host = atomic._HOST
    dead, live = _dead_pid(), os.getpid()
    old = 1_000_000_000  # 2001: older than STALE_AGE

    def temp(name: str, mtime: float | None = None) -> Path:
        path = out / name
        path.write_bytes(b"")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    earlier = earlier_outputs(out)
    stale = [temp(f".poses.csv.{dead}-{host}-abc123_x.tmp"),           # killed writer on this machine
             temp(".poses.csv.k2j4_x9q.tmp", old),                      # old-style name, untouched for long
             temp(f".poses.csv.{live}-0badf00d-abc123_x.tmp", old)]    # another machine's, untouched for long
    kept = [temp(f".poses.csv.{live}-{host}-abc123_x.tmp", old),          # a live writer, however old
            temp(f".poses.csv.{dead}-0badf00d-abc123_x.tmp"),           # another machine's, recent
            temp(".poses.csv.k3j4_x9q.tmp"),                            # old-style name, recent
            temp(f".summary.json.{dead}-{host}-abc123_x.tmp"),          # another output's
            temp(f".poses.csv.bak.{dead}-{host}-abc123_x.tmp"),         # the temporary of `poses.csv.bak`
            temp(".poses.csv.notes.tmp", old)]                          # not a name atomic writes
    atomic.write_csv(out / "poses.csv", pd.DataFrame({"a": [1]}))
    assert [p.name for p in stale if p.exists()] == []
    assert [p.name for p in kept if not p.exists()] == []
    assert (out / "poses.csv").read_text() == "a\n1\n"
    assert {k: v for k, v in snapshot(out).items() if k in earlier} == earlier


def test_extract_removes_stale_temporaries_of_its_outputs(two_photos, tmp_path):
    out = tmp_path / "out"
    before = earlier_outputs(out)
    host, dead = atomic._HOST, _dead_pid()
    stale = [out / f".poses.csv.{dead}-{host}-abcdefgh.tmp", out / f".summary.json.{dead}-{host}-abcdefgh.tmp"]
    live = out / f".poses.csv.{os.getpid()}-{host}-abcdefgh.tmp"
    for p in [*stale, live]:
        p.write_bytes(b"")
    code, text = run_cli("extract", two_photos, "--out", out)
    assert_clean(code, text)
    assert not any(p.exists() for p in stale)
    assert live.exists()
    assert len(pd.read_csv(out / "poses.csv")) == 2
    assert {k: v for k, v in snapshot(out).items() if k in before} == before
