"""Load torchvision's `maskrcnn_resnet50_fpn` weights (v1) into our MaskRCNN with `Config.torchvision()`.

Every tensor is mapped by name, explicitly; a state dict with a missing, extra or misshapen tensor is
refused with the names listed, never half-loaded.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..config import Config
from ..errors import CheckpointError
from ..model import MaskRCNN

COCO_WEIGHTS_NAME = "torchvision-coco"

# torchvision name pattern -> our name template (applied in order; the first match wins)
V1_RULES = [
    (r"backbone\.body\.(.+)", r"backbone.trunk.\1"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(weight|bias)", r"backbone.fpn.lateral.\1.0.\2"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(weight|bias)", r"backbone.fpn.output.\1.0.\2"),
    (r"rpn\.head\.conv\.(\d)\.0\.(weight|bias)", lambda m: f"rpn.conv.{2 * int(m[1])}.{m[2]}"),
    (r"rpn\.head\.cls_logits\.(weight|bias)", r"rpn.objectness.\1"),
    (r"rpn\.head\.bbox_pred\.(weight|bias)", r"rpn.deltas.\1"),
    (r"roi_heads\.box_head\.fc6\.(weight|bias)", r"box_head.shared.1.\1"),
    (r"roi_heads\.box_head\.fc7\.(weight|bias)", r"box_head.shared.3.\1"),
    (r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", r"box_head.class_logits.\1"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", r"box_head.deltas.\1"),
    (r"roi_heads\.mask_head\.(\d)\.0\.(weight|bias)", lambda m: f"mask_head.convs.{2 * int(m[1])}.{m[2]}"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)", r"mask_head.upsample.\1"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)", r"mask_head.mask_logits.\1"),
]


def _rename(name: str, rules) -> str | None:
    for pattern, template in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return template(match) if callable(template) else match.expand(template)
    return None


def _settings_of(model: nn.Module) -> dict:
    """Config overrides that make ours behave as the given torchvision MaskRCNN instance is configured."""
    transform, rpn, heads = model.transform, model.rpn, model.roi_heads
    return dict(
        image_min_dim=int(transform.min_size[-1]),
        image_max_dim=int(transform.max_size),
        image_size_divisor=int(transform.size_divisible),
        pixel_mean=tuple(float(v) for v in transform.image_mean),
        pixel_std=tuple(float(v) for v in transform.image_std),
        rpn_pre_nms_limit_training=int(rpn._pre_nms_top_n["training"]),
        rpn_pre_nms_limit_inference=int(rpn._pre_nms_top_n["testing"]),
        post_nms_rois_training=int(rpn._post_nms_top_n["training"]),
        post_nms_rois_inference=int(rpn._post_nms_top_n["testing"]),
        rpn_nms_threshold=float(rpn.nms_thresh),
        rpn_min_size=float(rpn.min_size),
        rpn_positive_iou=float(rpn.proposal_matcher.high_threshold),
        rpn_negative_iou=float(rpn.proposal_matcher.low_threshold),
        rpn_train_anchors_per_image=int(rpn.fg_bg_sampler.batch_size_per_image),
        rpn_positive_fraction=float(rpn.fg_bg_sampler.positive_fraction),
        detection_min_confidence=float(heads.score_thresh),
        detection_nms_threshold=float(heads.nms_thresh),
        detection_max_instances=int(heads.detections_per_img),
        train_rois_per_image=int(heads.fg_bg_sampler.batch_size_per_image),
        roi_positive_ratio=float(heads.fg_bg_sampler.positive_fraction),
    )


def load_coco_state_dict() -> dict:
    """torchvision's official COCO weights through torch's hub cache (needs the network the first time)."""
    try:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        return MaskRCNN_ResNet50_FPN_Weights.COCO_V1.get_state_dict(progress=True)
    except Exception as error:  # urllib, ssl and socket errors differ by platform; all mean "could not fetch"
        raise CheckpointError(
            f"could not download torchvision's COCO weights ({error}). Connect to the internet once, or download "
            "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth into torch's hub cache (torch.hub.get_dir()/checkpoints) "
            "and pass its state dict instead."
        ) from error


def from_torchvision(model_or_state_dict, *, class_names: list[str] | None = None, **overrides) -> MaskRCNN:
    """A MaskRCNN with torchvision's weights.

    Accepts a torchvision MaskRCNN instance (its settings are copied too), its state dict, or the name
    "torchvision-coco" (the official COCO weights, downloaded once).
    """
    settings = {}
    if isinstance(model_or_state_dict, str):
        if model_or_state_dict != COCO_WEIGHTS_NAME:
            raise ValueError(f"unknown weights name {model_or_state_dict!r}; the known name is {COCO_WEIGHTS_NAME!r}")
        state_dict = load_coco_state_dict()
    elif isinstance(model_or_state_dict, nn.Module):
        state_dict = model_or_state_dict.state_dict()
        settings = _settings_of(model_or_state_dict)
    else:
        state_dict = dict(model_or_state_dict)
    if "roi_heads.box_predictor.cls_score.weight" not in state_dict:
        raise CheckpointError("not a torchvision Mask R-CNN state dict: roi_heads.box_predictor.cls_score.weight is missing")
    num_classes = int(state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0])
    is_v2 = any(k.startswith("roi_heads.box_head.0.0") for k in state_dict)
    settings.update(overrides)
    if is_v2:
        from .torchvision_v2 import V2_RULES

        config, rules = Config.torchvision_v2(num_classes, **settings), V2_RULES
    else:
        config, rules = Config.torchvision(num_classes, **settings), V1_RULES
    model = MaskRCNN(config, class_names=class_names)
    load_mapped(model, state_dict, rules, source="torchvision state dict")
    return model


def load_mapped(model: nn.Module, state_dict: dict, rules, *, source: str) -> None:
    """Copy every tensor of state_dict into model by the renaming rules; refuse any mismatch whole."""
    ours = model.state_dict()
    mapped, unknown, misshapen = {}, [], []
    for name, tensor in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        target = _rename(name, rules)
        if target is None or target not in ours:
            unknown.append(name)
        elif ours[target].shape != tensor.shape:
            misshapen.append(f"{name}: {tuple(tensor.shape)} vs ours {tuple(ours[target].shape)}")
        else:
            mapped[target] = tensor
    missing = [k for k in ours if k not in mapped and not k.endswith("num_batches_tracked")]
    problems = []
    if unknown:
        problems.append("unexpected tensors: " + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
    if misshapen:
        problems.append("wrong shapes: " + "; ".join(misshapen[:20]))
    if missing:
        problems.append("missing tensors (our names): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + " | ".join(problems))
    with torch.no_grad():
        for name, tensor in mapped.items():
            ours[name].copy_(tensor)
