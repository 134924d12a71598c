"""The one pose-cache protocol: hash each photo, look its result up by (content hash, model version),
compute only what is missing, store it. ``PoseCache`` is the SQLite file; ``look_up`` is the first two steps."""
from __future__ import annotations

import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..data.content import default_cache_dir, sha256_of_regular_file
from ..data.sources import classify
from .estimators.mediapipe_pose import POSE_VERSION  # the cache's default version
from .result import PoseResult


def first_look(paths: Sequence[str]) -> tuple[list[PoseResult | None], list[str | None]]:
    """Per path: a final result where the file cannot be read (decided without opening anything that is
    not a regular file), else None; and the content hash of each readable file."""
    results: list[PoseResult | None] = []
    shas: list[str | None] = []
    for p in paths:
        entry = classify(Path(p))
        sha = None
        if not entry.readable:
            results.append(PoseResult(entry.status, entry.reason))
        else:
            try:
                sha = sha256_of_regular_file(p)
                results.append(None)
            except OSError as e:
                results.append(PoseResult("unreadable", f"cannot read file ({e.strerror or e})"))
        shas.append(sha)
    return results, shas


@dataclass
class Lookup:
    """What is known of some photos before any pose model runs."""
    first: list[PoseResult | None]   # a final result where the file cannot be read, else None
    shas: list[str | None]           # content hash of each readable file
    hits: dict[str, PoseResult]      # cached results by content hash

    def cached(self, i: int) -> PoseResult | None:
        sha = self.shas[i]
        return self.hits.get(sha) if sha else None

    def known(self, i: int) -> PoseResult | None:
        """The photo's result if nothing needs computing, else None."""
        return self.first[i] or self.cached(i)

    def todo(self) -> list[int]:
        """Photos whose pose must be computed: one per content hash (a copy takes its twin's)."""
        seen: set[str] = set()
        out = []
        for i, sha in enumerate(self.shas):
            if self.known(i) is None and sha not in seen:
                seen.add(sha)  # type: ignore[arg-type]
                out.append(i)
        return out

    def fresh(self, results: Sequence[PoseResult]) -> list[tuple[str, PoseResult]]:
        """The computed ``results`` (one per photo) that the cache lacks, to store."""
        return [(sha, r) for first, sha, r in zip(self.first, self.shas, results)
                if first is None and sha and sha not in self.hits]


def look_up(paths: Sequence[str], cache: "PoseCache | None") -> Lookup:
    """Hash ``paths`` (files that cannot be read get their final result) and look the hashes up in ``cache``."""
    first, shas = first_look([str(p) for p in paths])
    hits = cache.get_many(sorted({s for s in shas if s})) if cache is not None else {}
    return Lookup(first, shas, hits)


class PoseCache:
    """Results keyed by (content hash, estimator version) in one SQLite file: each commit is atomic.

    A cache problem never stops a run. An entry that does not parse is a miss (recomputed, then replaced by
    ``put_many``); a damaged database file is moved aside to ``poses.sqlite.corrupt-<time>`` in the same folder
    and a fresh one started; a cache that cannot be opened or written (read-only folder, locked, disk full)
    is switched off for the run. Each is said in one yellow line naming the cache file.
    """

    def __init__(self, directory: str | Path | None = None, version: str = POSE_VERSION) -> None:
        self.version = version
        self.directory = Path(directory) if directory else default_cache_dir()
        self.path = self.directory / "poses.sqlite"
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._guarded(self._open, None)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(self.path) and not self.path.is_file():  # never open a FIFO or a folder
            raise OSError(errno.EINVAL, f"{self.path.name} is not a regular file")
        try:  # which file this run saw: a damaged one is moved aside only if no other run replaced it since
            self._inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            self._inode = None
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: no fsync per frame; WAL stays consistent on a crash
            db.execute("CREATE TABLE IF NOT EXISTS pose (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
            db.commit()
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            db.close()
            raise
        self._db = db

    def key(self, sha: str) -> str:
        return f"{self.version}:{sha}"

    def get_many(self, shas: Sequence[str]) -> dict[str, PoseResult]:
        return self._guarded(lambda: self._get_many(shas), {})

    def _get_many(self, shas: Sequence[str]) -> dict[str, PoseResult]:
        assert self._db is not None
        out: dict[str, PoseResult] = {}
        bad = 0
        keys = [self.key(s) for s in shas]
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, result FROM pose WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for key, text in rows:
                try:
                    out[key[len(self.version) + 1:]] = PoseResult.from_json(text)
                except ValueError:
                    bad += 1  # a miss: recomputed, then replaced by put_many
        if bad:
            _note(f"pose cache {self.path}: {bad} damaged entr{'y' if bad == 1 else 'ies'}; recomputing "
                  f"{'it' if bad == 1 else 'them'}.")
        return out

    def fetch(self, key: str | None, compute: Callable[[], PoseResult]) -> PoseResult:
        """The result stored under ``key`` (a content hash, or a finer key such as a video frame's), else
        ``compute()``, stored under it; no key: computed, not stored."""
        if key is None:
            return compute()
        hit = self.get_many([key]).get(key)
        if hit is None:
            hit = compute()
            self.put_many([(key, hit)])
        return hit

    def put_many(self, items: Iterable[tuple[str, PoseResult]]) -> None:
        rows = [(self.key(sha), r.to_json()) for sha, r in items]

        def put() -> None:
            assert self._db is not None
            self._db.executemany("INSERT OR REPLACE INTO pose (key, result) VALUES (?, ?)", rows)
            self._db.commit()

        if rows:
            self._guarded(put, None)

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _guarded(self, action, default):
        """``action()``; a damaged file is moved aside and ``action`` tried once more on a fresh cache;
        anything else that goes wrong turns the cache off. Never raises for cache trouble."""
        if self._db is None and action != self._open:
            return default  # switched off
        try:
            return action()
        except sqlite3.DatabaseError as e:
            if not _damaged(e):
                return self._switch_off(e, default)
            error: BaseException = e
        except OSError as e:
            return self._switch_off(e, default)
        try:
            self._move_aside(error)
            self._open()
            return default if action == self._open else action()
        except (sqlite3.Error, OSError) as e:
            return self._switch_off(e, default)

    def _move_aside(self, error: BaseException) -> None:
        seen = self._inode
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            if seen is not None and os.stat(self.path).st_ino != seen:
                return  # another run already replaced the damaged file
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        for part in ("-wal", "-shm"):  # SQLite's side files belong to the damaged file
            try:
                os.replace(f"{self.path}{part}", f"{aside}{part}")
            except FileNotFoundError:
                pass
        _note(f"pose cache {self.path} was damaged ({error}); moved it to {aside} and started a new one.")

    def _switch_off(self, error: BaseException, default):
        self.close()
        reason = getattr(error, "strerror", None) or str(error)
        if self.directory not in _SWITCHED_OFF:
            _SWITCHED_OFF.add(self.directory)
            _note(f"pose cache {self.path} cannot be used ({reason}); running without it, "
                  "poses are not saved for the next run (--cache DIR or $HYBRIDPOSE_CACHE picks another folder).")
        return default


_SWITCHED_OFF: set[Path] = set()  # caches this process already said it runs without


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign database file (rather than a locked, read-only or full one)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None and (code & 0xFF) in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    text = str(error)
    return any(s in text for s in ("malformed", "not a database", "no such column", "no such table"))


def _note(message: str) -> None:
    """One yellow line, not wrapped, paths not taken for markup."""
    from rich.markup import escape

    from ..progress import console

    console.print(f"[yellow]{escape(message)}[/]", soft_wrap=True, highlight=False)
