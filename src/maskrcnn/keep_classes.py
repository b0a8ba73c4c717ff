"""Fine-tuning on a subset of a model's classes (`maskrcnn train --weights W --keep-classes`).

The class-specific layers (class logits, per-class box deltas, per-class mask logits) have one row (four for the
deltas) per class, so a model for 2 classes cannot take a 91-class model's tensors by shape. Where the new
classes are among the old ones (a cats-and-dogs data set, COCO weights), the rows of those classes are copied,
background's row too, so training starts from what the old model knew about them (as detectron2 users do by
slicing `cls_score` and `bbox_pred` by hand).

Shape letters: C: classes, background included; K: channels into the layer.
"""
from __future__ import annotations

import torch
from torch import nn

from . import categories

# parameter prefix -> rows per class (box deltas are (C*4, K): four rows per class, class-major, box_head.py)
CLASS_ROWS = {"box_head.class_logits": 1, "box_head.deltas": 4, "mask_head.mask_logits": 1}


def class_pairs(model, source) -> dict[int, int]:
    """{model class index: source class index} by category name, then by category id for the classes left when
    both carry their data set's categories; background 0 -> 0."""
    targets, sources = categories.of_model(model), categories.of_model(source)
    pairs = categories.match(targets, sources, by="name")
    if categories.has_categories(model) and categories.has_categories(source):
        by_id = categories.match(targets, sources, by="id")
        pairs.update({k: v for k, v in by_id.items() if k not in pairs})
    return {0: 0, **pairs}


def keep_class_rows(model: nn.Module, source: nn.Module) -> dict[int, int]:
    """Copy source's rows of the class-specific layers into model's rows for the same classes (class_pairs);
    the other rows stay as they are. Returns the pairs used ({model class: source class}, background included)."""
    pairs = class_pairs(model, source)
    ours, theirs = model.state_dict(), source.state_dict()
    with torch.no_grad():
        for prefix, rows in CLASS_ROWS.items():
            for suffix in ("weight", "bias"):
                name = f"{prefix}.{suffix}"
                if name not in ours or name not in theirs or ours[name].shape[1:] != theirs[name].shape[1:]:
                    continue
                target, tensor = ours[name], theirs[name]  # (C*rows, K, ...) or (C*rows,)
                for new, old in pairs.items():
                    target[new * rows:(new + 1) * rows] = tensor[old * rows:(old + 1) * rows]
    return pairs
