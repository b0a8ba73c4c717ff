"""Pictures of instances and training curves, as arrays and PNG files (never a window, unlike matterport's
`visualize.display_instances`: a training run on a server has no screen).

Shape letters:
    N: instances in one image
    H, W: the image's height and width
"""
from __future__ import annotations

import colorsys
import json
import math
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from .config import LOSS_NAMES
from .data.dataset import masks_to_boxes
from .files import atomic_write
from .structures import Detections

# The losses a training log holds: their sum "loss", then the five of the Mask R-CNN paper's L = Lcls + Lbox + Lmask
# (RPN and heads), named as in matterport's model.
LOG_LOSS_NAMES = ("loss",) + LOSS_NAMES


def instance_colors(count: int) -> list[tuple[int, int, int]]:
    """`count` bright RGB colours with hues spread by the golden ratio, so neighbours in the list differ."""
    golden = (math.sqrt(5) - 1) / 2
    colors = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * golden) % 1.0, 0.85, 1.0)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 as is; (H, W) and (H, W, 4) converted; anything else is a ValueError."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3].copy()
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise ValueError(f"image must be (H, W, 3) RGB, (H, W) gray or (H, W, 4) RGBA, got shape {image.shape}")


def _outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: mask pixels with a 4-neighbour outside the mask (or the image)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _font(scale: int):
    """Pillow's built-in font: its 11 px bitmap at scale 1, a FreeType face growing more slowly than the picture
    above it (15 px at 3x), so captions stay readable without covering the shapes. Pillow before 10.1 (no `size`)
    and builds without FreeType give the bitmap at every scale."""
    if scale <= 1:
        return ImageFont.load_default()
    try:
        return ImageFont.load_default(size=11 + 2 * (scale - 1))
    except TypeError:
        return ImageFont.load_default()


def _enlarge(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of the two leading image axes: (H, W, ...) -> (scale*H, scale*W, ...)."""
    return array if scale == 1 else np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection area of two rectangles (x1, y1, x2, y2)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _place_caption(box: tuple, size: tuple, width: int, height: int, taken: list) -> tuple:
    """Top-left corner of a caption of `size` (w, h) for `box` (x1, y1, x2, y2): above the box, inside its top,
    below it, inside its bottom, or just below or above a caption already placed (`taken`, rectangles), the
    first that fits in the image and covers no placed caption; else the one covering least. Always inside the
    image, at the box's left edge."""
    x1, y1, x2, y2 = box
    text_w, text_h = size
    tx = min(max(0.0, x1), max(0.0, width - text_w))
    stacked = [y for other in taken for y in (other[3], other[1] - text_h)]
    rows = [y for y in (y1 - text_h, y1, y2, y2 - text_h, *stacked) if 0 <= y <= height - text_h]
    rows = rows or [min(max(0.0, y1), max(0.0, height - text_h))]
    covered = [sum(_overlap((tx, y, tx + text_w, y + text_h), other) for other in taken) for y in rows]
    return tx, rows[covered.index(min(covered))]


def _draw(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray, captions: Sequence[str], alpha: float, *,
          scale: int = 1, note: str | None = None) -> np.ndarray:
    """Blend masks (N, H, W), outline them, draw boxes (N, 4) x1 y1 x2 y2 and captions, on the image enlarged
    `scale` times (nearest neighbour); `note`, if any, goes in a strip across the top.
    Returns (scale*H, scale*W, 3) uint8."""
    height, width = image.shape[:2]
    if masks.shape[0] and masks.shape[1:] != (height, width):
        raise ValueError(f"masks are {masks.shape[1]}x{masks.shape[2]} but the image is {height}x{width}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale}")
    scale = int(scale)
    colors = instance_colors(len(boxes))
    canvas = _enlarge(image, scale).astype(np.float32)
    for mask, color in zip(masks, colors):
        # The outline is found at the image's own resolution, then enlarged: `scale` pixels thick.
        outline = _enlarge(_outline(mask), scale)
        mask = _enlarge(mask, scale)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(color, dtype=np.float32)
        canvas[outline] = color
    picture = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    height, width = picture.height, picture.width
    draw = ImageDraw.Draw(picture)
    font = _font(scale)
    taken = []  # rectangles (x1, y1, x2, y2) of the note and the captions placed so far
    if note:
        note_box = draw.textbbox((0, 0), note, font=font)
        taken.append((0, 0, width, note_box[3] - note_box[1] + 4))  # drawn last, over any box, but under no caption
    boxes = (boxes * scale).tolist()
    for (x1, y1, x2, y2), color in zip(boxes, colors):
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color, width=scale)
    for box, caption, color in zip(boxes, captions, colors):  # after every box, so that no box crosses a caption
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left + 2, bottom - top + 2
        tx, ty = _place_caption(box, (text_w, text_h), width, height, taken)
        taken.append((tx, ty, tx + text_w, ty + text_h))
        draw.rectangle([tx, ty, tx + text_w - 1, ty + text_h - 1], fill=color)
        draw.text((tx + 1 - left, ty + 1 - top), caption, fill=(0, 0, 0), font=font)
    if note:
        draw.rectangle([0, 0, width - 1, taken[0][3] - 1], fill=(0, 0, 0))
        draw.text((2 - note_box[0], 2 - note_box[1]), note, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def draw_instances(image: np.ndarray, detections: Detections, class_names: Sequence[str], *,
                   score_threshold: float | None = None, alpha: float = 0.45, scale: int = 1,
                   best_below: int = 0) -> np.ndarray:
    """Draw detections on a copy of `image` (H, W, 3) uint8 -> (scale*H, scale*W, 3) uint8.

    Each instance gets its own colour: a translucent mask (`alpha` of the colour) with a solid outline, its box
    and a caption "class score" kept inside the image and off the other captions. Detections below
    `score_threshold` are left out. `scale` enlarges the picture (nearest neighbour, each pixel a visible block)
    so that the captions are drawn at a readable size. `best_below`: when no detection reaches the threshold,
    draw the best this many below it instead, each captioned "class 0.33 (< 0.50)", under a note across the top
    that says so (or that there is no detection at all), so that an empty-looking picture explains itself.
    """
    image = _as_rgb(image)
    detections = detections.to("cpu")
    note, below = None, False
    if score_threshold is not None:
        shown = detections[detections.scores >= score_threshold]
        if len(shown) == 0 and best_below > 0:
            below = len(detections) > 0
            shown = detections[torch.argsort(detections.scores, descending=True)[:best_below]]
            note = f"no score >= {score_threshold:.2f}; best {len(shown)} shown" if below else "no detection at all"
        detections = shown
    labels = detections.labels.tolist()
    scores = detections.scores.tolist()
    marker = f" (< {score_threshold:.2f})" if below else ""
    captions = [f"{_class_name(class_names, label)} {score:.2f}{marker}" for label, score in zip(labels, scores)]
    return _draw(image, detections.boxes.numpy(), detections.masks.numpy().astype(bool), captions, alpha,
                 scale=scale, note=note)


def draw_ground_truth(dataset, image_index: int, *, alpha: float = 0.45, scale: int = 1) -> np.ndarray:
    """Draw a data set image's ground truth -> (scale*H, scale*W, 3) uint8; crowd regions are captioned
    "class (crowd)"; `scale` as in draw_instances."""
    image = _as_rgb(dataset.load_image(image_index))
    masks, class_ids = dataset.load_mask(image_index)  # (N, H, W) bool, (N,) int64; negative = crowd
    masks = np.asarray(masks, dtype=bool)
    captions = [
        _class_name(dataset.class_names, abs(int(c))) + (" (crowd)" if c < 0 else "") for c in np.asarray(class_ids)
    ]
    return _draw(image, masks_to_boxes(masks), masks, captions, alpha, scale=scale)


def _class_name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def save_image(array: np.ndarray | torch.Tensor | Image.Image, path: str | Path) -> Path:
    """Write an (H, W, 3) or (H, W) uint8 array (or a Pillow image) as PNG; the parent folder is created.
    Returns the path."""
    if isinstance(array, torch.Tensor):
        array = array.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = array if isinstance(array, Image.Image) else Image.fromarray(_as_rgb(np.asarray(array)))
    return atomic_write(path, lambda file: picture.save(file, format="PNG"))


def contact_sheet(tiles: Sequence[np.ndarray], *, columns: int, labels: Sequence[str] | None = None,
                  gap: int = 8) -> np.ndarray:
    """Tiles of one size (h, w, 3) uint8, row by row in a grid of `columns`, on white -> (H, W, 3) uint8.

    With `labels` (one per tile) each tile gets its label written above it. The grid is
    rows = ceil(len(tiles) / columns): H = rows * (label + h + gap) + gap, W = columns * (w + gap) + gap.
    """
    if not tiles:
        raise ValueError("contact_sheet: no tiles")
    if columns < 1:
        raise ValueError(f"contact_sheet: columns must be >= 1, got {columns}")
    tiles = [_as_rgb(np.asarray(tile)) for tile in tiles]
    tile_h, tile_w = tiles[0].shape[:2]
    if any(tile.shape[:2] != (tile_h, tile_w) for tile in tiles):
        raise ValueError(f"contact_sheet: tiles differ in size: {sorted({t.shape[:2] for t in tiles})}")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"contact_sheet: {len(labels)} labels for {len(tiles)} tiles")
    font = _font(max(1, tile_w // 128))
    label_h = 0
    if labels is not None:
        sizes = [ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), label, font=font) for label in labels]
        label_h = max(bottom - top for _, top, _, bottom in sizes) + 4
    rows = math.ceil(len(tiles) / columns)
    cell_w, cell_h = tile_w + gap, label_h + tile_h + gap
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        x, y = gap + (i % columns) * cell_w, gap + (i // columns) * cell_h
        if labels is not None:
            left, top, _, _ = draw.textbbox((0, 0), labels[i], font=font)
            draw.text((x - left, y + 2 - top), labels[i], fill=(0, 0, 0), font=font)
        sheet.paste(Image.fromarray(tile), (x, y + label_h))
    return np.asarray(sheet)


# ---------------------------------------------------------------------------------------------- plots
def _save_figure(figure: Figure, path: str | Path) -> Path:
    # Drawing through FigureCanvasAgg keeps pyplot's global state and any window backend out of it.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda file: figure.savefig(file, format="png"))


def _read_records(records: Iterable[dict] | str | Path) -> list[dict]:
    """Records as given, or read from a JSON-lines file (one object a line, blank lines skipped)."""
    if isinstance(records, (str, Path)):
        path = Path(records)
        lines = path.read_text().splitlines()
        parsed = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    parsed.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not a JSON object: {error}") from error
        return parsed
    return list(records)


def _loss_keys(records: list[dict]) -> list[str]:
    """The five named losses and the total, their "val_" forms, and any other key with "loss" in its name."""
    seen = [key for record in records for key in record]
    keys = [name for name in LOG_LOSS_NAMES if name in seen]
    keys += [f"val_{name}" for name in LOG_LOSS_NAMES if f"val_{name}" in seen]
    keys += sorted({key for key in seen if "loss" in key and key not in keys})
    return keys


def plot_losses(records: Iterable[dict] | str | Path, path: str | Path) -> Path:
    """Plot loss curves against "step" (or the record's position) and write a PNG.

    `records` is a list of dicts such as {"step": 10, "loss": 2.1, "rpn_class": 0.3, ...}, or the path of a
    JSON-lines file of them. The total is drawn thick; the y axis is logarithmic when the values are all
    positive and span more than a factor of 20.
    """
    records = _read_records(records)
    keys = _loss_keys(records)
    if not keys:
        raise ValueError("plot_losses: the records hold no losses (expected keys such as 'loss', 'rpn_class')")
    figure = Figure(figsize=(8, 5), dpi=100)
    axes = figure.add_subplot()
    finite_values = []
    for key in keys:
        points = [(record.get("step", position), float(record[key])) for position, record in enumerate(records)
                  if isinstance(record.get(key), numbers.Real) and math.isfinite(record[key])]
        if not points:
            continue
        steps, values = zip(*points)
        finite_values.extend(values)
        axes.plot(steps, values, label=key, linewidth=2.2 if key == "loss" else 1.0)
    if finite_values and min(finite_values) > 0 and max(finite_values) / min(finite_values) > 20:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return _save_figure(figure, path)


def plot_precision_recall(precisions: Sequence[float], recalls: Sequence[float], path: str | Path, *,
                          title: str = "Precision-Recall", ap: float | None = None) -> Path:
    """Plot the precision-recall steps of `evaluation.compute_ap` and write a PNG.

    The area shaded under the steps is the AP `compute_ap` reports (precision i holds from recall i-1 to i).
    """
    precisions, recalls = np.asarray(precisions, dtype=float), np.asarray(recalls, dtype=float)
    if precisions.shape != recalls.shape:
        raise ValueError(f"precisions {precisions.shape} and recalls {recalls.shape} differ in shape")
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    axes.plot(recalls, precisions, drawstyle="steps-pre")
    axes.fill_between(recalls, precisions, step="pre", alpha=0.25)
    axes.set_xlim(0, 1.05)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title if ap is None else f"{title} (AP = {ap:.3f})")
    figure.tight_layout()
    return _save_figure(figure, path)
