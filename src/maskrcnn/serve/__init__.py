"""`maskrcnn serve`: an HTTP server for a model, with a page to try it in a browser.

Needs the `serve` extra: `pip install "maskrcnn[serve]"` (FastAPI, uvicorn, python-multipart).
"""
from __future__ import annotations

from importlib.util import find_spec

from ..errors import MissingDependencyError

# python-multipart is imported as python_multipart from 0.0.13 on, as multipart before.
for _name in ("fastapi", "uvicorn", "python_multipart" if find_spec("python_multipart") else "multipart"):
    if find_spec(_name) is None:
        raise MissingDependencyError(f"maskrcnn serve needs {_name}: pip install \"maskrcnn[serve]\"")

from .app import ServerSettings, create_app  # noqa: E402
from .server import BackgroundServer, build_app, serve  # noqa: E402
from .workers import WorkerPool  # noqa: E402

__all__ = ["BackgroundServer", "ServerSettings", "WorkerPool", "build_app", "create_app", "serve"]
