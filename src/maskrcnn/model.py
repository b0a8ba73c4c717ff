"""MaskRCNN: the steps of the data flow (preprocess, backbone, RPN, proposals, ROI heads, detections,
masks, postprocess) wired in order.

`model(images, targets)` always returns the five losses; `model.predict(images)` always returns one
Detections per image. The config is read here and nowhere else: the stages get plain keyword arguments,
and the layout (`maskrcnn.layout`) is chosen once, here, as objects handed to the stages.

Shape letters:
    N: images; L: anchors; R: ROIs; D: detections; C: classes; M: mask size (28)
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .backbone import build_backbone
from .box_head import BoxHead
from .config import Config
from .layout import build_preprocessor, layout_of
from .mask_head import MaskHead, sample_mask_rois, select_class
from .postprocess import BoxDetections, detect
from .preprocess import ImageBatch, to_image_tensors, window_size
from .proposals import propose
from .rpn import RPNHead
from .structures import Detections
from .training_convention import build_training_convention


def per_image(values: Tensor, counts: list[int]) -> list[Tensor]:
    """Split a tensor over all images' rows into one per image. One image keeps the tensor whole, so a
    traced graph (ONNX export, one image) keeps its row count dynamic."""
    return [values] if len(counts) == 1 else list(values.split(counts))


class MaskRCNN(nn.Module):
    def __init__(self, config: Config, class_names: list[str] | None = None):
        super().__init__()
        c = config
        self.config = c
        if class_names is not None and len(class_names) != c.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {c.num_classes} (background included)")
        self.class_names = list(class_names) if class_names else ["BG"] + [f"class_{i}" for i in range(1, c.num_classes)]

        layout = layout_of(c)
        self.frame = layout.frame  # the box arithmetic every stage below is handed
        self.preprocessor = build_preprocessor(c)
        self.backbone = build_backbone(
            trunk=layout.trunk, name=c.backbone, fpn_channels=c.fpn_channels, fpn_norm=c.fpn_norm,
            train_bn=c.train_bn, eps=c.batch_norm_eps, channels_last=layout.channels_last,
        )
        self.anchor_generator = AnchorGenerator(
            scales=c.anchor_scales, ratios=c.anchor_ratios, strides=c.backbone_strides, anchor_stride=c.anchor_stride,
            round_to_pixels=c.anchor_round, stride_from_feature_size=c.anchor_stride_from_feature_size, frame=self.frame,
        )
        self.rpn = RPNHead(
            in_channels=c.fpn_channels, conv_channels=c.rpn_conv_channels, conv_depth=c.rpn_conv_depth,
            anchors_per_location=len(c.anchor_ratios), objectness=c.rpn_objectness,
        )
        pooler = partial(layout.pooler, strides=c.backbone_strides[:4], sampling_ratio=c.roi_sampling_ratio,
                         canonical_size=c.roi_canonical_size, canonical_level=c.roi_canonical_level)
        self.box_roi_align = pooler(output_size=c.pool_size)
        self.mask_roi_align = pooler(output_size=c.mask_pool_size)
        self.box_head = BoxHead(
            in_channels=c.fpn_channels, pool_size=c.pool_size, hidden=c.box_head_channels, num_classes=c.num_classes,
            form=c.box_head, bn_statistics=c.head_bn_statistics, eps=c.batch_norm_eps,
        )
        self.mask_head = MaskHead(
            in_channels=c.fpn_channels, channels=c.mask_head_channels, num_classes=c.num_classes,
            norm=c.mask_head_norm, bn_statistics=c.head_bn_statistics, eps=c.batch_norm_eps,
        )

        # The proposal layer, the detection layer and the two target makers: functions with the config's
        # settings bound, called below as one line each.
        proposal_layer = partial(
            propose, frame=self.frame, pre_nms_per_level=c.rpn_pre_nms_per_level, nms_threshold=c.rpn_nms_threshold,
            nms_per_level=c.rpn_nms_per_level, min_size=c.rpn_min_size, std_dev=c.rpn_bbox_std_dev,
        )
        self.propose_training = partial(proposal_layer, pre_nms_limit=c.rpn_pre_nms_limit_training, post_nms_limit=c.post_nms_rois_training)
        self.propose_inference = partial(proposal_layer, pre_nms_limit=c.rpn_pre_nms_limit_inference, post_nms_limit=c.post_nms_rois_inference)
        self.detection_layer = partial(
            detect, frame=self.frame, std_dev=c.bbox_std_dev, min_confidence=c.detection_min_confidence,
            nms_threshold=c.detection_nms_threshold, max_instances=c.detection_max_instances,
            min_size=c.detection_min_size, class_mode=c.detection_class_mode,
        )
        # The training targets and the losses' normalisation: torchvision's or matterport's, chosen here once.
        self.training_convention = build_training_convention(
            c.training_convention, frame=self.frame,
            rpn=dict(positive_iou=c.rpn_positive_iou, negative_iou=c.rpn_negative_iou,
                     anchors_per_image=c.rpn_train_anchors_per_image, positive_fraction=c.rpn_positive_fraction,
                     std_dev=c.rpn_bbox_std_dev, ignore_crossing=c.rpn_ignore_crossing_anchors),
            rois=dict(rois_per_image=c.train_rois_per_image, positive_ratio=c.roi_positive_ratio,
                      positive_iou=c.roi_positive_iou, negative_iou=c.roi_negative_iou, std_dev=c.bbox_std_dev),
        )
        self.mask_threshold = c.mask_threshold
        self.mask_rois_per_image = c.mask_rois_per_image
        self.mask_size = c.mask_shape[0]
        # matterport's USE_MINI_MASK: mask targets cut from (G, m, m) masks of each ground-truth box (given so, or
        # made from full masks as load_image_gt makes them); only the matterport frame has the arithmetic
        self.mini_mask_shape = tuple(c.mini_mask_shape) if c.use_mini_mask else None
        self.loss_weights = dict(c.loss_weights)

    # ------------------------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def prepare_images(self, images) -> list[Tensor]:
        """Check and convert the inputs to (3, H, W) tensors on the model's device and dtype."""
        return [image.to(device=self.device, dtype=self.dtype) for image in to_image_tensors(images)]

    def anchors_for(self, pyramid: list[Tensor], padded_size: tuple[int, int]) -> Tensor:
        """(L, 4) anchors over all levels for a padded batch, in the model's dtype (under bfloat16 autocast
        the pyramid is bfloat16, while anchors, targets and proposals stay in float32)."""
        sizes = [tuple(p.shape[-2:]) for p in pyramid]
        return torch.cat(self.anchor_generator(sizes, padded_size, self.dtype, pyramid[0].device))

    def roi_features(self, pyramid: list[Tensor]) -> list[Tensor]:
        """P2..P5 in the layout the ROI poolers read: channels-last for roi_align_cpu, plain (N, F, H, W)
        otherwise. Either pooler would copy a level in the other layout on each call; one copy here serves
        both heads (both poolers share their settings, so the box head's decides)."""
        layout = torch.channels_last if self.box_roi_align.uses_cpu_kernel(pyramid[0]) else torch.contiguous_format
        return [level.contiguous(memory_format=layout) for level in pyramid[:4]]

    # ------------------------------------------------------------------------------------ training
    def forward(self, images, targets: list[dict]) -> dict[str, Tensor]:
        """The five weighted losses for a batch: images as for predict, targets one dict per image with
        "boxes" (G, 4) x1 y1 x2 y2 pixels, "labels" (G,) int64 in 1..C-1, "masks" (G, H, W) bool/uint8, and
        optionally "crowd_boxes" (K, 4) x1 y1 x2 y2 pixels of crowd regions (COCO's iscrowd), which the
        training convention leaves out (torchvision) or keeps out of the negatives (matterport)."""
        inputs = self.prepare_images(images)
        gt_boxes, gt_labels, gt_masks, gt_crowds = self.check_targets(targets, inputs)
        training = self.training_convention
        batch = self.preprocessor.training_batch(inputs)  # (N, 3, Hp, Wp), each image's size drawn from the choices
        pyramid = self.backbone(batch.tensor)  # [P2..P6], each (N, F, Hl, Wl)
        rpn_out = self.rpn(pyramid)  # objectness (N, L[, 2]), deltas (N, L, 4)
        anchors = self.anchors_for(pyramid, batch.padded_size)  # (L, 4)
        proposals = self.propose_training(rpn_out, anchors, batch.windows, image_size=batch.padded_size)  # per image (R, 4)

        boxes_in_batch = [self.to_batch_frame(b, batch, i) for i, b in enumerate(gt_boxes)]  # per image (G, 4)
        crowds_in_batch = [self.to_batch_frame(b, batch, i) for i, b in enumerate(gt_crowds)]  # per image (K, 4)
        rpn_goal = training.rpn_targets(anchors, boxes_in_batch, crowds_in_batch, batch.windows)
        sampled = training.detection_targets(proposals, boxes_in_batch, gt_labels, crowds_in_batch)
        features = self.roi_features(pyramid)  # [P2..P5]
        class_logits, deltas = self.box_head(self.box_roi_align(features, sampled.rois))  # (R, C), (R, C, 4)

        # The positives come first in each image's ROIs; the mask head trains on all or a random subset of them.
        mask_picks = [sample_mask_rois(n, self.mask_rois_per_image, r.device) for r, n in zip(sampled.rois, sampled.num_positive)]  # per image (P,)
        positive_rois = [rois[pick] for rois, pick in zip(sampled.rois, mask_picks)]  # per image (P, 4)
        positive_labels = torch.cat([l[pick] for l, pick in zip(sampled.labels.split([len(r) for r in sampled.rois]), mask_picks)])
        positive_matches = [matched[pick] for matched, pick in zip(sampled.matched_gt, mask_picks)]  # per image (P,)
        mask_logits = self.mask_head(self.mask_roi_align(features, positive_rois))  # (P, C, M, M)
        goal_masks = torch.cat([
            self.mask_goal(masks, boxes, rois, matched, batch, i)
            for i, (masks, boxes, rois, matched) in enumerate(zip(gt_masks, boxes_in_batch, positive_rois, positive_matches))
        ]).to(mask_logits.device)  # (P, M, M)

        losses = {
            "rpn_class": training.rpn_class_loss(rpn_out.objectness, rpn_goal.labels),
            "rpn_bbox": training.rpn_bbox_loss(rpn_out.deltas, rpn_goal),
            "mrcnn_class": training.mrcnn_class_loss(class_logits, sampled.labels),
            "mrcnn_bbox": training.mrcnn_bbox_loss(deltas, sampled.labels, sampled.deltas),
            "mrcnn_mask": training.mrcnn_mask_loss(mask_logits, positive_labels, goal_masks),
        }
        return {name: value * self.loss_weights[name] for name, value in losses.items()}

    def mask_goal(self, masks: Tensor, boxes: Tensor, rois: Tensor, matched: Tensor, batch: ImageBatch, index: int) -> Tensor:
        """(P, M, M) mask targets of one image's positive ROIs. masks: (G, H, W) of the original image, or (G, m, m)
        mini-masks; boxes: (G, 4) ground truth and rois: (P, 4) in the model's frame; matched: (P,)."""
        window = batch.windows[index]
        if self.mini_mask_shape is None:  # cut from the masks resized with the image (torchvision's transform, matterport's resize_mask)
            resized = self.preprocessor.resize_masks(masks, window_size(window))
            return self.frame.mask_targets(resized, rois, matched, window, batch.padded_size, self.mask_size)
        if tuple(masks.shape[-2:]) != self.mini_mask_shape or tuple(masks.shape[-2:]) == tuple(batch.original_sizes[index]):
            # matterport minimises the masks of the resized image (load_image_gt)
            masks = self.frame.minimize_masks(self.preprocessor.resize_masks(masks, window_size(window)), boxes, window, self.mini_mask_shape)
        return self.frame.mini_mask_targets(masks, boxes, rois, matched, self.mask_size)

    def check_targets(self, targets: list[dict], inputs: list[Tensor]):
        if not isinstance(targets, (list, tuple)) or len(targets) != len(inputs):
            raise ValueError(f"expected one target dict per image ({len(inputs)}), got {type(targets).__name__} of {len(targets) if hasattr(targets, '__len__') else '?'}")
        boxes, labels, masks, crowds = [], [], [], []
        for i, (target, image) in enumerate(zip(targets, inputs)):
            missing = {"boxes", "labels", "masks"} - set(target)
            if missing:
                raise ValueError(f"target {i}: missing {', '.join(sorted(missing))}")
            b = torch.as_tensor(target["boxes"]).to(device=self.device, dtype=self.dtype).reshape(-1, 4)
            l = torch.as_tensor(target["labels"]).to(device=self.device, dtype=torch.int64).reshape(-1)
            m = torch.as_tensor(target["masks"]).to(self.device)
            if len(l) != len(b) or m.shape[0] != len(b):
                raise ValueError(f"target {i}: {len(b)} boxes, {len(l)} labels and {m.shape[0]} masks must agree")
            if len(l) and (l.min() < 1 or l.max() >= self.config.num_classes):
                raise ValueError(f"target {i}: labels must lie in 1..{self.config.num_classes - 1}, got {l.tolist()}")
            sizes = {tuple(image.shape[-2:])} | ({self.mini_mask_shape} if self.mini_mask_shape else set())
            if len(b) and tuple(m.shape[-2:]) not in sizes:
                raise ValueError(f"target {i}: masks are {tuple(m.shape[-2:])} but the image is {tuple(image.shape[-2:])}"
                                 + (f" (and mini-masks {self.mini_mask_shape})" if self.mini_mask_shape else ""))
            if len(b) and bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
                raise ValueError(f"target {i}: every box needs x2 > x1 and y2 > y1, got {b.tolist()}")
            crowd = torch.as_tensor(target.get("crowd_boxes", b.new_zeros((0, 4)))).to(device=self.device, dtype=self.dtype)
            if crowd.dim() != 2 or crowd.shape[1] != 4:
                raise ValueError(f"target {i}: crowd_boxes must be (K, 4) x1 y1 x2 y2 pixels, got shape {tuple(crowd.shape)}")
            boxes.append(b)
            labels.append(l)
            masks.append(m.bool())
            crowds.append(crowd)
        return boxes, labels, masks, crowds

    def to_batch_frame(self, boxes: Tensor, batch: ImageBatch, index: int) -> Tensor:
        """(G, 4) boxes in original-image pixels -> padded-batch pixels (resize, then shift into the window),
        in the model's frame (the one its anchors and proposals use)."""
        scale_y, scale_x = batch.scales[index]
        top, left = batch.windows[index][:2]
        factor = torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype, device=boxes.device)
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
        return self.frame.from_pixels(boxes * factor + shift)

    # ------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, images, *, score_threshold: float | None = None) -> list[Detections]:
        """Detections for each image (list, numpy (H, W, 3) uint8 or tensors (3, H, W) in [0, 1]).

        Runs in eval mode without gradients and puts every module back in the mode it had (a frozen batch
        norm inside a training model stays frozen).
        """
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            inputs = self.prepare_images(images)
            batch = self.preprocessor(inputs)  # (N, 3, Hp, Wp)
            found = self.find_instances(batch.tensor, batch.windows, score_threshold)
            return [  # boxes back to each original image, masks pasted
                self.frame.to_detections(boxes.boxes, boxes.labels, boxes.scores, mask_probs, batch.windows[i],
                                         batch.padded_size, batch.original_sizes[i], self.mask_threshold)
                for i, (boxes, mask_probs) in enumerate(found)
            ]
        finally:
            for module, mode in modes:
                module.training = mode

    def predict_tiled(self, image, *, tile: int = 1024, overlap: int = 128, batch_size: int = 1,
                      score_threshold: float | None = None, max_detections: int | None = None,
                      progress: bool = False) -> Detections:
        """One Detections for an image of any size (array, tensor or file path), predicted in overlapping tiles
        and merged so that each object appears once; masks are compact (`MaskCrops`). See `tiling.py`."""
        from .tiling import predict_tiled

        return predict_tiled(lambda tiles: self.predict(tiles, score_threshold=score_threshold), image, tile=tile,
                             overlap=overlap, batch_size=batch_size, max_detections=max_detections, progress=progress)

    def find_instances(self, images: Tensor, windows: list, min_confidence=None) -> list[tuple[BoxDetections, Tensor]]:
        """The network between pre- and post-processing, for `predict` and for the ONNX graph (export.py).

        images: (N, 3, Hp, Wp) preprocessed; windows: per image (y1, x1, y2, x2) of the image inside them;
        min_confidence: None for the config's. Returns per image the detections in the padded batch's
        frame and (D, M, M) mask probabilities of each detection's class.
        """
        padded_size = images.shape[-2:]
        pyramid = self.backbone(images)  # [P2..P6]
        rpn_out = self.rpn(pyramid)
        anchors = self.anchors_for(pyramid, padded_size)  # (L, 4)
        proposals = self.propose_inference(rpn_out, anchors, windows, image_size=padded_size)  # per image (R, 4)
        features = self.roi_features(pyramid)  # [P2..P5]
        class_logits, deltas = self.box_head(self.box_roi_align(features, proposals))  # (R, C), (R, C, 4)

        threshold = {} if min_confidence is None else {"min_confidence": min_confidence}
        counts = [len(p) for p in proposals]
        found = [self.detection_layer(logits, d, rois, window, **threshold)  # per image (D, 4)
                 for logits, d, rois, window in zip(per_image(class_logits, counts), per_image(deltas, counts), proposals, windows)]

        mask_logits = self.mask_head(self.mask_roi_align(features, [f.boxes for f in found]))  # (D, C, M, M)
        mask_probs = torch.sigmoid(select_class(mask_logits, torch.cat([f.labels for f in found])))  # (D, M, M)
        return list(zip(found, per_image(mask_probs, [len(f.boxes) for f in found])))
