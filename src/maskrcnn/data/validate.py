"""Checking a whole data set: every image and mask loaded, every problem listed, none stopping the check.

Used by `maskrcnn validate` before a long training run: it is cheaper to learn about a truncated JPEG or a
mask of the wrong size now than after hours of training.

Shape letters: N: instances of one image; H, W: the image's height and width.
"""
from __future__ import annotations

import warnings

import numpy as np

from .problems import Problem, places_of, without_places

__all__ = ["Problem", "validate_dataset"]


def validate_dataset(dataset, *, on_masks=None) -> list[Problem]:
    """Load every image and mask of `dataset`; return every problem found, in image order.

    Problems marked `fatal` make the data set unusable for training (an unreadable image, an unknown category,
    an image without a size, ...); the others are worked around (an instance skipped, a box clipped).
    Starts with the problems recorded while the annotations were read (skipped instances, ...), then for
    each image: unreadable image or mask, masks of another size than the image, masks and class ids that
    disagree in number, class ids out of range, empty masks, and any warning raised while loading.

    on_masks: called with each image's (N, H, W) masks and (N,) class ids once they load with matching
    shapes, so a caller can look at them without reading the data set again (config_fit.ObjectCensus.add).
    """
    problems = list(getattr(dataset, "load_problems", []))
    num_classes = len(getattr(dataset, "class_info", [])) or None
    for index in range(len(dataset)):
        info = dataset.image_info[index]
        where = {"path": info.get("path") or dataset.image_reference(index), "image_id": info.get("id")}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            problems.extend(_check_image(dataset, index, where, num_classes, on_masks))
        # Only warnings about the data; library deprecation notices (pycocotools on numpy 2) are not problems.
        problems.extend(Problem(message=str(w.message), **where) for w in caught
                        if issubclass(w.category, UserWarning))
    return problems


def _check_image(dataset, index: int, where: dict, num_classes, on_masks) -> list[Problem]:
    found = []
    image = None
    try:
        image = dataset.load_image(index)
    # A validator must report every failure and go on; a user's subclass may raise anything.
    except Exception as error:  # noqa: BLE001
        found.append(Problem(message=f"cannot load the image: {without_places(str(error), *places_of(dataset, index))}",
                             fatal=True, **where))
    try:
        masks, class_ids = dataset.load_mask(index)
    except Exception as error:  # noqa: BLE001 (same reason)
        found.append(Problem(message=f"cannot load the masks: {error}", fatal=True, **where))
        return found
    masks, class_ids = np.asarray(masks), np.asarray(class_ids)
    if masks.ndim != 3 or len(masks) != len(class_ids):
        found.append(Problem(message=f"load_mask returned masks of shape {masks.shape} and "
                                     f"{len(class_ids)} class ids; expected (N, H, W) and (N,)", fatal=True, **where))
        return found
    if on_masks is not None:
        on_masks(masks, class_ids)
    if image is not None and masks.shape[1:] != image.shape[:2]:
        found.append(Problem(message=f"masks are {masks.shape[1]}x{masks.shape[2]} but the image is "
                                     f"{image.shape[0]}x{image.shape[1]} (height x width)", fatal=True, **where))
    for number, (mask, class_id) in enumerate(zip(masks, class_ids)):
        if class_id == 0 or (num_classes and abs(int(class_id)) >= num_classes):
            found.append(Problem(message=f"instance {number} has class id {int(class_id)}, outside "
                                         f"1..{(num_classes or 0) - 1} (negative for crowd)", fatal=True, **where))
        if not mask.any():
            found.append(Problem(message=f"instance {number} has an empty mask; it is left out of training", **where))
    return found
