"""The FastAPI app of ``hybridpose serve``: ``POST /predict``, ``GET /health``, ``GET /model`` and the page at ``/``.

The model is loaded once, before the app (``LoadedModel``). A prediction runs in a worker thread, one at a
time on the model; the app accepts at most ``Limits.queue`` predictions at once (running or waiting) and
answers 503 beyond it, so a burst of clients waits or is told to retry, never takes the server down. A
prediction that has not finished after ``Limits.timeout_s`` (its wait included) is answered 504; its
thread finishes in the background and removes its files then. docs/SERVE.md describes the endpoints.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ..defaults import DEFAULTS
from ..errors import HybridPoseError
from ..inference.loaded import LoadedModel
from .uploads import Received, UploadError, receive

PAGE = Path(__file__).with_name("page")
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
log = logging.getLogger("hybridpose.serve")


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = int(DEFAULTS.serve_max_upload_mb * 1e6)
    timeout_s: float = DEFAULTS.serve_timeout_s
    queue: int = DEFAULTS.serve_queue
    max_files: int = DEFAULTS.serve_max_files


class Gate:
    """At most ``size`` predictions admitted at once; the event loop is the only caller, so no lock."""

    def __init__(self, size: int):
        self.size, self.busy, self.refused, self.served = size, 0, 0, 0

    def enter(self) -> None:
        if self.busy >= self.size:
            self.refused += 1
            raise UploadError(503, f"the server is busy ({self.busy} predictions in progress, serve's --queue); "
                                   "try again in a moment.")
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1
        self.served += 1


def create_app(model: LoadedModel, workdir: Path, limits: Limits = Limits()):
    """The app over ``model``; uploads go into ``workdir`` (a folder the caller owns and removes)."""
    gate = Gate(limits.queue)
    pool = ThreadPoolExecutor(max_workers=limits.queue, thread_name_prefix="predict")

    @asynccontextmanager
    async def lifespan(app):
        yield
        pool.shutdown(wait=True)

    app = FastAPI(title="hybridpose", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.gate, app.state.model, app.state.workdir = gate, model, workdir
    started = time.time()
    described = model.describe()

    @app.exception_handler(UploadError)
    async def _refused(request: Request, e: UploadError):
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse({"detail": str(e)}, status_code=e.status, headers=headers)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "kind": model.kind, "in_progress": gate.busy, "queue": gate.size,
                "served": gate.served, "refused": gate.refused, "uptime_s": round(time.time() - started, 1)}

    @app.get("/model")
    async def about() -> dict:
        return {**described, "limits": {"max_upload_bytes": limits.max_upload_bytes, "timeout_s": limits.timeout_s,
                                        "queue": limits.queue, "max_files": limits.max_files}}

    @app.get("/")
    async def page():
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC:  # a fixed list: nothing but the page's own files is ever read
            return Response(status_code=404)
        return FileResponse(PAGE / name, media_type=STATIC[name])

    @app.post("/predict")
    async def predict(request: Request):
        gate.enter()
        handed_over = False
        try:
            _check_length(request.headers.get("content-length"), limits.max_upload_bytes)
            try:  # a client that sends slowly holds its slot no longer than --timeout
                got = await asyncio.wait_for(receive(request.stream(), request.headers.get("content-type"),
                                                     workdir / uuid.uuid4().hex, max_bytes=limits.max_upload_bytes,
                                                     max_files=limits.max_files), limits.timeout_s)
            except asyncio.TimeoutError:
                raise UploadError(408, f"the upload did not arrive within {limits.timeout_s:g} s (serve's "
                                       "--timeout); send it again.") from None
            t0 = time.perf_counter()
            job = asyncio.get_running_loop().run_in_executor(pool, _predict, model, got)
            handed_over = True
            job.add_done_callback(lambda _: gate.leave())  # the slot is free when the work is, not before
            try:
                rows = await asyncio.wait_for(asyncio.shield(job), limits.timeout_s)
            except asyncio.TimeoutError:
                raise UploadError(504, f"the prediction took longer than {limits.timeout_s:g} s (serve's --timeout); "
                                       "send fewer or smaller files, or try again when the server is less busy.") \
                    from None
            return _answer(rows, model.kind, time.perf_counter() - t0)
        finally:
            if not handed_over:
                gate.leave()

    return app


def _check_length(value: str | None, limit: int) -> None:
    if value is not None and value.isdigit() and int(value) > limit:
        raise UploadError(413, f"the upload is larger than the limit of {limit / 1e6:g} MB (serve's "
                               "--max-upload-mb); send fewer or smaller files.")


def _predict(model: LoadedModel, got: Received) -> list[dict]:
    """Rows for the uploaded files, named as the client named them; the request's folder removed after."""
    try:
        rows = model.predict_files([up.path for up in got.files])
    except HybridPoseError as e:
        raise UploadError(422, str(e)) from None
    finally:
        got.remove()
    for row, up in zip(rows, got.files):
        row["path"] = up.name
    return rows


def _answer(rows: list[dict], kind: str, elapsed: float) -> dict:
    """The JSON answer, or 422 with the first file's reason when no file got a label."""
    if not any(r.get("confidence") is not None for r in rows):
        first = rows[0]
        raise UploadError(422, f"{first['path']}: {first['status']}: {first['reason']}")
    return {"kind": kind, "predictions": rows, "elapsed_ms": round(elapsed * 1000, 1)}
