"""Batches for training: variable-size images as lists, a seeded order, unreadable images skipped.

Images keep their own sizes here; the model's preprocessing resizes and pads the batch (as torchvision's
`GeneralizedRCNNTransform` does inside the model).
Order and augmentation depend only on the seed, the epoch and the image index, never on the number of
worker processes: the sampler hands each sample its (index, epoch), and the sample's rng is made from
(seed, epoch, index).

Shape letters: B: images in a batch; N: instances of one image; H, W: that image's height and width.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import DataError, DataWarning
from .problems import places_of, without_places


class Batch(tuple):
    """(images, targets) as `collate` makes them, plus `skipped`: the images of this batch that could not be
    read, as (reference, reason) pairs, so that the trainer can count them even when workers loaded them."""

    def __new__(cls, images: list, targets: list, skipped=()):
        batch = super().__new__(cls, (images, targets))
        batch.skipped = list(skipped)
        return batch

    def __reduce__(self):  # through a worker's queue with `skipped` kept
        return (Batch, (self[0], self[1], self.skipped))


class Unreadable(tuple):
    """What SkipUnreadable gives for an image it could not read: (reference, reason)."""


def collate(batch: list) -> Batch:
    """[(image (3, H, W), target), ...] -> Batch([B images], [B targets]); skipped entries (None or
    Unreadable) are left out of the images and listed in `Batch.skipped`."""
    samples = [sample for sample in batch if sample is not None and not isinstance(sample, Unreadable)]
    skipped = [tuple(sample) for sample in batch if isinstance(sample, Unreadable)]
    return Batch([image for image, _ in samples], [target for _, target in samples], skipped)


class SkipUnreadable(torch.utils.data.Dataset):
    """Wraps a Dataset: applies the transform, and turns an unreadable image into a skip, not a crash.

    A skipped sample comes back as Unreadable (collate leaves it out and lists it), with a DataWarning naming
    the image. `skipped` lists the image references skipped in this process; with worker processes each
    worker keeps its own list, so read `Batch.skipped` instead.
    """

    def __init__(self, dataset, transform=None, seed: int = 0):
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            image, target = self.dataset[index]
        except DataError as error:
            reference = self.dataset.image_reference(index)
            reason = without_places(str(error), *places_of(self.dataset, index))
            self.skipped.append(reference)
            warnings.warn(f"skipping unreadable image {reference}: {reason} ({len(self.skipped)} skipped so far)",
                          DataWarning, stacklevel=2)
            return Unreadable((reference, reason))
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            image, target = self.transform(image, target, rng)
        return image, target


class SeededSampler(Sampler):
    """Yields (index, epoch): a permutation drawn from (seed, epoch) when shuffling, else in order.

    Each full pass advances the epoch, so successive epochs differ but a rerun with the same seed repeats.
    With world_size > 1 (distributed training, distributed.py) every process draws the same permutation and
    takes every world_size-th entry from position rank on, so the shards are disjoint and their union is the
    single-process order; batch j of the processes together holds the single-process batch j of
    world_size x batch_size images. When the length does not divide, the permutation is padded with its own
    first entries (as torch's DistributedSampler does) so that every process runs the same number of steps.
    """

    def __init__(self, indices, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"SeededSampler: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.indices = np.asarray(list(indices), dtype=np.int64)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, count: int) -> None:
        """Leave out the first `count` entries of the next pass only (a run resumed in the middle of an epoch)."""
        self.skip = int(count)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.world_size)  # ceil: the padded shard's length

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, epoch]).permutation(len(order))]
        if self.world_size > 1 and len(order):
            padded = np.resize(order, len(self) * self.world_size)  # repeats the order's start to fill up
            order = padded[self.rank::self.world_size]
        order, self.skip = order[self.skip:], 0
        for index in order:
            yield int(index), epoch


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0, transform=None,
                drop_empty: bool = False, *, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader of (list of B images (3, H, W) float in [0, 1], list of B targets).

    drop_empty: leave out images without any (non-crowd) instance; by default they are kept as negatives
    (targets with boxes (0, 4), labels (0,), masks (0, H, W)).
    rank, world_size: this process's shard in distributed training (SeededSampler); B is per process.
    """
    if batch_size < 1:
        raise ValueError(f"make_loader: batch_size must be >= 1, got {batch_size}")
    indices = range(len(dataset))
    if drop_empty:
        indices = [i for i in indices if _num_instances(dataset, i) > 0]
    sampler = SeededSampler(indices, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
    return DataLoader(SkipUnreadable(dataset, transform, seed), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def _num_instances(dataset, index: int) -> int:
    try:
        if hasattr(dataset, "num_instances"):
            return dataset.num_instances(index)
        return len(dataset[index][1]["labels"])  # a plain map-style data set: load the sample to count
    except DataError as error:
        warnings.warn(f"leaving out image {index}: {error}", DataWarning, stacklevel=3)
        return 0
