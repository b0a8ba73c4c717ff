"""Shared by tests/test_serve.py and tests/test_serve_browser.py: a small model with decisive scores, image files,
and a clear failure (not a skip) when the serve extra or the browser is missing."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image

from maskrcnn import Config, MaskRCNN

SETUP = "run scripts/setup-tests.sh, which installs the serve and test extras and Debian's chromium"
CLASS_NAMES = ["BG", "square", "circle", "triangle"]


def require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ImportError(f"the serve tests need {error.name}: {SETUP}") from error


def decisive_model(seed: int = 0) -> MaskRCNN:
    """Config.demo() with random weights, sharpened as tests/test_export.py does: larger class-logit, objectness and
    mask weights spread the scores (about 0.6-0.95) and push mask probabilities away from 0.5, so detections exist and
    no pixel sits on the threshold."""
    torch.manual_seed(seed)
    model = MaskRCNN(Config.demo(), class_names=CLASS_NAMES)
    with torch.no_grad():
        model.box_head.class_logits.weight.mul_(4.0)
        model.rpn.objectness.weight.mul_(100.0)
        model.mask_head.mask_logits.weight.mul_(10.0)
    return model.eval()


def noise_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: smooth blobs plus noise, so the random model finds things and each image differs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    blobs = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR), dtype=np.int16)
    return np.clip(blobs + rng.integers(-20, 21, size=blobs.shape), 0, 255).astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height 8-bit gray pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, deflate, no filter, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
