"""Images read one window at a time, for tiled prediction on images of any size.

An image source has `height`, `width` and `read(y0, x0, y1, x1)`, which gives the window's pixels in the form
the model takes: (h, w, 3) uint8 RGB for arrays and files, (3, h, w) float for tensors.

- numpy arrays and tensors are sliced, never copied whole;
- TIFF files go through tifffile: memory-mapped where the file stores its pixels uncompressed and contiguous
  (only the windows read are paged in); otherwise (compressed or tiled storage, as most GeoTIFFs) through
  rasterio's windowed reads when rasterio is installed (only the blocks under a window are decoded), else decoded
  once. Both have a `georeference` (geo.py: the GeoTIFF's geotransform and CRS, or None);
- PNG, JPEG and the other Pillow formats are decoded once into Pillow's own buffer, and each window is converted
  on its own, so the image is never held twice (a Pillow image and a numpy copy of it).

`read_image`'s `max_pixels` guard and Pillow's decompression-bomb limit protect the plain path, where the whole
image goes through the network at once. Opening a file for tiling lifts both explicitly: memory then grows with
one batch of tiles, not with the image. A `max_pixels` may still be given here.

Shape letters: H, W: the image's height and width; h, w: a window's.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
import warnings

import numpy as np
from PIL import Image
from torch import Tensor

from .data.images import TIFF_SUFFIXES, _check_file, _check_pixels, _to_rgb, _upright, to_rgb_array
from .errors import DataError

_PILLOW_LIMIT_LOCK = threading.Lock()


class ArraySource:
    """An (H, W, C) numpy image (uint8 RGB as is; gray, RGBA, uint16, float converted a window at a time)."""

    def __init__(self, array: np.ndarray, name: str = "image"):
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"{name}: expected an (H, W) or (H, W, 1|3|4) array, got shape {array.shape}")
        self.array = array
        self.name = name
        self.height, self.width = int(array.shape[0]), int(array.shape[1])

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0, 3) uint8 RGB."""
        return to_rgb_array(self.array[y0:y1, x0:x1])


class TensorSource:
    """A (3, H, W) float tensor in [0, 1]; windows are (3, h, w) views."""

    def __init__(self, tensor: Tensor):
        if tensor.dim() != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor
        self.height, self.width = int(tensor.shape[1]), int(tensor.shape[2])

    def read(self, y0: int, x0: int, y1: int, x1: int) -> Tensor:
        return self.tensor[:, y0:y1, x0:x1]


class TiffSource(ArraySource):
    """A TIFF file through tifffile: a memory map of the first image where the file allows, else decoded once.
    Planar (C, H, W) pixel layouts are read as (H, W, C) windows."""

    def __init__(self, path: str):
        import tifffile

        try:
            try:
                array = tifffile.memmap(path, mode="r")  # uncompressed, contiguous: nothing is read yet
            except ValueError:  # compressed or tiled storage: no memory map possible
                array = tifffile.imread(path, key=0)
        except (OSError, ValueError, tifffile.TiffFileError) as error:
            raise DataError(f"{path}: cannot read the TIFF ({error}); is the file complete?") from error
        array = np.squeeze(array)
        if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] > 4:
            array = array.transpose(1, 2, 0)  # planar (C, H, W) -> a (H, W, C) view
        super().__init__(array, name=path)

    @functools.cached_property
    def georeference(self):
        """geo.Georeference of a GeoTIFF (read on first use; needs rasterio then), None for a plain TIFF."""
        from .geo import read_georeference

        return read_georeference(self.name)


class RasterioSource:
    """A TIFF through rasterio (GDAL), read one window at a time: only the blocks under a window are decoded, so a
    compressed or tiled file is never held whole. Bands are the image's channels (1: gray, 3: RGB, 4: RGBA)."""

    def __init__(self, path: str):
        from .geo import require_rasterio

        rasterio = require_rasterio(path)
        self.name = path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a plain TIFF is fine here
                self.dataset = rasterio.open(path)
        except rasterio.errors.RasterioError as error:
            raise DataError(f"{path}: cannot read the TIFF ({error}); is the file complete?") from error
        if self.dataset.count not in (1, 3, 4):
            raise DataError(f"{path}: {self.dataset.count} bands; expected 1 (gray), 3 (RGB) or 4 (RGBA)")
        self.height, self.width = int(self.dataset.height), int(self.dataset.width)

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0, 3) uint8 RGB (the dtype rules of `data.images.to_rgb_array`)."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        try:
            bands = self.dataset.read(window=Window(x0, y0, x1 - x0, y1 - y0))  # (C, h, w)
        except RasterioError as error:  # a block that does not decode (a truncated or damaged file)
            raise DataError(f"{self.name}: cannot read the window x {x0}..{x1}, y {y0}..{y1} ({error})") from error
        return to_rgb_array(bands.transpose(1, 2, 0))  # (C, h, w) -> (h, w, C)

    @functools.cached_property
    def georeference(self):
        """geo.Georeference of a GeoTIFF, None for a plain TIFF."""
        from .geo import read_georeference

        return read_georeference(self.name)


class PillowSource:
    """A PNG, JPEG, ... decoded once into Pillow's buffer, upright per EXIF; each window converted on its own."""

    def __init__(self, path: str, max_pixels: int | None = None):
        self.name = path
        try:
            with _pillow_limit_lifted():
                image = Image.open(path)
            _check_pixels(path, image.size, max_pixels)
            image.load()  # decode now, so that truncated data fails here with the path named
            self.image = _upright(image, path)
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError) as error:
            raise DataError(f"{path}: cannot read the image ({error}); is the file complete and an image?") from error
        self.width, self.height = self.image.size

    def read(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0, 3) uint8 RGB (the mode rules of `data.images.read_image`)."""
        return _to_rgb(self.image.crop((x0, y0, x1, y1)))


STRIP_ROWS = 512  # rows read at a time by picture_canvas


def picture_canvas(source) -> Image.Image:
    """The whole image of a source as one RGB Pillow image, to draw its picture on. A PillowSource whose image
    is RGB already hands that image over (the source is done with: drawing changes it); other sources are read
    in strips of STRIP_ROWS rows into one new image, so that no second full-size copy is made on the way."""
    if isinstance(source, PillowSource) and source.image.mode == "RGB":
        return source.image
    canvas = Image.new("RGB", (source.width, source.height))
    for y0 in range(0, source.height, STRIP_ROWS):
        y1 = min(y0 + STRIP_ROWS, source.height)
        canvas.paste(Image.fromarray(np.asarray(source.read(y0, 0, y1, source.width))), (0, y0))
    return canvas


def open_image(path, *, max_pixels: int | None = None):
    """An image file as a windowed source: for .tif/.tiff a TiffSource where tifffile can memory-map the pixels,
    else a RasterioSource when rasterio is installed, else a TiffSource decoded once (`_open_tiff`); PillowSource
    otherwise."""
    path = os.fspath(path)
    _check_file(path)
    if os.path.splitext(path)[1].lower() in TIFF_SUFFIXES:
        source = _open_tiff(path)
        _check_pixels(path, (source.width, source.height), max_pixels)
        return source
    return PillowSource(path, max_pixels=max_pixels)


def _open_tiff(path: str):
    """RasterioSource for a TIFF that cannot be memory-mapped when rasterio is installed, else TiffSource."""
    if importlib.util.find_spec("rasterio") is not None and not _memory_mappable(path):
        return RasterioSource(path)
    return TiffSource(path)


def _memory_mappable(path: str) -> bool:
    """Whether tifffile can memory-map the TIFF's first image (stored uncompressed and contiguous)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            return tiff.series[0].levels[0].dataoffset is not None
    except (OSError, ValueError, IndexError):  # tifffile.TiffFileError is a ValueError
        return True  # TiffSource says what is wrong with the file


def as_source(image):
    """Any image `predict_tiled` takes -> a source: a source as is, a path, an (H, W, C) array, a (3, H, W) tensor."""
    if hasattr(image, "read") and hasattr(image, "height") and hasattr(image, "width"):
        return image
    if isinstance(image, (str, os.PathLike)):
        return open_image(image)
    if isinstance(image, np.ndarray):
        return ArraySource(image)
    if isinstance(image, Tensor):
        if not image.is_floating_point():
            raise ValueError(f"tensor images must be float (3, H, W) in [0, 1], got dtype {image.dtype}")
        return TensorSource(image)
    raise ValueError(f"expected an image file path, a numpy (H, W, 3) array or a (3, H, W) tensor, got {type(image).__name__}")


@contextlib.contextmanager
def _pillow_limit_lifted():
    """Pillow's decompression-bomb limit off while a file is opened for tiling (a global of Pillow's, restored
    afterwards; the lock keeps two threads from restoring each other's value)."""
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved
