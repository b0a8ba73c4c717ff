"""`maskrcnn serve`: an HTTP server for a model, with a page to try it in a browser.

Needs the `serve` extra: `pip install "maskrcnn[serve]"` (FastAPI, uvicorn, python-multipart).
"""
from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import fastapi  # noqa: F401
    import multipart  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as error:
    raise MissingDependencyError(f"maskrcnn serve needs {error.name}: pip install \"maskrcnn[serve]\"") from error

from .app import ServerSettings, create_app  # noqa: E402
from .server import BackgroundServer, build_app, serve  # noqa: E402
from .workers import WorkerPool  # noqa: E402

__all__ = ["BackgroundServer", "ServerSettings", "WorkerPool", "build_app", "create_app", "serve"]
