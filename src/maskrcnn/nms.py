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


def top_k_stable(scores: Tensor, k) -> Tensor:
    """(..., k) indices of the k largest scores along the last dimension, ties to the lower index (as
    tf.nn.top_k).

    While tracing for ONNX export (which has no stable sort) this is topk: ONNX's TopK puts equal values in
    index order, as tf.nn.top_k does, while torch.topk on the CPU promises no order among ties.
    """
    if torch.jit.is_tracing():
        return scores.topk(k, dim=-1).indices
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
