"""How a data set's objects fit a model config: object sizes against the anchor sizes, instances per image
against the detection cap and the training ROI sample, with the `--set FIELD=VALUE` changes that would make
them fit.

`maskrcnn validate` fills an `ObjectCensus` from the masks it reads anyway (no image is read a second time);
`fit_report(census, config)` then compares the census with the config the model will train with.

An object's size is sqrt(w * h) of its box (the box `masks_to_boxes` gives training), in the pixels the network
sees: after the config's resize (`Preprocessor.resize_scale`, at inference's image_min_dim). Each anchor size
covers the sizes between the geometric means with its neighbours; an object under half the smallest anchor
(or over twice the largest) overlaps its best anchor with an IoU of at most 0.25, below the RPN's negative
threshold, so it is learnt from that one forced match alone.

Shape letters: N: instances of one image; H, W: the image's height and width; K: objects of the data set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..layout import build_preprocessor
from .dataset import masks_to_boxes

# Past this share of the objects out of the anchors' reach, the report suggests other anchors: a few odd
# objects are normal, this many mean the RPN misses a real part of the data.
MISFIT_SHARE = 0.05
# The training sample is compared with this percentile of the instances per image (nearest rank): a rare crowded
# image only trains on a subset of its objects per step, which does no harm; detection_max_instances is compared
# with the maximum, since every image above it loses detections.
INSTANCE_PERCENTILE = 99
# Anchor sizes tried, as powers of two times the config's: a shift by one octave moves every size one level.
_ANCHOR_SHIFTS = (-1, 1, -2, 2, -3, 3)


class ObjectCensus:
    """Every object's box size and every image's object count, gathered one image at a time (`add`)."""

    def __init__(self):
        # (H, W) of an image -> sqrt(w * h) of its objects' boxes in its own pixels, one array per image
        self.sizes_by_image_size: dict[tuple[int, int], list[np.ndarray]] = {}
        self.instances_per_image: list[int] = []

    def add(self, masks: np.ndarray, class_ids: np.ndarray) -> None:
        """One image's (N, H, W) masks and (N,) class ids. Crowd regions (negative ids), background and
        empty masks are not objects: training leaves them out."""
        masks, class_ids = np.asarray(masks), np.asarray(class_ids)
        sides = np.diff(masks_to_boxes(masks).reshape(-1, 2, 2), axis=1)[:, 0]  # (N, 2, 2) -> (N, 2) w, h
        objects = (class_ids > 0) & (sides > 0).all(axis=1)  # (N,)
        self.instances_per_image.append(int(objects.sum()))
        if objects.any():
            image_size = (int(masks.shape[1]), int(masks.shape[2]))
            self.sizes_by_image_size.setdefault(image_size, []).append(np.sqrt(sides[objects].prod(axis=1)))

    @property
    def images(self) -> int:
        return len(self.instances_per_image)

    def resized_sizes(self, config: Config) -> np.ndarray:
        """(K,) every object's size in the pixels of the image the network sees under `config`."""
        preprocessor = build_preprocessor(config)
        parts = [np.concatenate(sizes) * preprocessor.resize_scale(height, width)
                 for (height, width), sizes in self.sizes_by_image_size.items()]
        return np.concatenate(parts) if parts else np.zeros(0)

    def instances_at_percentile(self, percentile: float) -> int:
        """The nearest-rank percentile of the objects per image: the fewest objects that at least `percentile`%
        of the images do not exceed."""
        counts = sorted(self.instances_per_image)
        return counts[max(1, math.ceil(percentile / 100 * len(counts))) - 1] if counts else 0


@dataclass(frozen=True)
class SizeBucket:
    """Objects whose size after resizing lies in [low, high) pixels (the last anchor's bucket includes high)."""

    low: float
    high: float
    anchor: float | None  # the anchor size covering these; None: under half the smallest or over twice the largest
    count: int


@dataclass(frozen=True)
class Suggestion:
    """What does not fit, and the config changes that would fit it."""

    message: str  # for people, the --set options included
    overrides: tuple[str, ...]  # FIELD=VALUE as `maskrcnn train --set` takes them; empty when no change fits

    def __str__(self) -> str:
        return f"suggestion: {self.message}"


@dataclass(frozen=True)
class FitReport:
    """A data set's objects against one config (`fit_report`)."""

    config_name: str  # "the torchvision preset", a config file, ...
    resize: str  # how the config resizes images, in words
    anchor_scales: tuple
    buckets: list[SizeBucket]  # from the smallest sizes to the largest; empty when there are no objects
    images: int
    max_instances: int  # per image
    percentile_instances: int  # per image, at INSTANCE_PERCENTILE
    detection_max_instances: int
    positive_rois: int  # ROIs per image a training step samples as positives
    train_rois_per_image: int
    roi_positive_ratio: float
    suggestions: list[Suggestion]

    @property
    def objects(self) -> int:
        return sum(bucket.count for bucket in self.buckets)

    def lines(self) -> list[str]:
        """The report as `maskrcnn validate` prints it: a table of sizes, the instance counts, the suggestions."""
        lines = [f"objects against {self.config_name} ({self.resize}):"]
        if not self.objects:
            lines.append("  no objects to compare with the anchor sizes")
        else:
            header = "object size (sqrt(w*h) of its box, px after resizing)"
            rows = [(_bucket_label(bucket), bucket.count) for bucket in self.buckets]
            width = max(len(header), *(len(label) for label, _ in rows))
            lines.append(f"  {header:<{width}}  objects   share")
            lines += [f"  {label:<{width}}  {count:>7}  {100 * count / self.objects:5.1f}%" for label, count in rows]
        lines.append(f"  instances per image: max {self.max_instances}, {INSTANCE_PERCENTILE}th percentile "
                     f"{self.percentile_instances} ({self.images} images)")
        lines.append(f"  limits: detection_max_instances {self.detection_max_instances}; {self.positive_rois} positive "
                     f"ROIs sampled per image in training (train_rois_per_image {self.train_rois_per_image} x "
                     f"roi_positive_ratio {self.roi_positive_ratio:g})")
        return lines + [str(suggestion) for suggestion in self.suggestions]


def fit_report(census: ObjectCensus, config: Config, *, config_name: str = "the config") -> FitReport:
    """Compare the objects of `census` with `config`: a table of sizes per anchor size, the objects per image,
    and a suggestion for each misfit (none when everything fits)."""
    sizes = census.resized_sizes(config)  # (K,)
    max_instances = max(census.instances_per_image, default=0)
    percentile_instances = census.instances_at_percentile(INSTANCE_PERCENTILE)
    positive_rois = int(config.train_rois_per_image * config.roi_positive_ratio)  # matching.sample_labels
    suggestions = [s for s in (_anchor_suggestion(census, sizes, config),
                               _detection_suggestion(max_instances, config.detection_max_instances),
                               _sample_suggestion(percentile_instances, positive_rois, config)) if s is not None]
    return FitReport(
        config_name=config_name, resize=_resize_in_words(config), anchor_scales=tuple(config.anchor_scales),
        buckets=size_buckets(sizes, config.anchor_scales) if len(sizes) else [], images=census.images,
        max_instances=max_instances, percentile_instances=percentile_instances,
        detection_max_instances=config.detection_max_instances, positive_rois=positive_rois,
        train_rois_per_image=config.train_rois_per_image, roi_positive_ratio=config.roi_positive_ratio,
        suggestions=suggestions)


def size_buckets(sizes: np.ndarray, anchor_scales) -> list[SizeBucket]:
    """(K,) object sizes -> one bucket under half the smallest anchor, one per anchor size, one over twice the
    largest. Neighbouring anchors' buckets meet at the geometric mean of the two sizes."""
    anchors = sorted(float(a) for a in anchor_scales)
    edges = [anchors[0] / 2] + [math.sqrt(a * b) for a, b in zip(anchors, anchors[1:])] + [anchors[-1] * 2]
    sizes = np.asarray(sizes, dtype=np.float64)
    small, large = sizes < edges[0], sizes > edges[-1]
    covered = sizes[~small & ~large]
    index = np.searchsorted(np.asarray(edges[1:-1]), covered, side="right")  # (K',) which anchor covers each
    counts = np.bincount(index, minlength=len(anchors))
    return ([SizeBucket(0.0, edges[0], None, int(small.sum()))]
            + [SizeBucket(edges[i], edges[i + 1], anchors[i], int(counts[i])) for i in range(len(anchors))]
            + [SizeBucket(edges[-1], math.inf, None, int(large.sum()))])


def _misfit_shares(sizes: np.ndarray, anchor_scales) -> tuple[float, float]:
    """(share under half the smallest anchor, share over twice the largest) of the sizes."""
    if not len(sizes):
        return 0.0, 0.0
    return float(np.mean(sizes < min(anchor_scales) / 2)), float(np.mean(sizes > max(anchor_scales) * 2))


def _anchor_suggestion(census: ObjectCensus, sizes: np.ndarray, config: Config) -> Suggestion | None:
    small, large = _misfit_shares(sizes, config.anchor_scales)
    if max(small, large) <= MISFIT_SHARE:
        return None
    smallest, largest = min(config.anchor_scales), max(config.anchor_scales)
    problems = []
    if small > MISFIT_SHARE:
        problems.append(f"{_percent(small)} of objects are under {smallest / 2:g} px after resizing, below half the "
                        f"smallest anchor ({smallest:g} px)")
    if large > MISFIT_SHARE:
        problems.append(f"{_percent(large)} of objects are over {largest * 2:g} px after resizing, above twice the "
                        f"largest anchor ({largest:g} px)")
    message = " and ".join(problems)
    # Every anchor size times the same power of two: still one size per level P2..P6, spaced as before.
    shifts = [(sum(_misfit_shares(sizes, [a * 2.0 ** k for a in config.anchor_scales])), abs(k), k)
              for k in _ANCHOR_SHIFTS]  # (share left outside, octaves, k): the fewest outside, then the least change
    left, _, shift = min(shifts)
    if left >= small + large:
        return Suggestion(f"{message}; the objects span more sizes than the anchors reach, and no power-of-two "
                          f"shift of anchor_scales brings more of them within reach", ())
    scales = [a * 2.0 ** shift for a in config.anchor_scales]
    overrides = (f"anchor_scales=[{','.join(f'{a:g}' for a in scales)}]",)
    message += f": --set {overrides[0]}" + (f" (leaves {_percent(left)} outside)" if left else "")
    resized = _resized_images_overrides(census, config, 2.0 if small > large else 0.5)
    if resized:
        message += f", or {'larger' if small > large else 'smaller'} images: " + " ".join(f"--set {o}" for o in resized)
    return Suggestion(message, overrides)


def _resized_images_overrides(census: ObjectCensus, config: Config, factor: float) -> tuple[str, ...]:
    """image_min_dim and image_max_dim (and image_min_dim_choices) times `factor`, if that brings the objects
    within the anchors' reach; () for a config that does not resize or a factor that does not help."""
    if config.image_resize_mode == "none":
        return ()
    changes = {"image_min_dim": max(1, round(config.image_min_dim * factor)),
               "image_max_dim": max(1, round(config.image_max_dim * factor))}
    if config.image_min_dim_choices:
        changes["image_min_dim_choices"] = [max(1, round(d * factor)) for d in config.image_min_dim_choices]
    sizes = census.resized_sizes(config.replace(**changes))
    if sum(_misfit_shares(sizes, config.anchor_scales)) > MISFIT_SHARE:
        return ()
    return tuple(f"{name}={value if not isinstance(value, list) else '[' + ','.join(map(str, value)) + ']'}"
                 for name, value in changes.items())


def _detection_suggestion(max_instances: int, detection_max_instances: int) -> Suggestion | None:
    if max_instances <= detection_max_instances:
        return None
    override = f"detection_max_instances={_round_up(max_instances)}"
    return Suggestion(f"images hold up to {max_instances} instances but detection_max_instances is "
                      f"{detection_max_instances}: --set {override}", (override,))


def _sample_suggestion(percentile_instances: int, positive_rois: int, config: Config) -> Suggestion | None:
    if percentile_instances <= positive_rois or config.roi_positive_ratio <= 0:
        return None
    override = f"train_rois_per_image={_round_up(math.ceil(percentile_instances / config.roi_positive_ratio))}"
    return Suggestion(f"the {INSTANCE_PERCENTILE}th percentile image holds {percentile_instances} instances, more than "
                      f"the {positive_rois} positive ROIs a training step samples per image (train_rois_per_image "
                      f"{config.train_rois_per_image} x roi_positive_ratio {config.roi_positive_ratio:g}), so a step "
                      f"trains on part of its objects: --set {override}", (override,))


def _resize_in_words(config: Config) -> str:
    if config.image_resize_mode == "square":
        return (f"shorter side enlarged to at least {config.image_min_dim} px, longer side at most "
                f"{config.image_max_dim} px, padded square")
    if config.image_resize_mode == "shorter_side":
        return f"shorter side resized to {config.image_min_dim} px, longer side at most {config.image_max_dim} px"
    return "images not resized"


def _bucket_label(bucket: SizeBucket) -> str:
    if bucket.anchor is not None:
        return f"{_px(bucket.low)}-{_px(bucket.high)}: anchor {bucket.anchor:g}"
    if bucket.low == 0:
        return f"under {_px(bucket.high)}: below half the smallest anchor"
    return f"over {_px(bucket.low)}: above twice the largest anchor"


def _px(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _percent(share: float) -> str:
    return f"{100 * share:.3g}%"


def _round_up(count: int) -> int:
    """The smallest round number at least `count`: a multiple of its leading power of ten (412 -> 500)."""
    step = 10 ** (len(str(max(1, count))) - 1)
    return -(-count // step) * step
