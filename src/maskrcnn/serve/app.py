"""The HTTP server: a FastAPI app around one predictor (a MaskRCNN, an export.OnnxPredictor or an
export.OpenVinoPredictor: backends.py).

    GET  /          the page (static/index.html, page.js, page.css)
    GET  /health    {"status": "ok"}
    GET  /model     class names, a summary of the config, the backend, workers and limits
    POST /predict   an image in the multipart field "image" or as the raw body; optional score_threshold (0..1)
                    and format (rle | polygons), as query parameters or form fields ->
                    {"width", "height", "detections": [{"box": [x1, y1, x2, y2], "label", "class_name", "score",
                    "mask": {"size": [h, w], "counts": "..."}}]}

Every refused request gets a 4xx status (503 when the queue is full) and {"error": "what is wrong"}; nothing a
client sends makes a 500.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from .encoding import FORMATS, detections_json
from .errors import RequestError
from .images import BAD_REQUEST, PAYLOAD_TOO_LARGE, decode_image
from .workers import WorkerPool

log = logging.getLogger("maskrcnn.serve")

DEFAULT_MAX_PIXELS = 40_000_000  # under Pillow's own decompression-bomb limit (89.5 million pixels)
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
STATIC_FILES = {"index.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}
CONFIG_SUMMARY = ("num_classes", "backbone", "layout", "image_resize_mode", "image_min_dim", "image_max_dim",
                  "detection_min_confidence", "detection_max_instances", "mask_threshold")


@dataclass
class ServerSettings:
    backend: str = "torch"  # "torch", "onnxruntime" or "openvino" (what auto chose): reported by /model
    precision: str = "f32"  # "f32" or "bf16" (backends.PRECISIONS): reported by /model
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger images are refused with 413
    max_bytes: int = DEFAULT_MAX_BYTES  # larger uploads are refused with 413


def create_app(predictor, pool: WorkerPool, settings: ServerSettings = ServerSettings()) -> FastAPI:
    """The app serving `predictor` (anything with `predict(images, score_threshold=)`, `class_names`, `config`)."""
    app = FastAPI(title="maskrcnn", docs_url=None, redoc_url=None, openapi_url=None)
    class_names = list(predictor.class_names)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        # Starlette's own refusals: unknown path (404), wrong method (405), unreadable multipart (400).
        text = {404: f"no such page: {request.url.path}; the server answers GET /, GET /health, GET /model "
                     f"and POST /predict",
                405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, str(error.detail))
        return JSONResponse({"error": text}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return JSONResponse({"error": f"invalid request: {error.errors()}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/model")
    async def model_info():
        config = predictor.config
        return {
            "class_names": class_names,
            "config": {name: getattr(config, name) for name in CONFIG_SUMMARY if hasattr(config, name)},
            "backend": settings.backend,
            "precision": settings.precision,
            "workers": pool.workers,
            "threads_per_worker": pool.threads,
            "max_pixels": settings.max_pixels,
        }

    @app.post("/predict")
    async def predict(request: Request):
        data, fields = await _read_upload(request, settings.max_bytes)
        options = {**request.query_params, **fields}
        score_threshold = _score_threshold(options.get("score_threshold"))
        mask_format = options.get("format", "rle")
        if mask_format not in FORMATS:
            raise RequestError(BAD_REQUEST, f"format must be one of {', '.join(FORMATS)}, got {mask_format!r}")

        def work() -> bytes:  # in a worker thread: decode, predict, encode (the JSON text too, off the event loop)
            image = decode_image(data, max_pixels=settings.max_pixels)
            found = predictor.predict([image], score_threshold=score_threshold)[0]
            return json.dumps(detections_json(found, class_names, mask_format=mask_format)).encode()

        return Response(await pool.run(work), media_type="application/json")

    @app.get("/")
    async def page():
        return _static("index.html")

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC_FILES:
            raise RequestError(404, f"no such file: /static/{name}")
        return _static(name)

    return app


def _static(name: str) -> Response:
    text = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(text, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


async def _read_upload(request: Request, max_bytes: int) -> tuple[bytes, dict]:
    """The image bytes (multipart field "image", or the whole body) and the other form fields."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(PAYLOAD_TOO_LARGE, f"the request is {declared} bytes, more than this server's limit of "
                                              f"{max_bytes}; send a smaller image")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("image")
        if upload is None:
            raise RequestError(BAD_REQUEST, f"the multipart field 'image' is missing (fields sent: "
                                            f"{', '.join(form.keys()) or 'none'}); send the image file as 'image'")
        if isinstance(upload, str):
            raise RequestError(BAD_REQUEST, "the multipart field 'image' holds text, not a file; send the image file")
        data = await upload.read()
        fields = {key: value for key, value in form.items() if key != "image" and isinstance(value, str)}
        return data, fields
    if content_type.startswith("application/x-www-form-urlencoded"):
        raise RequestError(BAD_REQUEST, "a form without a file: send multipart/form-data with the field 'image', or "
                                        "the image itself as the body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestError(PAYLOAD_TOO_LARGE, f"the request is more than this server's limit of {max_bytes} bytes")
    if not body:
        raise RequestError(BAD_REQUEST, "the request has no image (empty body); send the image file in the multipart "
                                        "field 'image' or as the request body")
    return bytes(body), {}


def _score_threshold(text) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise RequestError(BAD_REQUEST, f"score_threshold must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise RequestError(BAD_REQUEST, f"score_threshold must be in [0, 1], got {value}")
    return value
