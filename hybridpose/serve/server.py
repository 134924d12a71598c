"""``hybridpose serve RUN``: the run loaded once, the app on uvicorn, uploads in a temporary folder the
server owns (created at start, mode 0700, removed at exit).

``Server`` is the same thing started on a thread, for tests, benchmarks and notebooks:

    with Server(run, port=0) as s:      # port 0: a free port on 127.0.0.1
        requests.post(s.url + "/predict", files=...)
"""
from __future__ import annotations

import ipaddress
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..defaults import DEFAULTS
from ..errors import ConfigError
from ..inference.loaded import LoadedModel
from .app import Limits, create_app


def check_options(host: str, port: int, limits: Limits) -> None:
    """A ConfigError, before the model loads, for options that cannot work."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a port between 1 and 65535 (0: any free port).")
    for name, value in (("--max-upload-mb", limits.max_upload_bytes), ("--timeout", limits.timeout_s),
                        ("--queue", limits.queue), ("--max-files", limits.max_files)):
        if value <= 0:
            raise ConfigError(f"{name}: must be more than 0.")
    if not host:
        raise ConfigError("--host: give an address to listen on (127.0.0.1: this machine only).")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (before the model loads: a port in use is one error line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); choose another "
                          "--port (0: any free port).") from None
    sock.listen(128)
    return sock


class Server:
    """The app over a loaded run, served by uvicorn on a thread (``start``/``stop``, or ``with``)."""

    def __init__(self, run: str | Path, *, host: str = DEFAULTS.serve_host, port: int = DEFAULTS.serve_port,
                 limits: Limits = Limits(), rules: str | Path | None = None, no_rules: bool = False,
                 partial: bool = False, engine: str | None = None, model: LoadedModel | None = None):
        check_options(host, port, limits)
        self.sock = bind(host, port)
        try:
            self.model = model or LoadedModel.load(run, rules=rules, no_rules=no_rules, partial=partial, engine=engine)
        except BaseException:
            self.sock.close()
            raise
        self.workdir = Path(tempfile.mkdtemp(prefix="hybridpose-serve-"))
        self.app = create_app(self.model, self.workdir, limits)
        self.host, self.port = host, self.sock.getsockname()[1]
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _uvicorn(self):
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        return uvicorn.Server(config)

    def run(self, on_start: Callable[[str], None] | None = None) -> None:
        """Serve in this thread until interrupted (Ctrl-C); the upload folder is removed after."""
        self._server = self._uvicorn()
        if on_start is not None:
            on_start(self.url)
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> "Server":
        """Serve on a thread; returns once the server answers."""
        import time

        self._server = self._uvicorn()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self.close()

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(run: str | Path, *, host: str = DEFAULTS.serve_host, port: int = DEFAULTS.serve_port,
          limits: Limits = Limits(), rules: str | Path | None = None, no_rules: bool = False, partial: bool = False,
          engine: str | None = None, on_start: Callable[[str], None] | None = None) -> None:
    """Serve ``run`` until interrupted: options and the port checked, then the run loaded once, then uvicorn."""
    Server(run, host=host, port=port, limits=limits, rules=rules, no_rules=no_rules, partial=partial,
           engine=engine).run(on_start)
