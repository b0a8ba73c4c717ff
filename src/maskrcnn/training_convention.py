"""How a training step samples its targets and weighs its losses, torchvision's way or matterport's, chosen
once by `Config.training_convention` where the model is built; the forward calls the chosen object's methods.

The network is the same; the references differ in what they train it on and how each loss is normalised:

| | torchvision (`RegionProposalNetwork`, `RoIHeads`) | matterport (`build_rpn_targets`, `detection_targets_graph`) |
|---|---|---|
| ROIs | ground-truth boxes added to the proposals | proposals only |
| ROI sample | positives <= ratio x size, negatives fill it up | positives <= ratio x size, negatives = positives / ratio - positives, zero ROIs pad it |
| box losses | smooth L1 beta 1/9, summed, / sampled anchors or ROIs | smooth L1 beta 1, mean over 4 x positives |
| mask loss | BCE with logits, mean | BCE of the sigmoid clipped to [1e-7, 1 - 1e-7], mean |
| crowd boxes | dropped (its reference scripts keep iscrowd == 0) | anchors and ROIs at IoU >= 0.001 with one are never negative |

Both compute the RPN targets on pixel boxes (far corner one past the box): matterport's `build_rpn_targets`
works on pixel anchors, not on the (H - 1) convention of its graph.

Shape letters:
    L: anchors; G: ground-truth boxes of one image; K: crowd boxes of one image; M: proposals of one image
"""
from __future__ import annotations

from torch import Tensor

from .box_head import (DetectionTargets, detection_targets, detection_targets_zero_padded, mrcnn_bbox_loss,
                       mrcnn_bbox_loss_per_positive, mrcnn_class_loss)
from .frame import PixelFrame
from .mask_head import mrcnn_mask_loss, mrcnn_mask_loss_clipped
from .rpn import RPNTargets, rpn_bbox_loss, rpn_bbox_loss_per_positive, rpn_class_loss, rpn_targets

# matterport's `build_rpn_targets` and `detection_targets_graph`: `no_crowd_bool = crowd_iou_max < 0.001`
CROWD_IOU = 0.001


class TorchvisionTraining:
    """torchvision's training targets and losses. rpn: keyword arguments of `rpn.rpn_targets`; rois: of
    `box_head.detection_targets`; frame: the model's box frame (the RPN targets are made on its pixel boxes)."""

    rpn_class_loss = staticmethod(rpn_class_loss)
    rpn_bbox_loss = staticmethod(rpn_bbox_loss)
    mrcnn_class_loss = staticmethod(mrcnn_class_loss)
    mrcnn_bbox_loss = staticmethod(mrcnn_bbox_loss)
    mrcnn_mask_loss = staticmethod(mrcnn_mask_loss)

    def __init__(self, *, frame: PixelFrame, rpn: dict, rois: dict):
        self.frame = frame
        self.rpn = dict(rpn)
        self.rois = dict(rois)

    def rpn_targets(self, anchors: Tensor, gt_boxes: list[Tensor], crowd_boxes: list[Tensor], windows: list) -> RPNTargets:
        """anchors (L, 4), gt_boxes per image (G, 4), crowd_boxes per image (K, 4), all in the model's frame;
        windows per image (y1, x1, y2, x2). Crowd boxes are left out."""
        pixels = self.frame.to_pixels
        return rpn_targets(pixels(anchors), [pixels(b) for b in gt_boxes], windows, **self.rpn)

    def detection_targets(self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor],
                          crowd_boxes: list[Tensor]) -> DetectionTargets:
        """proposals per image (M, 4), gt_boxes (G, 4), crowd_boxes (K, 4) in the model's frame; gt_labels (G,).
        Crowd boxes are left out."""
        return detection_targets(proposals, gt_boxes, gt_labels, **self.rois)


class MatterportTraining(TorchvisionTraining):
    """matterport's training targets and losses (its `build_rpn_targets`, `detection_targets_graph` and the
    five `*_loss_graph` functions); the same arguments as `TorchvisionTraining`."""

    rpn_bbox_loss = staticmethod(rpn_bbox_loss_per_positive)
    mrcnn_bbox_loss = staticmethod(mrcnn_bbox_loss_per_positive)
    mrcnn_mask_loss = staticmethod(mrcnn_mask_loss_clipped)

    def rpn_targets(self, anchors: Tensor, gt_boxes: list[Tensor], crowd_boxes: list[Tensor], windows: list) -> RPNTargets:
        """As `TorchvisionTraining.rpn_targets`, but an anchor near a crowd box is never negative."""
        pixels = self.frame.to_pixels
        return rpn_targets(pixels(anchors), [pixels(b) for b in gt_boxes], windows,
                           crowd_boxes=[pixels(b) for b in crowd_boxes], crowd_iou=CROWD_IOU, **self.rpn)

    def detection_targets(self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor],
                          crowd_boxes: list[Tensor]) -> DetectionTargets:
        """matterport's sample, zero-padded (`box_head.detection_targets_zero_padded`); IoU in the model's frame
        equals matterport's in normalised coordinates (IoU does not change under a per-axis scale)."""
        return detection_targets_zero_padded(proposals, gt_boxes, gt_labels, crowd_boxes, crowd_iou=CROWD_IOU, **self.rois)


CONVENTIONS = {"torchvision": TorchvisionTraining, "matterport": MatterportTraining}


def build_training_convention(name: str, *, frame: PixelFrame, rpn: dict, rois: dict) -> TorchvisionTraining:
    """The convention `Config.training_convention` names, with the stages' settings bound."""
    return CONVENTIONS[name](frame=frame, rpn=rpn, rois=rois)
