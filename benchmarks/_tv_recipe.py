"""torchvision's own Mask R-CNN, sized like `Config.demo()`, and its training loop (for demo_vs_torchvision.py).

The model is torchvision's `MaskRCNN` class with every width and count read from our demo config, so the
two models compare at the same size: a ResNet-18 trunk (trainable batch norm, no pretrained weights), an
FPN over C2..C5 plus a max-pooled P6, a 3x3 RPN conv, two fully connected box layers and four mask convs,
at the demo's channel counts. The training step is torchvision's own (`model(images, targets)` returns a
loss dict; its sum is backpropagated), with the recipe of torchvision's detection references scaled to a
wall-clock budget: SGD with momentum and weight decay on every parameter, linear warm-up, cosine decay that
ends when the budget does, no gradient clipping.

Shape letters: B: images in a batch; N: detections of one image; H, W: image height and width.
"""
from __future__ import annotations

import itertools
import math
import time

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from maskrcnn import Config, Detections

# torchvision names the FPN outputs "0".."3" (P2..P5) and "pool" (P6); ROI heads pool from P2..P5, as ours.
ROI_LEVELS = ["0", "1", "2", "3"]
# Linear warm-up starts at this share of the base rate, as our Trainer's does.
WARMUP_START = 0.1
# torchvision's detection references (references/detection/train.py): SGD, lr 0.02 for a batch of 16 images
# (kept at 0.02 for our 8: smaller rates learned slower here), momentum 0.9, weight decay 1e-4. Fixed here, not
# read from Config.demo(): that config carries our own recipe (AdamW 2e-3, weight decay 0.05), which with SGD
# would mean a tenth of the rate and 500 times the decay (a first run of the benchmark did exactly that).
SGD_LEARNING_RATE = 0.02
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 1e-4


def build_torchvision_maskrcnn(config: Config) -> MaskRCNN:
    """torchvision's MaskRCNN with the backbone, head widths, anchors, ROI counts and thresholds of `config`.

    Equivalent to `resnet_fpn_backbone("resnet18", weights=None, trainable_layers=5,
    norm_layer=nn.BatchNorm2d)` with returned layers 1-4, except for the FPN width, which that helper fixes
    at 256: the trunk and `BackboneWithFPN` are built here so the FPN has `config.fpn_channels`.
    """
    if config.backbone != "resnet18" or config.fpn_norm != "none" or config.box_head != "fc":
        raise ValueError(f"build_torchvision_maskrcnn mirrors the demo preset only, got backbone={config.backbone!r}, "
                         f"fpn_norm={config.fpn_norm!r}, box_head={config.box_head!r}")
    trunk = resnet18(weights=None, norm_layer=nn.BatchNorm2d)  # every layer trainable, as trainable_layers=5
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=config.fpn_channels,
    )  # LastLevelMaxPool by default: P6 = max_pool(P5), five levels for five anchor sizes
    if config.rpn_conv_channels != config.fpn_channels:
        raise ValueError("torchvision's RPNHead keeps the FPN width in its 3x3 conv: rpn_conv_channels must equal fpn_channels")
    # One anchor size per level; torchvision's ratios are height/width, a set equal to ours (0.5, 1, 2).
    anchors = AnchorGenerator(sizes=tuple((size,) for size in config.anchor_scales),
                              aspect_ratios=(tuple(config.anchor_ratios),) * len(config.anchor_scales))
    num_anchors = anchors.num_anchors_per_location()[0]
    pool, mask_pool = config.pool_size, config.mask_pool_size
    return MaskRCNN(
        backbone,
        num_classes=None,  # given by the box and mask predictors, which torchvision then requires
        # min_size = max_size = the image side: 128 px images are not resized
        min_size=config.image_min_dim,
        max_size=config.image_max_dim,
        image_mean=list(config.pixel_mean),
        image_std=list(config.pixel_std),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(config.fpn_channels, num_anchors),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_limit_training,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_limit_inference,
        rpn_post_nms_top_n_train=config.post_nms_rois_training,
        rpn_post_nms_top_n_test=config.post_nms_rois_inference,
        rpn_nms_thresh=config.rpn_nms_threshold,
        rpn_fg_iou_thresh=config.rpn_positive_iou,
        rpn_bg_iou_thresh=config.rpn_negative_iou,
        rpn_batch_size_per_image=config.rpn_train_anchors_per_image,
        rpn_positive_fraction=config.rpn_positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(ROI_LEVELS, pool, config.roi_sampling_ratio),
        box_head=TwoMLPHead(config.fpn_channels * pool * pool, config.box_head_channels),
        box_predictor=FastRCNNPredictor(config.box_head_channels, config.num_classes),
        box_score_thresh=config.detection_min_confidence,
        box_nms_thresh=config.detection_nms_threshold,
        box_detections_per_img=config.detection_max_instances,
        box_fg_iou_thresh=config.roi_positive_iou,
        box_bg_iou_thresh=config.roi_negative_iou,
        box_batch_size_per_image=config.train_rois_per_image,
        box_positive_fraction=config.roi_positive_ratio,
        # torchvision's weights multiply the deltas; ours divide by standard deviations: (10, 10, 5, 5)
        bbox_reg_weights=tuple(1.0 / s for s in config.bbox_std_dev),
        mask_roi_pool=MultiScaleRoIAlign(ROI_LEVELS, mask_pool, config.roi_sampling_ratio),
        mask_head=MaskRCNNHeads(config.fpn_channels, [config.mask_head_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(config.mask_head_channels, config.mask_head_channels, config.num_classes),
    )


def learning_rate(step: int, elapsed_fraction: float, *, base: float, warmup_steps: int) -> float:
    """Linear warm-up over the first steps, times a cosine that reaches 0 when the time budget is spent."""
    warmup = min(1.0, WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps) if warmup_steps else 1.0
    return base * warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed_fraction)))


def train_torchvision(model: MaskRCNN, loader, *, time_budget: float, config: Config) -> tuple[int, float]:
    """torchvision's training step until the step during which `time_budget` seconds pass.

    SGD with torchvision's reference rate, momentum and weight decay (above) and the warm-up length of
    `config`. Should the loader's data
    end first, it starts another pass (a new order and new flips), so the cosine always runs its course.
    Returns (steps, seconds from the start of the loop to the end of the last step).
    Raises FloatingPointError when the summed loss is not finite (torchvision's reference script exits there).
    """
    if len(loader) == 0:
        raise ValueError("train_torchvision: the loader has no batches")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=SGD_LEARNING_RATE, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    model.train()
    steps, seconds = 0, 0.0
    started = time.perf_counter()
    for images, targets in _batches_forever(loader):  # [B images (3, H, W) in [0, 1]], [B target dicts]
        lr = learning_rate(steps, (time.perf_counter() - started) / time_budget, base=SGD_LEARNING_RATE,
                           warmup_steps=config.lr_warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = model(images, targets)  # {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
        values = {name: float(value.detach()) for name, value in losses.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"torchvision Mask R-CNN: a loss is not finite at step {steps + 1}: "
                                     + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        steps += 1
        seconds = time.perf_counter() - started
        if seconds > time_budget:
            break
    return steps, seconds


def _batches_forever(loader):
    """The loader's batches, pass after pass; each pass advances the seeded sampler's epoch."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


@torch.no_grad()
def predict_torchvision(model: MaskRCNN, images, *, mask_threshold: float) -> list[Detections]:
    """Detections of a list of numpy (H, W, 3) uint8 images, masks thresholded as ours are."""
    model.eval()
    tensors = [torch.from_numpy(image).permute(2, 0, 1).float().div(255.0) for image in images]  # (3, H, W)
    outputs = model(tensors)
    return [
        Detections(boxes=out["boxes"], labels=out["labels"], scores=out["scores"],
                   masks=out["masks"][:, 0] > mask_threshold)  # (N, 1, H, W) probabilities -> (N, H, W) bool
        for out in outputs
    ]
