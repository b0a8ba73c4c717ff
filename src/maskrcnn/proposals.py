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

from .boxes import clip_boxes, decode_deltas, keep_min_size
from .nms import batched_nms
from .rpn import RPNOutput


def clip_to_window(boxes: Tensor, window: tuple[float, float, float, float]) -> Tensor:
    """Clip (..., 4) boxes to window (y1, x1, y2, x2): the real image inside the padded batch."""
    y1, x1, y2, x2 = window
    if y1 == 0 and x1 == 0:
        return clip_boxes(boxes, y2, x2)
    x = boxes[..., 0::2].clamp(min=x1, max=x2)
    y = boxes[..., 1::2].clamp(min=y1, max=y2)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


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
    box_convention: str = "pixels",
    image_size: tuple[int, int] | None = None,
) -> list[Tensor]:
    """Proposals per image, (R, 4) x1 y1 x2 y2 in padded-batch pixels, by decreasing objectness.

    anchors: (L, 4), the same for every image of the batch. box_convention "matterport" (normalized_frame.py)
    decodes as matterport does and clips to the whole padded image of `image_size` (H, W), not the window.
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
    elif box_convention == "matterport":  # tf.nn.top_k: equal scores (the padding's anchors) in anchor order
        from .normalized_frame import top_k_stable

        top = top_k_stable(scores, top_count(pre_nms_limit, scores.shape[1]))  # (N, K)
    else:
        top = scores.topk(top_count(pre_nms_limit, scores.shape[1]), dim=1).indices  # (N, K)

    batch = torch.arange(num_images, device=scores.device)[:, None]
    top_scores = rpn.to_probability(scores[batch, top])  # (N, K)
    top_deltas = rpn.deltas.detach()[batch, top]  # (N, K, 4)
    if box_convention == "matterport":  # matterport clips proposals to the padded image, [0, 1] normalised
        from .normalized_frame import apply_deltas, image_frame

        top_boxes = apply_deltas(top_deltas, anchors[top], std_dev)  # (N, K, 4)
        windows = [image_frame(image_size)] * num_images
    else:
        top_boxes = decode_deltas(top_deltas, anchors[top], std_dev)  # (N, K, 4)
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
