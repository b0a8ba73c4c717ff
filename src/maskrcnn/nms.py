"""Per-class (or per-level) non-maximum suppression with the same result as torchvision's batched_nms.

Shape letters:
    B: boxes; K: boxes kept
torchvision's `batched_nms` on the CPU, above 1000 boxes, runs one NMS per group and finds each group's
boxes with `torch.where(idxs == group)`: a full pass over all B boxes per group. With the score threshold
at 0 the detection layer has 1000 ROIs x 90 classes = 90,000 candidates in 90 groups, and those passes
(compare, nonzero, gather) took more CPU time than the NMS itself. Here the boxes are sorted
by group once and each group is a slice.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms as torchvision_batched_nms
from torchvision.ops import nms

# torchvision switches from its one-call "coordinate trick" to one NMS per group above this many box
# coordinates on the CPU (100,000 on CUDA, torchvision 0.29); below it we call torchvision, so that the
# result is its own.
CPU_GROUPED_ABOVE = 4000
CUDA_GROUPED_ABOVE = 100_000


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """(K,) int64 indices of the (B, 4) boxes kept by NMS within each group of `idxs` (B,), by decreasing score.

    Equal to torchvision.ops.batched_nms for every input: each group's NMS sees the group's boxes in the
    same (ascending index) order as torchvision's, and the kept indices are ordered by the same sort.
    """
    limit = CPU_GROUPED_ABOVE if boxes.device.type == "cpu" else CUDA_GROUPED_ABOVE
    if boxes.numel() <= limit or torch.jit.is_tracing() or torch.jit.is_scripting():
        return torchvision_batched_nms(boxes, scores, idxs, iou_threshold)
    order = torch.sort(idxs, stable=True).indices  # (B,) grouped, ascending index within a group
    counts = torch.unique_consecutive(idxs[order], return_counts=True)[1].tolist()
    grouped_boxes, grouped_scores = boxes[order], scores[order]  # (B, 4), (B,): each group one slice
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    start = 0
    for count in counts:
        kept = nms(grouped_boxes[start:start + count], grouped_scores[start:start + count], iou_threshold)
        keep_mask[order[start:start + count][kept]] = True
        start += count
    keep = torch.where(keep_mask)[0]  # (K,) ascending
    return keep[scores[keep].sort(descending=True)[1]]


# The first prefix `first_kept_nms` tries, in boxes; it grows by PREFIX_GROWTH until enough are kept.
FIRST_PREFIX, PREFIX_GROWTH = 1024, 4


def first_kept_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, count: int) -> Tensor:
    """batched_nms(boxes, scores, idxs, iou_threshold)[:count] for boxes already in decreasing order of score,
    without suppressing among the boxes that cannot make the first `count`.

    Whether a box survives depends only on the higher-scoring boxes of its group, so NMS over the first n boxes
    keeps exactly the kept boxes among those n; once it keeps `count` of them, every later box ranks below them.
    The prefix starts at FIRST_PREFIX boxes and grows until it keeps `count` or holds every box. The detection
    layer at score threshold 0 (the COCO evaluation, the benchmarks) has 1000 ROIs x 90 classes = 90,000
    candidates of which 100 are kept: one NMS over about a thousand instead of 90 over a thousand each.
    Scores must be distinct (ties would make "the first n" depend on the sort); traced for ONNX export, the
    whole NMS runs, as the graph needs one shape-independent path.
    """
    total = boxes.shape[0]
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return batched_nms(boxes, scores, idxs, iou_threshold)[:count]
    prefix = min(total, max(FIRST_PREFIX, count))
    while True:
        keep = batched_nms(boxes[:prefix], scores[:prefix], idxs[:prefix], iou_threshold)  # (K,) into the prefix
        if keep.shape[0] >= count or prefix == total:
            return keep[:count]
        prefix = min(total, prefix * PREFIX_GROWTH)


def top_k_stable(scores: Tensor, k) -> Tensor:
    """(..., k) indices of the k largest scores along the last dimension, ties to the lower index (as
    tf.nn.top_k).

    While tracing for ONNX export (which has no stable sort) this is topk: ONNX's TopK puts equal values in
    index order, as tf.nn.top_k does, while torch.topk on the CPU promises no order among ties.
    """
    if torch.jit.is_tracing():
        return scores.topk(k, dim=-1).indices
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
