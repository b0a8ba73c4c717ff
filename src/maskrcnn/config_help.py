"""`maskrcnn config --list`: every Config field with its type, its value in each preset and what it means.

Generated from the dataclass itself: the names, types and preset values from `Config`, the meaning from the
comment written beside the field (or the comment lines just above it) in config.py, so the table cannot
drift from the code. Fields whose comment is not enough on its own get their meaning from `MEANINGS`.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from .config import Config

PRESETS = ("torchvision", "torchvision_v2", "matterport", "demo")

# Fields that config.py leaves without a comment; names follow matterport's Config (its comments say more).
MEANINGS = {
    "batch_norm_eps": "epsilon of the trunk's batch norm (torchvision 1e-5, Keras/matterport 1e-3)",
    "rpn_pre_nms_limit_training": "proposals kept by objectness before the RPN's NMS, training",
    "rpn_pre_nms_limit_inference": "proposals kept by objectness before the RPN's NMS, inference",
    "rpn_nms_threshold": "IoU above which the RPN's NMS drops the lower-scoring proposal",
    "post_nms_rois_training": "proposals kept after the RPN's NMS, training (matterport POST_NMS_ROIS_TRAINING)",
    "post_nms_rois_inference": "proposals kept after the RPN's NMS, inference (matterport POST_NMS_ROIS_INFERENCE)",
    "rpn_train_anchors_per_image": "anchors sampled per image for the RPN losses",
    "rpn_positive_fraction": "largest share of positives among the sampled anchors",
    "rpn_positive_iou": "anchors with IoU >= this with a ground-truth box are positive",
    "rpn_negative_iou": "anchors with IoU < this with every ground-truth box are negative",
    "pool_size": "ROIAlign output side for the box head",
    "mask_pool_size": "ROIAlign output side for the mask head",
    "mask_shape": "side of the mask head's output masks (twice mask_pool_size)",
    "roi_canonical_level": "FPN Eq. 1: k0, the level of an ROI of roi_canonical_size pixels",
    "mask_head_channels": "channels of the mask head's four 3x3 convs",
    "roi_positive_ratio": "share of positives among the sampled ROIs (matterport ROI_POSITIVE_RATIO)",
    "roi_positive_iou": "ROIs with IoU >= this with a ground-truth box are positive",
    "detection_max_instances": "most detections kept per image",
    "detection_min_confidence": "detections scoring below this are dropped",
    "detection_nms_threshold": "IoU above which per-class NMS drops the lower-scoring detection",
    "detection_min_size": "detections narrower or lower than this (pixels) are dropped",
    "mask_threshold": "mask probability at or above which a pixel belongs to the instance",
    "image_min_dim": "shorter image side after resizing (square mode: the smallest allowed side)",
    "image_max_dim": "longest image side after resizing (square mode: the padded square's side)",
    "pixel_std": "per-channel standard deviation divided out, on the [0, 1] scale",
    "use_mini_mask": "keep training masks cropped to their box and resized (matterport USE_MINI_MASK)",
    "mini_mask_shape": "size of those cropped masks",
    "images_per_batch": "images per training step (per process in distributed training)",
    "learning_rate": "base learning rate",
    "learning_momentum": "SGD momentum",
    "weight_decay": "L2 weight decay (not on biases and norm layers)",
    "lr_warmup_steps": "steps of linear warm-up from learning_rate / 10",
    "loss_weights": "weight of each of the five losses in their sum",
}


@dataclasses.dataclass(frozen=True)
class FieldHelp:
    name: str
    type: str
    defaults: dict  # preset name -> value
    meaning: str


def _comments() -> dict[str, str]:
    """Field name -> the comment beside it, or else the comment lines just above it, from config.py."""
    lines = inspect.getsource(Config).splitlines()
    found, above = {}, []
    for line in lines:
        stripped = line.strip()
        field = re.match(r"^    (\w+): [\w\[\], ]+ = .*?(?:#\s*(.*))?$", line)
        if stripped.startswith("#") and not stripped.startswith("# ---"):
            above.append(stripped.lstrip("#").strip())
        elif field:
            found[field.group(1)] = field.group(2) or " ".join(above)
            above = []
        else:
            above = []
    return found


def field_help() -> list[FieldHelp]:
    """One FieldHelp per Config field, in the dataclass's order."""
    hints = typing.get_type_hints(Config)
    presets = {name: getattr(Config, name)().to_dict() for name in PRESETS}
    comments = _comments()
    return [FieldHelp(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])),
                      {name: values[f.name] for name, values in presets.items()},
                      MEANINGS.get(f.name) or comments.get(f.name, ""))
            for f in dataclasses.fields(Config)]


def format_field_help() -> str:
    """The table `maskrcnn config --list` prints: a line per field, then its meaning indented."""
    out = [f"Config fields (change one with --set FIELD=VALUE); values per preset: {', '.join(PRESETS)}", ""]
    for item in field_help():
        values = list(item.defaults.values())
        shown = (f"{values[0]!r} in all" if all(v == values[0] for v in values)
                 else "; ".join(f"{name} {value!r}" for name, value in item.defaults.items()))
        out.append(f"{item.name} ({item.type}): {shown}")
        out.append(f"    {_one_line(item.meaning)}")
    return "\n".join(out)



def _one_line(text: str, width: int = 110) -> str:
    """The first sentence of a meaning, cut at a word to `width` characters."""
    text = text.split(". ")[0]
    return text if len(text) <= width else text[:width - 3].rsplit(" ", 1)[0] + "..."
