"""Synthetic squares, circles and triangles: the seed repository's toy data set, needing no files.

Each image is a plain background with 1..4 shapes of random colour and size. Shapes drawn later cover earlier
ones; a mask holds only the visible pixels, and a shape left with almost nothing visible is not drawn at all,
so the picture and the masks always agree. The shapes of every image are drawn from the seed at construction;
pixels are rendered on demand (numpy + PIL.ImageDraw), so a data set of any size costs nothing to build.

Shape letters: N: shapes kept in one image; H, W: image height and width.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .dataset import Dataset

CLASS_NAMES = ("square", "circle", "triangle")  # internal ids 1, 2, 3
# Half-sizes at 128x128 (scaled with the shorter side): big enough to learn, small enough for 4 to fit.
_MIN_HALF_SIZE, _MAX_HALF_SIZE, _REFERENCE_SIDE = 12, 32, 128
# A shape is dropped when less than this share of it (or fewer than 16 pixels) stays visible.
_MIN_VISIBLE_FRACTION = 0.2
_MIN_VISIBLE_PIXELS = 16
# Shape colours differ from the background by at least this sum of channel differences.
_MIN_COLOUR_DISTANCE = 120


class ShapesDataset(Dataset):
    """`count` synthetic images of size height x width, fully determined by `seed`.

    Classes: 1 square, 2 circle, 3 triangle (source "shapes").
    """

    def __init__(self, count: int, height: int = 128, width: int = 128, seed: int = 0,
                 min_shapes: int = 1, max_shapes: int = 4):
        super().__init__()
        if count < 0 or height < 16 or width < 16 or not 1 <= min_shapes <= max_shapes:
            raise ValueError(
                f"ShapesDataset needs count >= 0, height and width >= 16 and 1 <= min_shapes <= max_shapes; "
                f"got count={count}, height={height}, width={width}, min_shapes={min_shapes}, max_shapes={max_shapes}"
            )
        for class_id, name in enumerate(CLASS_NAMES, start=1):
            self.add_class("shapes", class_id, name)
        rng = np.random.default_rng(seed)
        for image_id in range(count):
            background, shapes = _random_image_spec(rng, height, width, min_shapes, max_shapes)
            self.add_image("shapes", image_id, None, height=height, width=width,
                           background=background, shapes=shapes)
        self.prepare()

    def image_reference(self, image_index: int) -> str:
        info = self.image_info[image_index]
        return f"shapes:{info['id']} ({', '.join(s[0] for s in info['shapes'])})"

    def load_image(self, image_index: int) -> np.ndarray:
        """(H, W, 3) uint8: the background, then each kept shape painted in order."""
        info = self.image_info[image_index]
        masks, kept = self._visible_masks(image_index)
        image = np.empty((info["height"], info["width"], 3), dtype=np.uint8)
        image[:] = info["background"]
        for mask, (_, colour, *_rest) in zip(masks, kept):
            image[mask] = colour
        return image

    def load_mask(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool visible masks and (N,) int64 class ids of the kept shapes."""
        masks, kept = self._visible_masks(image_index)
        class_ids = np.array([CLASS_NAMES.index(shape[0]) + 1 for shape in kept], dtype=np.int64)
        return masks, class_ids

    def num_instances(self, image_index: int) -> int:
        return len(self._visible_masks(image_index)[1])

    def _visible_masks(self, image_index: int) -> tuple[np.ndarray, list]:
        """Visible masks of the kept shapes, bottom to top, and their specs.

        Walks from the top shape down, so a dropped shape uncovers nothing above it and never leaves
        unlabelled pixels: each kept mask is its full shape minus the kept shapes drawn after it.
        """
        info = self.image_info[image_index]
        height, width = info["height"], info["width"]
        covered = np.zeros((height, width), dtype=bool)
        kept_masks, kept_shapes = [], []
        for shape in reversed(info["shapes"]):
            full = _draw_shape(shape, height, width)
            visible = full & ~covered
            area = int(visible.sum())
            if area < _MIN_VISIBLE_PIXELS or area < _MIN_VISIBLE_FRACTION * full.sum():
                continue
            covered |= full
            kept_masks.append(visible)
            kept_shapes.append(shape)
        kept_masks.reverse()
        kept_shapes.reverse()
        masks = np.stack(kept_masks) if kept_masks else np.zeros((0, height, width), dtype=bool)
        return masks, kept_shapes


def _random_image_spec(rng: np.random.Generator, height: int, width: int, min_shapes: int, max_shapes: int):
    """Background colour and a list of (name, colour, cx, cy, half_size) shapes inside the image."""
    background = tuple(int(v) for v in rng.integers(0, 256, size=3))
    scale = min(height, width) / _REFERENCE_SIDE
    low = max(4, round(_MIN_HALF_SIZE * scale))
    high = max(low, min(round(_MAX_HALF_SIZE * scale), min(height, width) // 2 - 1))
    shapes = []
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        name = CLASS_NAMES[int(rng.integers(0, len(CLASS_NAMES)))]
        colour = _distinct_colour(rng, background)
        half = int(rng.integers(low, high + 1))
        # Centres keep the whole shape (half-size on each side) inside the image.
        cx = int(rng.integers(half, width - half))
        cy = int(rng.integers(half, height - half))
        shapes.append((name, colour, cx, cy, half))
    return background, shapes


def _distinct_colour(rng: np.random.Generator, background: tuple) -> tuple:
    while True:
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if sum(abs(a - b) for a, b in zip(colour, background)) >= _MIN_COLOUR_DISTANCE:
            return colour


def _draw_shape(shape: tuple, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one full (unoccluded) shape."""
    name, _, cx, cy, half = shape
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    box = (cx - half, cy - half, cx + half - 1, cy + half - 1)
    if name == "square":
        draw.rectangle(box, fill=1)
    elif name == "circle":
        draw.ellipse(box, fill=1)
    else:  # triangle, apex up
        draw.polygon([(cx, cy - half), (cx - half, cy + half - 1), (cx + half - 1, cy + half - 1)], fill=1)
    return np.asarray(canvas, dtype=bool)
