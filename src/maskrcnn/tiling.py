"""Tiled prediction: an image of any size, cut into overlapping tiles, predicted in batches, merged so that every
object appears once.

Tiles: `tile` x `tile` windows `tile - overlap` apart, the last row and column aligned to the image's far edges
(so no tile is padded and no strip is left over); an image smaller than a tile is one window of its own size.
A tile edge that is not an image edge is an *interior* edge: what the model sees there may be cut.

Merging (every detection first mapped to image pixels, its mask cropped to its box):
1. A detection at least `edge_tolerance` px clear of its tile's interior edges is *whole*. The same object
   whole in several tiles (it lies in their overlap) is kept once: the detection with the highest score, and
   of equal scores the one farthest from an interior edge (the tile that sees the most context around it).
2. A detection touching an interior edge is a *piece*. A piece of an object found whole elsewhere is dropped:
   with an overlap at least as large as the largest object, every object is whole in some tile.
3. The remaining pieces (objects larger than the overlap) are joined with the pieces of the same object from
   the neighbouring tiles: mask union, box of the union, the label covering the most pixels and the score
   averaged over the pieces weighted by their pixels.
4. Last, objects found twice: of two merged detections whose masks overlap at IoU >= `duplicate_iou`, the
   lower-scoring one goes, whatever their classes. Box NMS inside one tile keeps a second, looser box on an
   object when the two boxes overlap less than its threshold, though the masks are nearly the same; the
   masks of two different objects hardly overlap (instance masks of what is visible are disjoint), so mask
   IoU tells a duplicate from a neighbour. `duplicate_iou=None` leaves this step out: one tile then gives
   exactly the model's plain prediction.
Two detections from different tiles are the same object when, inside the region both tiles see, their masks
intersect over at least `match_threshold` of the smaller of the two (intersection over the smaller, as SAHI's
IOS, but of masks and only where both tiles could see the object).

Shape letters: K: detections from all tiles; N: merged detections; h, w: a mask crop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .errors import ConfigError
from .large_images import as_source
from .mask_crops import MaskCrops
from .structures import Detections

EDGE_TOLERANCE = 2.0  # px: a box this close to an interior tile edge is taken as cut by it
MATCH_THRESHOLD = 0.5  # mask intersection over the smaller (inside the shared region) for "the same object"
DUPLICATE_IOU = 0.5  # mask IoU at which two merged detections are one object found twice


@dataclass(frozen=True)
class Tile:
    """A window (y0, x0, y1, x1) of the image, in pixels, far edges one past; which of its edges are interior."""

    y0: int
    x0: int
    y1: int
    x1: int
    image_size: tuple[int, int]

    def interior_margin(self, box) -> float:
        """Distance in px from an x1 y1 x2 y2 box to the nearest interior edge of this tile (inf: none)."""
        height, width = self.image_size
        distances = [float("inf")]
        if self.x0 > 0:
            distances.append(float(box[0]) - self.x0)
        if self.y0 > 0:
            distances.append(float(box[1]) - self.y0)
        if self.x1 < width:
            distances.append(self.x1 - float(box[2]))
        if self.y1 < height:
            distances.append(self.y1 - float(box[3]))
        return min(distances)


def tile_positions(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of the windows along one side of `size` px: 0, stride, 2 stride, ..., and size - tile last."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles covering an (height, width) image, row by row."""
    check_tiling(tile, overlap)
    return [Tile(y, x, min(y + tile, height), min(x + tile, width), (height, width))
            for y in tile_positions(height, tile, overlap) for x in tile_positions(width, tile, overlap)]


def check_tiling(tile: int, overlap: int, batch_size: int = 1) -> None:
    if tile < 16:
        raise ConfigError(f"--tile must be at least 16 px, got {tile}")
    if not 0 <= overlap < tile:
        raise ConfigError(f"--overlap must be at least 0 and less than --tile ({tile}), got {overlap}; "
                          f"an overlap as large as the largest object lets every object be seen whole")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")


@dataclass
class _Candidates:
    """Detections of all tiles in image pixels (K of them), before merging."""

    boxes: Tensor  # (K, 4) x1 y1 x2 y2
    labels: Tensor  # (K,) int64
    scores: Tensor  # (K,) float32
    masks: MaskCrops  # K crops
    tiles: list[int]  # (K,) index of the tile each came from
    margins: list[float]  # (K,) distance to the nearest interior edge of its tile


def predict_tiled(predict_tiles: Callable[[list], list[Detections]], image, *, tile: int, overlap: int,
                  batch_size: int = 1, max_detections: int | None = None, progress: bool = False,
                  edge_tolerance: float = EDGE_TOLERANCE, match_threshold: float = MATCH_THRESHOLD,
                  duplicate_iou: float | None = DUPLICATE_IOU) -> Detections:
    """One Detections (compact masks, `MaskCrops`) for an image of any size, predicted tile by tile.

    predict_tiles: a list of tile images -> one Detections per tile, in the tile's pixels (`MaskRCNN.predict`);
    image: an (H, W, 3) uint8 array, a (3, H, W) float tensor, an image file path or a `large_images` source;
    max_detections: keep at most this many of the merged detections, by score (None: all).
    """
    check_tiling(tile, overlap, batch_size)
    if max_detections is not None and max_detections < 0:
        raise ConfigError(f"--max-detections must be 0 or more, got {max_detections}")
    source = as_source(image)
    height, width = source.height, source.width
    tiles = tile_windows(height, width, tile, overlap)
    found: list[tuple[int, Detections]] = []
    with tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(tiles), batch_size):
            batch = tiles[start:start + batch_size]
            images = [source.read(t.y0, t.x0, t.y1, t.x1) for t in batch]
            for offset, (t, detections) in enumerate(zip(batch, predict_tiles(images))):
                found.append((start + offset, _to_image(detections.to("cpu"), t)))
            bar.update(len(batch))
    candidates = _gather(found, tiles, (height, width))
    merged = merge(candidates, tiles, edge_tolerance=edge_tolerance, match_threshold=match_threshold)
    if duplicate_iou is not None:
        merged = drop_duplicates(merged, duplicate_iou)
    return merged if max_detections is None else merged[torch.arange(min(max_detections, len(merged)))]


def _to_image(detections: Detections, tile: Tile) -> Detections:
    """One tile's detections -> image pixels, masks cropped to their tight boxes."""
    crops = detections.compact().masks
    shift = torch.tensor([tile.x0, tile.y0, tile.x0, tile.y0], dtype=torch.float32)
    offsets = crops.offsets + torch.tensor([tile.x0, tile.y0], dtype=torch.int64)
    return Detections(detections.boxes.float() + shift, detections.labels, detections.scores.float(),
                      MaskCrops(crops.crops, offsets, tile.image_size))


def _gather(found: list[tuple[int, Detections]], tiles: list[Tile], image_size: tuple[int, int]) -> _Candidates:
    crops, offsets, tile_of, margins, boxes, labels, scores = [], [], [], [], [], [], []
    for index, detections in found:
        boxes.append(detections.boxes)
        labels.append(detections.labels)
        scores.append(detections.scores)
        crops += detections.masks.crops
        offsets.append(detections.masks.offsets)
        tile_of += [index] * len(detections)
        margins += [tiles[index].interior_margin(box) for box in detections.boxes.tolist()]
    if not boxes:
        empty = Detections.empty(*image_size)
        return _Candidates(empty.boxes, empty.labels, empty.scores, MaskCrops.empty(*image_size), [], [])
    return _Candidates(torch.cat(boxes), torch.cat(labels), torch.cat(scores),
                       MaskCrops(crops, torch.cat(offsets), image_size), tile_of, margins)


def merge(candidates: _Candidates, tiles: list[Tile], *, edge_tolerance: float = EDGE_TOLERANCE,
          match_threshold: float = MATCH_THRESHOLD) -> Detections:
    """Whole detections kept once, pieces of objects found whole dropped, other pieces joined (module docstring)."""
    count = len(candidates.tiles)
    height, width = candidates.masks.image_size
    if count == 0:
        return Detections(candidates.boxes, candidates.labels, candidates.scores, MaskCrops.empty(height, width))
    areas = candidates.masks.areas().tolist()
    mask_boxes = candidates.masks.mask_boxes()  # (K, 4)
    same = [[] for _ in range(count)]  # same[i]: candidates from other tiles that are the same object as i
    for i, j in overlapping_pairs(mask_boxes):
        if candidates.tiles[i] != candidates.tiles[j] and _same_object(candidates, i, j, tiles) >= match_threshold:
            same[i].append(j)
            same[j].append(i)

    whole = [candidates.margins[i] > edge_tolerance for i in range(count)]
    # 1. Whole detections: the highest-scoring first, of equal scores the most central; one that is an object
    # already kept is a duplicate. (Centre first would let a stray low-scoring box in a central tile push out
    # a confident detection of the object from the tile next to it.)
    kept: list[int] = []
    taken = [False] * count
    order = sorted((i for i in range(count) if whole[i]),
                   key=lambda i: (-float(candidates.scores[i]), -candidates.margins[i], i))
    for i in order:
        if not any(taken[j] for j in same[i] if whole[j]):
            kept.append(i)
            taken[i] = True
    # 2. Pieces of an object seen whole in some tile go.
    pieces = [i for i in range(count) if not whole[i] and not any(whole[j] for j in same[i])]
    # 3. The remaining pieces, joined with the pieces of the same object from other tiles.
    groups = _connected(pieces, same)
    boxes, labels, scores, crops, offsets = [], [], [], [], []
    for i in kept:
        boxes.append(candidates.boxes[i])
        labels.append(int(candidates.labels[i]))
        scores.append(float(candidates.scores[i]))
        crops.append(candidates.masks.crops[i])
        offsets.append(candidates.masks.offsets[i].tolist())
    for group in groups:
        if len(group) == 1:
            i = group[0]
            box, label, score = candidates.boxes[i], int(candidates.labels[i]), float(candidates.scores[i])
            crop, offset = candidates.masks.crops[i], candidates.masks.offsets[i].tolist()
        else:
            crop, offset = _union(candidates.masks, group, mask_boxes)
            box = torch.tensor([offset[0], offset[1], offset[0] + crop.shape[1], offset[1] + crop.shape[0]],
                               dtype=torch.float32)
            label, score = _joined_label_and_score(candidates, group, areas)
        boxes.append(box)
        labels.append(label)
        scores.append(score)
        crops.append(crop)
        offsets.append(offset)
    scores_t = torch.tensor(scores, dtype=torch.float32)
    order_t = torch.sort(scores_t, descending=True, stable=True).indices  # (N,)
    merged = Detections(torch.stack(boxes).float(), torch.tensor(labels, dtype=torch.int64), scores_t,
                        MaskCrops(crops, torch.tensor(offsets, dtype=torch.int64).reshape(-1, 2), (height, width)))
    return merged[order_t]


def drop_duplicates(detections: Detections, iou_threshold: float) -> Detections:
    """Greedy NMS over masks: in score order, a detection whose mask has IoU >= iou_threshold with a kept one's
    goes. `detections` sorted by score (as `merge` returns them), masks as `MaskCrops`; the order is kept."""
    masks = detections.masks
    mask_boxes = masks.mask_boxes()  # (N, 4) x1 y1 x2 y2, integer pixels
    areas = masks.areas().tolist()
    dropped = [False] * len(detections)
    # Pairs sorted by their first index: every pair (k, i), k < i, that could drop i comes before i drops others.
    for i, j in sorted(overlapping_pairs(mask_boxes)):
        if dropped[i] or dropped[j]:
            continue
        x0, y0 = int(max(mask_boxes[i, 0], mask_boxes[j, 0])), int(max(mask_boxes[i, 1], mask_boxes[j, 1]))
        x1, y1 = int(min(mask_boxes[i, 2], mask_boxes[j, 2])), int(min(mask_boxes[i, 3], mask_boxes[j, 3]))
        shared = int((_window(masks, i, (y0, x0, y1, x1)) & _window(masks, j, (y0, x0, y1, x1))).sum())
        union = areas[i] + areas[j] - shared
        if union > 0 and shared / union >= iou_threshold:
            dropped[j] = True
    keep = torch.tensor([k for k in range(len(detections)) if not dropped[k]], dtype=torch.int64)
    return detections[keep]


def overlapping_pairs(boxes: Tensor) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of (K, 4) x1 y1 x2 y2 boxes that overlap (sweep along x: boxes sorted by x1,
    each compared only with the boxes starting before it ends)."""
    array = boxes.numpy()
    order = np.argsort(array[:, 0], kind="stable")
    starts = array[order, 0]
    pairs = []
    for rank, i in enumerate(order):
        end = np.searchsorted(starts, array[i, 2], side="left")  # boxes starting before box i ends
        for j in order[rank + 1:end]:
            if array[j, 1] < array[i, 3] and array[i, 1] < array[j, 3]:
                pairs.append((int(min(i, j)), int(max(i, j))))
    return pairs


def _same_object(candidates: _Candidates, i: int, j: int, tiles: list[Tile]) -> float:
    """Mask intersection of i and j over the smaller of their areas inside the region both tiles see."""
    a, b = tiles[candidates.tiles[i]], tiles[candidates.tiles[j]]
    region = (max(a.y0, b.y0), max(a.x0, b.x0), min(a.y1, b.y1), min(a.x1, b.x1))  # y0 x0 y1 x1
    if region[2] <= region[0] or region[3] <= region[1]:
        return 0.0
    mask_i = _window(candidates.masks, i, region)
    mask_j = _window(candidates.masks, j, region)
    smaller = min(int(mask_i.sum()), int(mask_j.sum()))
    return int((mask_i & mask_j).sum()) / smaller if smaller else 0.0


def _window(masks: MaskCrops, i: int, region: tuple[int, int, int, int]) -> Tensor:
    """(h, w) bool: instance i's mask over the window (y0, x0, y1, x1) of the image."""
    y0, x0, y1, x1 = region
    out = torch.zeros((y1 - y0, x1 - x0), dtype=torch.bool)
    crop = masks.crops[i]
    cx, cy = masks.offsets[i].tolist()
    top, left = max(y0, cy), max(x0, cx)
    bottom, right = min(y1, cy + crop.shape[0]), min(x1, cx + crop.shape[1])
    if bottom > top and right > left:
        out[top - y0:bottom - y0, left - x0:right - x0] = crop[top - cy:bottom - cy, left - cx:right - cx]
    return out


def _connected(nodes: list[int], same: list[list[int]]) -> list[list[int]]:
    """The groups of `nodes` linked through `same` (only links between members of `nodes` count)."""
    members, seen, groups = set(nodes), set(), []
    for start in nodes:
        if start in seen:
            continue
        group, stack = [], [start]
        seen.add(start)
        while stack:
            node = stack.pop()
            group.append(node)
            for other in same[node]:
                if other in members and other not in seen:
                    seen.add(other)
                    stack.append(other)
        groups.append(sorted(group))
    return groups


def _union(masks: MaskCrops, group: list[int], mask_boxes: Tensor) -> tuple[Tensor, list[int]]:
    """The union of the group's masks as a crop of its tight box, and the crop's (x0, y0)."""
    x0, y0 = int(mask_boxes[group, 0].min()), int(mask_boxes[group, 1].min())
    x1, y1 = int(mask_boxes[group, 2].max()), int(mask_boxes[group, 3].max())
    union = torch.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=torch.bool)
    for i in group:
        union |= _window(masks, i, (y0, x0, y1, x1))
    return union, [x0, y0]


def _joined_label_and_score(candidates: _Candidates, group: list[int], areas: list[int]) -> tuple[int, float]:
    """The label with the most pixels over the pieces, and the pieces' scores averaged weighted by pixels."""
    pixels: dict[int, int] = {}
    for i in group:
        label = int(candidates.labels[i])
        pixels[label] = pixels.get(label, 0) + areas[i]
    label = max(pixels, key=lambda k: (pixels[k], -k))
    total = sum(areas[i] for i in group)
    if total == 0:
        return label, float(max(float(candidates.scores[i]) for i in group))
    return label, sum(float(candidates.scores[i]) * areas[i] for i in group) / total
