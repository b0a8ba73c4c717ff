"""The box frame: how boxes are held inside the model, decoded, clipped, ranked and taken back to the image.

`PixelFrame` is torchvision's convention, the library's own: (x1, y1, x2, y2) float pixels of the padded
batch with the far corner one past the box. The matterport layout (`maskrcnn.matterport.MatterportFrame`)
has the same methods with matterport's arithmetic. The model picks one frame when it is built and hands it
to the stages (anchors, proposal layer, detection layer, post-processing); no stage tests the layout.

Shape letters:
    K: anchors kept before NMS; D: detections of one image; M: head mask size; H, W: the original image's size
"""
from __future__ import annotations

import torch
from torch import Tensor

from .boxes import decode_deltas
from .mask_head import mask_targets
from .postprocess import paste_masks, to_original
from .structures import Detections


class PixelFrame:
    """torchvision's box arithmetic (`BoxCoder`, `clip_boxes_to_image`, `paste_masks_in_image`)."""

    def from_pixels(self, boxes: Tensor) -> Tensor:
        """(..., 4) pixel boxes (anchors, ground truth), far corner one past the box -> this frame."""
        return boxes

    def to_pixels(self, boxes: Tensor) -> Tensor:
        """(..., 4) boxes in this frame -> pixel boxes, far corner one past the box."""
        return boxes

    def decode(self, deltas: Tensor, boxes: Tensor, std_dev) -> Tensor:
        """(..., 4) deltas applied to (..., 4) boxes: `boxes.decode_deltas`."""
        return decode_deltas(deltas, boxes, std_dev)

    def top_k(self, scores: Tensor, k) -> Tensor:
        """(N, k) indices of the k largest of (N, L) scores (order among equal scores unspecified)."""
        return scores.topk(k, dim=1).indices

    def proposal_windows(self, windows: list, image_size: tuple[int, int]) -> list:
        """Where proposals are clipped: each image's window (y1, x1, y2, x2) inside the padded batch."""
        return windows

    def detection_window(self, window):
        """Where detections are clipped: the image's window (y1, x1, y2, x2)."""
        return window

    def mask_targets(self, masks: Tensor, rois: Tensor, matched_gt: Tensor, window, padded_size: tuple[int, int],
                     mask_size: int) -> Tensor:
        """(P, M, M) mask targets of the positive ROIs: masks (G, h, w) of the resized image (the window of the
        padded batch), rois (P, 4) in this frame of the padded batch (`mask_head.mask_targets`)."""
        top, left = window[0], window[1]
        shift = torch.tensor([left, top, left, top], dtype=rois.dtype, device=rois.device)
        return mask_targets(masks, self.to_pixels(rois) - shift, matched_gt, mask_size)

    def to_detections(self, boxes: Tensor, labels: Tensor, scores: Tensor, mask_probs: Tensor, window,
                      padded_size: tuple[int, int], original_size: tuple[int, int], mask_threshold: float) -> Detections:
        """One image's detections in padded-batch pixels -> Detections in the original image's pixels.

        boxes: (D, 4); labels, scores: (D,); mask_probs: (D, M, M) of each detection's class. Boxes go back to
        the original image (torchvision's `resize_boxes`) and masks are pasted there (`paste_masks`).
        """
        height, width = original_size
        boxes = to_original(boxes, window, original_size)  # (D, 4) original pixels
        masks = paste_masks(mask_probs, boxes, height, width, mask_threshold)  # (D, H, W) bool
        return Detections(boxes.float(), labels, scores.float(), masks)
