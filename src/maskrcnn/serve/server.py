"""Loading the predictor and running the app under uvicorn: in the foreground (`maskrcnn serve`) or in a
background thread on a free port (tests, benchmarks/serve_load.py)."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from ..errors import ConfigError
from .app import DEFAULT_MAX_PIXELS, ServerSettings, create_app
from .workers import WorkerPool, threads_per_worker

ONNX_BACKENDS = ("onnxruntime", "openvino")


def load_served_predictor(weights, *, backend: str = "torch", onnx=None, threads: int = 1, precision: str = "f32",
                          report=print):
    """(backend name, predictor) as `maskrcnn predict` loads them (backends.load), with `threads` for each worker;
    "auto" gives the backend it chose. `--weights model.onnx` stands for `--onnx model.onnx` with an ONNX backend."""
    from .. import backends

    if backend in ONNX_BACKENDS and onnx is None and weights and Path(str(weights)).suffix.lower() == ".onnx":
        weights, onnx = None, weights
    return backends.load(backend, weights=weights, onnx=onnx, threads=threads, precision=precision, report=report)


def build_app(weights=None, *, backend: str = "torch", onnx=None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
              workers: int = 1, precision: str = "f32", report=print):
    """The app for `maskrcnn serve`, with its worker pool: (app, pool)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be at least 1, got {max_pixels}")
    threads = threads_per_worker(workers)
    name, predictor = load_served_predictor(weights, backend=backend, onnx=onnx, threads=threads, precision=precision,
                                            report=report)
    pool = WorkerPool(workers, threads=threads)
    return create_app(predictor, pool, ServerSettings(backend=name, precision=precision, max_pixels=max_pixels)), pool


def serve(weights=None, *, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch", onnx=None,
          max_pixels: int | None = DEFAULT_MAX_PIXELS, workers: int = 1, precision: str = "f32", report=print) -> None:
    """Serve the model until interrupted (`maskrcnn serve`)."""
    import uvicorn

    app, pool = build_app(weights, backend=backend, onnx=onnx, max_pixels=max_pixels, workers=workers,
                          precision=precision, report=report)
    report(f"serving {weights or onnx} ({backend} {precision}, {pool.workers} worker(s) x {pool.threads} thread(s)) on http://{host}:{port}/")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        pool.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `app` in a daemon thread on a free loopback port; `url`, then `stop()`.

    Also a context manager: `with BackgroundServer(app) as server: ... server.url ...`.
    """

    def __init__(self, app, *, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 30.0):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="maskrcnn-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
