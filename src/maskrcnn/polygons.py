"""Instance masks traced as polygons, for the files of `maskrcnn predict --format` (formats.py, geo.py).

Each mask is traced over its box only: full (N, H, W) masks are first cropped to their tight boxes
(`MaskCrops.from_full`), compact masks (`MaskRCNN.predict_tiled`) already are, and the crop's polygons are shifted
by the crop's place in the image. No full-image array is ever built per instance, so a 20000 x 20000 image with
thousands of objects costs what its objects' boxes cost.

Tracing: the outer boundaries of a mask (skimage.measure.find_contours at level 0.5, so the line runs along the
pixel edges), simplified with Douglas-Peucker to `tolerance` pixels (skimage.measure.approximate_polygon). Holes
are not kept. Coordinates are COCO's pixel-edge coordinates: pixel (r, c) covers [c, c+1] x [r, r+1], so a mask
of rows 2..5 and columns 3..8 traces within x 3..9, y 2..6. Needs scikit-image (pip install 'maskrcnn[formats]').

Shape letters: H, W: an image's height and width; h, w: a mask crop's; K: a polygon's points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .structures import Detections

TOLERANCE = 1.0  # pixels a simplified polygon may stray from the traced boundary


@dataclass
class Outline:
    """One instance's mask as traced.

    polygons: the pieces' outer boundaries, each (K, 2) float64 x y in pixel-edge coordinates of the image,
              largest first (empty when the mask is too small to give 3 points)
    crop:     (h, w) bool, the mask over its box
    x0, y0:   the crop's top-left pixel in the image
    """

    polygons: list[np.ndarray]
    crop: np.ndarray
    x0: int
    y0: int

    @property
    def area(self) -> int:
        """Mask pixels."""
        return int(self.crop.sum())


def mask_polygons(mask: np.ndarray, tolerance: float = TOLERANCE) -> list[np.ndarray]:
    """The outer boundaries of a (H, W) bool mask as polygons (K, 2) x y in COCO's pixel-edge coordinates
    (pixel (r, c) covers [c, c+1] x [r, r+1]), largest first; pieces too small for 3 points are left out."""
    try:
        from skimage import measure
    except ImportError as error:
        raise ConfigError("tracing masks as polygons needs scikit-image: pip install 'maskrcnn[formats]'") from error
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)  # (H+2, W+2): boundaries at the image edge close too
    polygons = []
    for contour in measure.find_contours(padded, 0.5):  # (K, 2) row, col of pixel centres, closed
        rows, cols = contour[:, 0], contour[:, 1]
        # Shoelace area with x = col, y = row: positive for find_contours' outer boundaries, negative for holes.
        area = 0.5 * float(np.sum(cols * np.roll(rows, -1) - np.roll(cols, -1) * rows))
        if area <= 0:
            continue
        simplified = measure.approximate_polygon(contour, tolerance)[:-1]  # the closing point repeats the first
        if len(simplified) < 3:
            continue
        # (K, 2) row, col in the padded array -> x, y: one pixel of padding off, then centres to edges (+0.5)
        polygons.append((area, simplified[:, ::-1] - 1.0 + 0.5))
    return [polygon for _, polygon in sorted(polygons, key=lambda item: -item[0])]


def outlines(detections: Detections, tolerance: float = TOLERANCE) -> list[Outline]:
    """One Outline per detection, in the detections' order, traced from each mask's box-cropped form."""
    crops = detections.to("cpu").compact().masks  # MaskCrops: (h_i, w_i) bool crops at (x0, y0)
    found = []
    for crop, x0, y0 in crops:
        crop = crop.numpy().astype(bool)  # (h, w)
        shift = np.array([x0, y0], dtype=np.float64)  # crop pixel-edge coordinates -> the image's
        found.append(Outline([polygon + shift for polygon in mask_polygons(crop, tolerance)], crop, int(x0), int(y0)))
    return found


def check_tracing() -> None:
    """Raise the ConfigError of a missing scikit-image now (before any prediction is made)."""
    mask_polygons(np.zeros((1, 1), dtype=bool))
