"""A held-out share of a data set: views that renumber some of its images, and the deterministic split."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError


class DatasetView:
    """Some images of a Dataset, renumbered 0..len-1; classes, masks and references come from the base.

    Everything the trainer, the loader and the evaluators ask of a data set (`load_image`, `load_mask`,
    `image_info`, `class_names`, ...) is answered.
    """

    def __init__(self, base, indices):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.image_info = [base.image_info[i] for i in self.indices]
        self.class_info = base.class_info
        self.class_names = base.class_names
        self.num_classes = base.num_classes
        self.load_problems = []

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]

    def load_image(self, index: int):
        return self.base.load_image(self.indices[index])

    def load_mask(self, index: int):
        return self.base.load_mask(self.indices[index])

    def load_target(self, index: int):
        return self.base.load_target(self.indices[index])

    def num_instances(self, index: int) -> int:
        return self.base.num_instances(self.indices[index])

    def image_reference(self, index: int) -> str:
        return self.base.image_reference(self.indices[index])

    def get_source_class_id(self, class_id: int, source: str):
        return self.base.get_source_class_id(class_id, source)


def holdout_split(dataset, fraction: float, seed: int = 0) -> tuple[DatasetView, DatasetView | None]:
    """(training view, validation view or None): `fraction` of the images, at least one, chosen by a fixed
    permutation of the image indices, so the same data set always gives the same split."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the validation fraction (--val-fraction) must be in [0, 1), got {fraction}")
    count = len(dataset)
    held = min(count - 1, max(1, round(fraction * count))) if fraction > 0 else 0
    if held <= 0:
        return DatasetView(dataset, range(count)), None
    order = np.random.default_rng(seed).permutation(count)
    val, train = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    return DatasetView(dataset, train), DatasetView(dataset, val)
