"""The data set's own category ids, carried by a model and used where detections leave the library.

Inside the library classes are contiguous, 1..N (0 is background). A data set's categories may not be: a COCO
file may use ids 3, 7, 12; torchvision's COCO weights use COCO's 91-slot layout (ids 1..90 with gaps, the
class index is the id). A model carries `categories` (one `Category` a class, 1..N in order) so that

- `maskrcnn predict` writes results.json with the source's ids (results score against the original file with
  pycocotools directly);
- `maskrcnn evaluate` maps the model's classes onto another data set's by category id (or by name);
- `maskrcnn train --keep-classes` finds the rows of a superset model's heads by name (or by id).

A model without categories (files saved before they were kept, ONNX files) has ids equal to its class indices.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DataError
from .structures import Detections


@dataclass(frozen=True)
class Category:
    """One class as the data set names it."""

    id: int  # the data set's own category id (COCO `category_id`; YOLO class c is c + 1)
    name: str


def of_dataset(dataset) -> list[Category]:
    """Classes 1..N of a Dataset: the source's ids where they are unique positive whole numbers (COCO,
    CVAT, YOLO, ...), else the internal ids (as `maskrcnn convert-data` writes them)."""
    infos = dataset.class_info[1:]
    source_ids = [info["id"] for info in infos]
    usable = (all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in source_ids)
              and len(set(source_ids)) == len(source_ids))
    return [Category(int(info["id"]) if usable else internal, str(info["name"]))
            for internal, info in enumerate(infos, start=1)]


def has_categories(model) -> bool:
    """True when the model (or predictor) carries its data set's categories."""
    return getattr(model, "categories", None) is not None


def of_model(model) -> list[Category]:
    """Classes 1..N of a model or predictor: its `categories`, or ids 1..N with its class names."""
    if has_categories(model):
        return list(model.categories)
    return [Category(label, str(name)) for label, name in enumerate(list(model.class_names)[1:], start=1)]


def attach(model, categories) -> None:
    """Set `model.categories` (Category objects or {"id", "name"} dicts, one per class 1..N); checked."""
    categories = [c if isinstance(c, Category) else Category(int(c["id"]), str(c["name"])) for c in categories]
    expected = len(model.class_names) - 1
    if len(categories) != expected:
        raise DataError(f"{len(categories)} categories for a model of {expected} classes (background excluded)")
    ids = [c.id for c in categories]
    if len(set(ids)) != len(ids) or min(ids, default=1) < 1:
        raise DataError(f"category ids must be unique whole numbers >= 1, got {ids}")
    model.categories = categories


def to_plain(model) -> list[dict] | None:
    """[{"id", "name"}, ...] for a file (saving.save, checkpoints), or None when the model has none."""
    return [{"id": c.id, "name": c.name} for c in model.categories] if has_categories(model) else None


def id_of_label(model) -> dict[int, int]:
    """{class index 1..N: category id}: what results.json and the label-tool formats write."""
    return {label: c.id for label, c in enumerate(of_model(model), start=1)}


def torchvision_coco_categories() -> list[Category]:
    """The 90 slots of torchvision's COCO weights: ids 1..90 (the class index is the COCO category id), names
    from torchvision's weight metadata ("N/A" where COCO has no category)."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    names = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]  # 91 names, "__background__" first
    return [Category(index, name) for index, name in enumerate(names) if index > 0]


def match(targets: list[Category], sources: list[Category], *, by: str) -> dict[int, int]:
    """{target class index: source class index} of the categories that `by` ("id" or "name", names compared
    without case and surrounding spaces) pairs up; classes without a partner are left out."""
    if by not in ("id", "name"):
        raise ValueError(f"match by 'id' or 'name', got {by!r}")
    key = (lambda c: c.id) if by == "id" else (lambda c: c.name.strip().casefold())
    index = {}
    for label, category in enumerate(sources, start=1):
        index.setdefault(key(category), label)
    return {label: index[key(c)] for label, c in enumerate(targets, start=1) if key(c) in index}


# ---------------------------------------------------------------------------------------------- evaluate
class RelabeledPredictor:
    """A predictor whose classes are another data set's: detections of classes the data set lacks are dropped,
    the others relabelled to the data set's class indices. Has `config`, `class_names`, `categories` and
    `predict` like the predictor it wraps."""

    def __init__(self, predictor, dataset, mapping: dict[int, int]):
        self.predictor = predictor
        self.config = predictor.config.replace(num_classes=dataset.num_classes)
        self.class_names = list(dataset.class_names)
        self.categories = of_dataset(dataset)
        # (model classes,) int64: the data set's index of each model class, 0 where it has none
        self.lookup = torch.zeros(len(predictor.class_names), dtype=torch.int64)
        for data_label, model_label in mapping.items():
            self.lookup[model_label] = data_label

    def predict(self, images, **kwargs) -> list[Detections]:
        found = self.predictor.predict(images, **kwargs)
        relabelled = []
        for detections in found:
            labels = self.lookup.to(detections.labels.device)[detections.labels]  # (N,) data set indices
            kept = detections[labels > 0]
            kept.labels = labels[labels > 0]
            relabelled.append(kept)
        return relabelled


def for_dataset(predictor, dataset, *, report=print):
    """The predictor as it is when its classes are the data set's (same ids, or no categories and the same
    count: matched by position as before), else a RelabeledPredictor matching categories by id (torchvision's
    COCO weights on a COCO file), or by name where names pair up more classes. A DataError when nothing matches."""
    model_categories, data_categories = of_model(predictor), of_dataset(dataset)
    same_count = len(model_categories) == len(data_categories)
    if [c.id for c in model_categories] == [c.id for c in data_categories] or (same_count and not has_categories(predictor)):
        return predictor
    by_id = match(data_categories, model_categories, by="id")
    by_name = match(data_categories, model_categories, by="name")
    # Ids first (a renamed category keeps its id), unless names pair up more classes: ids that agree by chance
    # (a model of COCO ids 2, 5, 9 on the same images converted to ids 1..3) must not pair the wrong classes.
    by, mapping = ("name", by_name) if len(by_name) > len(by_id) else ("id", by_id)
    if not mapping:
        raise DataError(
            f"the model's classes ({', '.join(f'{c.id} {c.name}' for c in model_categories[:10])}"
            f"{', ...' if len(model_categories) > 10 else ''}) share no category id or name with the data set's "
            f"({', '.join(f'{c.id} {c.name}' for c in data_categories)})")
    missing = [f"{c.id} {c.name}" for label, c in enumerate(data_categories, start=1) if label not in mapping]
    report(f"classes matched by category {by}: {len(mapping)} of the data set's {len(data_categories)}"
           + (f"; the model has no class for {', '.join(missing)} (nothing is detected there)" if missing else ""))
    return RelabeledPredictor(predictor, dataset, mapping)
