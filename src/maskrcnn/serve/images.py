"""An uploaded image's bytes -> (H, W, 3) uint8 RGB, exactly as `maskrcnn predict` reads an image file.

The bytes go through `maskrcnn.data.read_image` itself (from a temporary file), so EXIF orientation, grayscale,
alpha, palette and 16-bit images give the very array that `maskrcnn predict` would give for the same file, and
the detections are the same. Before that, only the header is read, to refuse what is not an image (415) and images
over Pillow's decompression-bomb limit or the server's --max-pixels (413) without decoding a single pixel.
Pillow's limit (`PIL.Image.MAX_IMAGE_PIXELS`) stays on.
"""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.images import read_image
from ..errors import DataError
from .errors import RequestError

UNSUPPORTED_MEDIA_TYPE = 415
PAYLOAD_TOO_LARGE = 413
BAD_REQUEST = 400


def decode_image(data: bytes, *, max_pixels: int | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an encoded image (PNG, JPEG, TIFF, BMP, WebP...); a RequestError otherwise."""
    if not data:
        raise RequestError(BAD_REQUEST, "the image is empty (0 bytes); send an image file in the multipart field "
                                        "'image' or as the request body")
    _check_header(data, max_pixels)
    handle, path = tempfile.mkstemp(prefix="maskrcnn-upload-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        return read_image(path, max_pixels=max_pixels)
    except DataError as error:
        # The temporary file's name means nothing to the client: name the upload instead.
        message = str(error).replace(path, "the uploaded image")
        raise RequestError(BAD_REQUEST, message) from None
    finally:
        os.unlink(path)


def _check_header(data: bytes, max_pixels: int | None) -> None:
    """Refuse non-images and oversized images from the header alone (Image.open does not decode pixels)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise RequestError(PAYLOAD_TOO_LARGE, f"the image is larger than the server's decompression-bomb limit "
                                              f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {error}") from None
    except (OSError, SyntaxError, ValueError) as error:  # UnidentifiedImageError is an OSError
        reason = "unknown format" if isinstance(error, UnidentifiedImageError) else str(error)
        raise RequestError(UNSUPPORTED_MEDIA_TYPE, f"the upload is not an image Pillow can read ({reason}, "
                                                   f"{len(data)} bytes); send a PNG, JPEG, TIFF, BMP or WebP file") from None
    if max_pixels is not None and width * height > max_pixels:
        raise RequestError(PAYLOAD_TOO_LARGE, f"the image has {width}x{height} = {width * height} pixels, more than "
                                              f"this server's --max-pixels {max_pixels}; send a smaller image")
