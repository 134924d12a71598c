"""The ``ray`` executor: every piece a Ray task (``fit``, ``tune``, pose extraction), and ``predict``
over Ray Data with one model actor per worker.

``address``: None starts a local Ray instance (shut down again by ``close``), ``auto`` joins the
cluster this machine belongs to, ``ray://HOST:10001`` a remote one. Tasks read and write the run
folder by its path, so on a cluster of several machines that path must be on a filesystem every
node mounts at the same place (README: "Training on a Ray cluster").
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..defaults import DEFAULTS
from ..errors import ConfigError, HybridPoseError, RunError
from ..progress import progress_bar
from . import Executor, Resources, register

CONNECT_TIMEOUT_S = 5.0         # --address: how long to wait for the cluster to answer at all
MERGED_CSV_MAX_ROWS = 200_000   # predict: also one predictions.csv when the output is at most this long
SHARD_ROWS = 10_000             # predict: rows per Parquet file


def _ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray: Ray is not installed; pip install 'hybridpose[ray]'.") from None
    try:
        import pyarrow  # noqa: F401  (Ray loads it for every task once it is installed)
    except ModuleNotFoundError:
        pass
    except ImportError as e:  # e.g. pyarrow 26, built for NumPy 2, next to mediapipe's NumPy 1
        raise ConfigError(f"--executor ray: pyarrow cannot be loaded ({e}); pip install 'pyarrow<26'.") from None
    return ray


@register
class RayExecutor(Executor):
    name = "ray"
    distributed = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 **_ignored: object) -> None:
        ray = _ray()
        self._owned = False
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address:
                    check_reachable(address)
                    ray.init(address=address, **kw)
                else:
                    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kw)
            except ConnectionError as e:
                raise ConfigError(f"--address {address}: no Ray cluster there ({e}); start one with `ray start "
                                  "--head`, or leave out --address to start a local one.") from None
            self._owned = True

    @property
    def slots(self) -> int:
        return max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def check(self, resources: Resources, what: str = "task") -> None:
        _check_fits(_ray(), resources, what)

    def map(self, fn: Callable, items: Sequence, *, resources: Resources | None = None, retries: int = 0,
            desc: str = "", show_progress: bool = True) -> Iterator[tuple[object, object]]:
        ray = _ray()
        res = resources or Resources()
        _check_fits(ray, res, desc)
        task = ray.remote(_call).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=retries,
                                         retry_exceptions=False)
        item_of = {task.remote(fn, item): item for item in items}
        pending = list(item_of)
        try:
            with progress_bar(desc or "tasks", total=len(pending), enabled=show_progress) as advance:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    yield item_of[done[0]], _get(ray, done[0], item_of[done[0]], retries)
                    advance()
        finally:
            for ref in pending:  # an error or an interrupt: nothing keeps running unseen
                ray.cancel(ref, force=True)

    def close(self) -> None:
        ray = _ray()
        if self._owned and ray.is_initialized():
            ray.shutdown()
            self._owned = False


def check_reachable(address: str) -> None:
    """A ConfigError, in seconds, when nothing listens at ``address`` (HOST:PORT or ray://HOST:PORT): there
    ``ray.init`` would retry for many minutes. ``auto``, ``local`` and other forms are left to Ray."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not (sep and host and port.isdigit()):
        return
    host = host.strip("[]")  # [::1]:6379
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise ConfigError(f"--address {address}: nothing answers at {host}:{port} ({reason}); start the Ray cluster "
                          "there (`ray start --head`), correct the address, or leave out --address to start a "
                          "local Ray.") from None


def _check_fits(ray, res: Resources, desc: str) -> None:
    """A task asking for more than the cluster has would wait forever: say so before submitting it."""
    total = ray.cluster_resources()
    for what, need, have in (("CPUs", res.cpus, total.get("CPU", 0)), ("GPUs", res.gpus, total.get("GPU", 0))):
        if need > have:
            raise ConfigError(f"each {desc or 'task'} asks for {need:g} {what}, but the Ray cluster has {have:g}; "
                              f"ask for fewer (--cpus-per-fold / --gpus-per-fold / --cpus-per-trial ...) or add nodes.")


def _call(fn: Callable, item: object) -> object:
    return fn(item)


def _get(ray, ref, item, retries: int):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, HybridPoseError):
            raise cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as e:
        raise RunError(f"task {item!r}: its worker died {retries + 1} times ({type(e).__name__}); finished work is "
                       "saved: run the same command again to resume.") from None


def check_visible(path: str | Path) -> None:
    """In a task: the run folder must be there (shared filesystem on a multi-machine cluster)."""
    if not Path(path).exists():
        raise RunError(f"{path}: not visible on Ray worker {socket.gethostname()}; on a cluster of several "
                       "machines put --out on a filesystem every node mounts at the same path.")


# --------------------------------------------------------------------------- predict


class Predictor:
    """A Ray Data actor: loads the run once, then labels batches of paths (a row per person found, up to
    ``max_people``, and one row for a file with nobody or that cannot be read)."""

    def __init__(self, run: str, rules: str | None, use_rules: bool, cache_dir: str | None, partial: bool,
                 threads: int, engine: str | None = None, max_people: int = DEFAULTS.max_people) -> None:
        from ..inference.classifier import HybridPoseClassifier

        check_visible(run)
        self.clf = HybridPoseClassifier.load(run, rules=rules, use_rules=use_rules, partial=partial, engine=engine,
                                             threads=threads)
        if threads:  # the engine's own threads (PyTorch's are process-wide: this actor's process)
            self.clf.image_branch.set_threads(threads)
        self.clf.cache_dir = Path(cache_dir) if cache_dir else None
        self.clf.max_people = max_people

    def __call__(self, batch):
        frame = self.clf.predict(list(batch["path"]), batch_size=max(1, len(batch)))
        for col in frame.columns:  # one Arrow type per column in every shard, whatever the batch holds
            if frame[col].dtype == object:
                frame[col] = frame[col].astype("string")
        return frame


def _engine_for_actors(run: str, engine: str | None, partial: bool) -> str:
    """The engine every actor loads, chosen once here: a run's ONNX graph is built by this process, not by
    each actor at once."""
    from ..engines import choose
    from ..run.folder import RunFolder

    folder = RunFolder(run)
    return choose(folder, folder.read_config(), engine, partial=partial).name


def predict(paths: Sequence[str], run: str | Path, out: str | Path, *, workers: int = 1, cpus_per_worker: float = 1,
            gpus_per_worker: float = 0, rules: str | Path | None = None, no_rules: bool = False,
            batch_size: int = DEFAULTS.batch_size, cache_dir: str | Path | None = None, partial: bool = False,
            threads: int | None = None, show_progress: bool = True, engine: str | None = None,
            max_people: int = DEFAULTS.max_people) -> dict:
    """``OUT/part-NNNNN.parquet`` (prediction rows in input order) and, when short, ``OUT/predictions.csv``.

    Photos are read and labelled by ``workers`` actors (each loads the run once); the rows come back to
    this process, which writes the shards (rows are small: a few hundred bytes each). ``threads``: the
    PyTorch threads of an actor (default: its CPUs)."""
    import pandas as pd

    ray = _ray()
    out = Path(out)
    check_out(out)
    run = str(Path(run).resolve())
    engine = _engine_for_actors(run, engine, partial)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # ours below
    for name in ("ray.data", "ray.data._internal.progress"):  # its plan and "progress bars disabled": noise here
        logging.getLogger(name).setLevel(logging.ERROR)
    # at least a block per actor, so that a short list still keeps every actor busy
    blocks = max(1, min(len(paths), max(workers, math.ceil(len(paths) / batch_size))))
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks)
    ds = ds.map_batches(
        Predictor, batch_size=batch_size, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
        fn_constructor_kwargs=dict(run=run, rules=str(rules) if rules else None, use_rules=not no_rules,
                                   cache_dir=str(cache_dir) if cache_dir else None, partial=partial,
                                   threads=threads or max(1, int(cpus_per_worker)), engine=engine,
                                   max_people=max_people))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts: dict[str, int] = {}
    shards, frames, buffer, n = [], [], [], 0

    def write_shard() -> None:
        name = f"part-{len(shards):05d}.parquet"
        pd.concat(buffer, ignore_index=True).to_parquet(tmp / name, index=False)
        shards.append(name)
        buffer.clear()

    try:
        with progress_bar("predict (ray)", total=len(paths), enabled=show_progress) as advance:
            for frame in ds.iter_batches(batch_size=batch_size, batch_format="pandas"):
                buffer.append(frame)
                if sum(map(len, buffer)) >= SHARD_ROWS:
                    write_shard()
                for s, c in frame["status"].value_counts().items():
                    counts[str(s)] = counts.get(str(s), 0) + int(c)
                n += len(frame)
                if len(paths) <= MERGED_CSV_MAX_ROWS:
                    frames.append(frame)
                advance(frame["path"].nunique())
        if buffer:
            write_shard()
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(tmp / "predictions.csv", index=False)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"images": len(paths), "rows": n, "status": counts, "out": str(out), "shards": len(shards),
            "csv": str(out / "predictions.csv") if frames else None}


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished folder in place; an earlier prediction folder is replaced, anything else kept."""
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif out.is_dir() and all(p.suffix in (".parquet", ".csv") for p in out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            shutil.rmtree(old)
        else:
            raise RunError(f"{out}: exists and holds other files; give --out a new folder for the Parquet shards.")
    tmp.rename(out)


def predict_inputs(inputs: str | Path, run: str | Path, out: str | Path, *, address: str | None = None,
                   **options) -> dict:
    """`predict --executor ray`: the files under ``inputs`` (one row each, bad files too) into ``out``."""
    from ..data.sources import open_inputs
    from ..run.folder import RunFolder

    RunFolder(run).read_config()  # a wrong --model fails here, before Ray starts
    check_out(Path(out))
    paths = [str(e.path) for e in open_inputs(Path(inputs))]
    with RayExecutor(address=address):
        return predict(paths, run, out, **options)


def check_out(out: Path) -> None:
    """``--out`` is a folder for the shards: new, empty, or an earlier prediction folder (replaced)."""
    if out.exists() and not (out.is_dir() and all(p.suffix in (".parquet", ".csv") for p in out.iterdir())):
        raise RunError(f"{out}: exists and is not a prediction folder; give --out a new folder for the Parquet shards.")
