"""``hybridpose serve``: a run behind an HTTP API and a web page (docs/SERVE.md).

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart): ``require()`` says so in one line.
"""
from __future__ import annotations

import importlib.util

from ..errors import ConfigError

PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require() -> None:
    """A ConfigError naming the install command when a package of the ``serve`` extra is missing."""
    missing = [pip for mod, pip in PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ConfigError(f"hybridpose serve needs {', '.join(missing)}: run `pip install 'hybridpose[serve]'` "
                          "(or `pip install -e '.[serve]'` in a checkout).")
