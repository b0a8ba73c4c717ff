"""The proposal layer: top-k anchors by objectness, decode, clip, NMS (seed section 1.2.2).

Shape letters:
    N: images in the batch
    L: anchors over all levels
    K: anchors kept before NMS
    R: proposals kept for one image
Boxes are x1 y1 x2 y2 in padded-batch pixels.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from .boxes import clip_to_window, keep_min_size
from .frame import PixelFrame
from .nms import batched_nms
from .rpn import RPNOutput


def top_count(limit: int, available):
    """min(limit, available). While tracing for ONNX export `available` is a traced size, and the minimum is
    kept in the graph (Python's min would freeze the example image's count into it)."""
    if torch.jit.is_tracing():
        return torch.clamp(torch.as_tensor(available), max=limit)
    return min(limit, available)


@torch.no_grad()
def propose(
    rpn: RPNOutput,
    anchors: Tensor,
    windows: list[tuple[float, float, float, float]],
    *,
    pre_nms_limit: int,
    pre_nms_per_level: bool,
    nms_threshold: float,
    nms_per_level: bool,
    post_nms_limit: int,
    min_size: float,
    std_dev,
    frame: PixelFrame,
    image_size: tuple[int, int] | None = None,
) -> list[Tensor]:
    """Proposals per image, (R, 4) x1 y1 x2 y2 in padded-batch pixels, by decreasing objectness.

    anchors: (L, 4), the same for every image of the batch, in `frame`. The frame decodes, ranks over all
    anchors and says where to clip (the matterport layout clips to the whole padded image of `image_size`
    (H, W), not the window).
    """
    scores = rpn.ranking_scores().detach()  # (N, L)
    num_images = scores.shape[0]
    level_ids = torch.cat(
        [torch.full((n,), level, dtype=torch.int64, device=scores.device) for level, n in enumerate(rpn.level_sizes)]
    )  # (L,)

    # Top-k before decoding: only the kept anchors are decoded.
    if pre_nms_per_level:
        top_indices, start = [], 0
        for n in rpn.level_sizes:
            k = top_count(pre_nms_limit, n)
            top_indices.append(scores[:, start:start + n].topk(k, dim=1).indices + start)
            start += n
        top = torch.cat(top_indices, dim=1)  # (N, K)
    else:
        top = frame.top_k(scores, top_count(pre_nms_limit, scores.shape[1]))  # (N, K)

    batch = torch.arange(num_images, device=scores.device)[:, None]
    top_scores = rpn.to_probability(scores[batch, top])  # (N, K)
    top_deltas = rpn.deltas.detach()[batch, top]  # (N, K, 4)
    top_boxes = frame.decode(top_deltas, anchors[top], std_dev)  # (N, K, 4)
    windows = frame.proposal_windows(windows, image_size)
    top_levels = level_ids[top]  # (N, K)

    proposals = []
    for boxes, box_scores, levels, window in zip(top_boxes, top_scores, top_levels, windows):
        boxes = clip_to_window(boxes, window)
        if min_size > 0:
            keep = keep_min_size(boxes, min_size)
            boxes, box_scores, levels = boxes[keep], box_scores[keep], levels[keep]
        if nms_per_level:
            keep = batched_nms(boxes, box_scores, levels, nms_threshold)
        else:
            keep = nms(boxes, box_scores, nms_threshold)
        proposals.append(boxes[keep[:post_nms_limit]])
    return proposals
