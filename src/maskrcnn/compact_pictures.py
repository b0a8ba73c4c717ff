"""Pictures of detections with compact masks (`MaskCrops`), for images too large for one full mask per instance.

Each mask is blended into the picture over its crop only, so drawing costs the image once plus the objects'
area; boxes and captions as `visualize.draw_instances` draws them (colours from `visualize.instance_colors`).

Shape letters: H, W: the image's height and width.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .structures import Detections
from .visualize import instance_colors


def draw_compact(image: np.ndarray, detections: Detections, class_names: Sequence[str], *,
                 score_threshold: float | None = None, alpha: float = 0.45) -> np.ndarray:
    """Draw detections whose masks are MaskCrops on a copy of `image` (H, W, 3) uint8 -> (H, W, 3) uint8."""
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))  # Pillow copies the pixels
    return np.asarray(picture_compact(picture, detections, class_names, score_threshold=score_threshold, alpha=alpha))


def picture_compact(picture: Image.Image, detections: Detections, class_names: Sequence[str], *,
                    score_threshold: float | None = None, alpha: float = 0.45) -> Image.Image:
    """As `draw_compact`, but drawn on `picture` (an RGB Pillow image) itself, which is returned: each mask is
    blended over its crop only (the crop read out, blended, pasted back), so a picture of a large image takes
    no full-size memory beyond `picture`."""
    detections = detections.compact().to("cpu")
    if score_threshold is not None:
        detections = detections[detections.scores >= score_threshold]
    colors = instance_colors(len(detections))
    for (crop, x0, y0), color in zip(detections.masks, colors):
        height, width = crop.shape
        region = np.array(picture.crop((x0, y0, x0 + width, y0 + height)))  # (h, w, 3) uint8, writable
        mask = crop.numpy()
        region[mask] = np.rint((1 - alpha) * region[mask] + alpha * np.asarray(color, dtype=np.float32)).astype(np.uint8)
        picture.paste(Image.fromarray(region), (x0, y0))
    draw = ImageDraw.Draw(picture)
    for (x1, y1, x2, y2), label, score, color in zip(detections.boxes.tolist(), detections.labels.tolist(),
                                                      detections.scores.tolist(), colors):
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color)
        name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
        draw.text((x1 + 2, y1 + 1), f"{name} {score:.2f}", fill=color)
    return picture
