"""Every knob of the model and its training, in one dataclass, with presets and YAML/JSON files.

The config is read in one place (`MaskRCNN.__init__` and `Trainer.__init__`), which hands plain keyword
arguments to the modules. Field names follow matterport's `Config` where one exists.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .files import atomic_write_text

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
LOSS_NAMES = ("rpn_class", "rpn_bbox", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask")


def _default_loss_weights() -> dict:
    return {name: 1.0 for name in LOSS_NAMES}


@dataclass
class Config:
    # ---------------------------------------------------------------- classes
    num_classes: int = 81  # counts the background class 0 (matterport NUM_CLASSES, torchvision num_classes)

    # ---------------------------------------------------------------- layout
    # Whose arithmetic the model follows where the two references differ (maskrcnn.layout):
    # "torchvision": torchvision's ResNet, bilinear resize of the float image, pixel boxes (far corner one
    # past the box), roi_align with FPN's level rule;
    # "matterport": the seed's Keras ResNet (stride on the first 1x1 conv, conv biases), skimage's resize of
    # the uint8 image, its normalised (H - 1) box convention and delta arithmetic, proposals clipped to the
    # padded image, TensorFlow's crop_and_resize, unmold_detections (whole-pixel boxes, skimage mask resize)
    layout: str = "torchvision"

    # ---------------------------------------------------------------- backbone
    backbone: str = "resnet50"  # one of BACKBONES
    backbone_strides: tuple = (4, 8, 16, 32, 64)  # pixels per feature cell of P2..P6
    fpn_channels: int = 256  # matterport TOP_DOWN_PYRAMID_SIZE
    fpn_norm: str = "none"  # "none" or "batch" (torchvision's v2 FPN has batch norm)
    train_bn: bool = False  # False: batch norm frozen (statistics and affine), as for small batches
    batch_norm_eps: float = 1e-5

    # ---------------------------------------------------------------- anchors
    anchor_scales: tuple = (32, 64, 128, 256, 512)  # side in pixels, one per level P2..P6
    anchor_ratios: tuple = (0.5, 1.0, 2.0)  # width / height, in the order of the RPN's output channels
    anchor_stride: int = 1  # anchors at every anchor_stride-th feature cell
    anchor_round: bool = False  # torchvision rounds its cell anchors to whole pixels
    # torchvision takes each level's stride as padded_image_size // feature_size (so P6 of an 800 px side
    # has stride 61, not 64); matterport uses backbone_strides as they are
    anchor_stride_from_feature_size: bool = False

    # ---------------------------------------------------------------- RPN
    rpn_conv_channels: int = 256  # the shared 3x3 conv (matterport: 512)
    rpn_conv_depth: int = 1  # number of shared 3x3 convs (torchvision v2: 2)
    rpn_objectness: str = "sigmoid"  # "sigmoid": one logit per anchor; "softmax": two (background, object)
    rpn_bbox_std_dev: tuple = (1.0, 1.0, 1.0, 1.0)  # deltas are divided by these in the targets
    rpn_pre_nms_limit_training: int = 2000
    rpn_pre_nms_limit_inference: int = 1000
    rpn_pre_nms_per_level: bool = True  # top-k per pyramid level (torchvision) or over all anchors (matterport)
    rpn_nms_per_level: bool = True  # NMS within each level (torchvision) or over all proposals (matterport)
    rpn_nms_threshold: float = 0.7
    post_nms_rois_training: int = 2000
    post_nms_rois_inference: int = 1000
    rpn_min_size: float = 1e-3  # proposals narrower or lower than this (pixels) are dropped
    rpn_train_anchors_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_ignore_crossing_anchors: bool = False  # True: anchors crossing the image edge get no label

    # ---------------------------------------------------------------- ROI heads
    pool_size: int = 7
    mask_pool_size: int = 14
    mask_shape: tuple = (28, 28)
    roi_sampling_ratio: int = 2  # bilinear samples per bin side in roi_align (0: adaptive)
    roi_canonical_size: int = 224  # FPN Eq. 1: k = floor(k0 + log2(sqrt(wh) / 224))
    roi_canonical_level: int = 4
    box_head: str = "fc"  # "fc": two fully connected layers; "conv": the seed's 7x7 and 1x1 convs + BN;
    #                       "conv4fc": torchvision v2's four 3x3 convs + BN and one FC
    box_head_channels: int = 1024  # matterport FPN_CLASSIF_FC_LAYERS_SIZE
    mask_head_channels: int = 256
    mask_head_norm: str = "none"  # "none" or "batch"
    # The heads' batch norm (mask head with mask_head_norm "batch", box head "conv" / "conv4fc") always trains its
    # gamma and beta; in training it normalises by the "batch" (torchvision v2's nn.BatchNorm2d) or by its
    # "running" statistics, left unchanged (matterport's BatchNorm(training=TRAIN_BN) with TRAIN_BN False)
    head_bn_statistics: str = "batch"
    train_rois_per_image: int = 512  # matterport TRAIN_ROIS_PER_IMAGE
    roi_positive_ratio: float = 0.25
    # At most this many positive ROIs per image (a random subset) train the mask head; 0: all of them, as the
    # seed and torchvision. The mask head is the most expensive part of a small model's training step.
    mask_rois_per_image: int = 0
    roi_positive_iou: float = 0.5
    roi_negative_iou: float = 0.5  # ROIs with IoU below this are negatives
    bbox_std_dev: tuple = (0.1, 0.1, 0.2, 0.2)  # box head deltas (dx, dy, dw, dh) are divided by these
    detection_max_instances: int = 100
    detection_min_confidence: float = 0.05
    detection_nms_threshold: float = 0.5
    detection_min_size: float = 1e-2
    # "all": every class whose score passes is a candidate (torchvision); "argmax": only the best class (matterport)
    detection_class_mode: str = "all"
    mask_threshold: float = 0.5

    # ---------------------------------------------------------------- images
    image_resize_mode: str = "shorter_side"  # "shorter_side" (torchvision), "square" (matterport), "none"
    image_min_dim: int = 800
    image_max_dim: int = 1333
    # Scale augmentation: in training each image's image_min_dim is drawn from these (torchvision's
    # GeneralizedRCNNTransform(min_size=(...)), detectron2's ResizeShortestEdge sample_style "choice");
    # inference always uses image_min_dim. Empty: always image_min_dim. `maskrcnn train` fills it in
    # (default_min_dim_choices) unless --no-augment.
    image_min_dim_choices: tuple = ()
    image_size_divisor: int = 32  # the padded batch is a multiple of this
    pixel_mean: tuple = (0.485, 0.456, 0.406)  # on the [0, 1] scale
    pixel_std: tuple = (0.229, 0.224, 0.225)
    use_mini_mask: bool = False
    mini_mask_shape: tuple = (56, 56)

    # ---------------------------------------------------------------- training
    # How a training step samples targets and weighs its losses (maskrcnn.training_convention): "torchvision"
    # (ground-truth boxes added to the proposals, negatives fill the ROI sample, smooth L1 beta 1/9 summed over
    # the sample, crowd boxes dropped) or "matterport" (proposals only, zero ROIs pad the sample, smooth L1
    # beta 1 averaged over the positives, clipped mask BCE, anchors and ROIs near crowd boxes never negative)
    training_convention: str = "torchvision"
    images_per_batch: int = 2
    optimizer: str = "sgd"  # "sgd" or "adamw"
    learning_rate: float = 0.02  # with lr_reference_batch 0: the rate used; else the rate for that global batch
    # Linear scaling rule (Goyal et al. 2017): learning_rate is the rate for a global batch of this many
    # images, and training uses learning_rate x global batch / lr_reference_batch. 0: learning_rate as given.
    lr_reference_batch: int = 0
    learning_momentum: float = 0.9
    weight_decay: float = 1e-4
    gradient_clip_norm: float = 5.0  # 0 turns clipping off
    lr_warmup_steps: int = 100
    lr_schedule: str = "step"  # "step", "cosine" or "constant"
    lr_steps: tuple = ()  # step schedule: fractions of training where the rate drops 10x
    loss_weights: dict = field(default_factory=_default_loss_weights)

    # ---------------------------------------------------------------- presets
    @classmethod
    def torchvision(cls, num_classes: int = 91, **overrides) -> "Config":
        """torchvision's `maskrcnn_resnet50_fpn` (v1): its COCO weights score 37.9 box AP / 34.6 mask AP."""
        settings = dict(
            num_classes=num_classes,
            anchor_ratios=(2.0, 1.0, 0.5),  # torchvision's ratios are height/width (0.5, 1, 2)
            anchor_round=True,
            anchor_stride_from_feature_size=True,
            # torchvision's references/detection recipe: 0.02 for 8 GPUs x 2 images, scaled linearly to the
            # batch used; 26 epochs with 10x drops after epochs 16 and 22
            learning_rate=0.02,
            lr_reference_batch=16,
            lr_schedule="step",
            lr_steps=(16 / 26, 22 / 26),
        )
        if "learning_rate" in overrides and "lr_reference_batch" not in overrides:
            settings["lr_reference_batch"] = 0  # a rate the user sets is used as given
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def torchvision_v2(cls, num_classes: int = 91, **overrides) -> "Config":
        """torchvision's `maskrcnn_resnet50_fpn_v2`: batch-norm FPN and heads, two-conv RPN head."""
        settings = dict(fpn_norm="batch", rpn_conv_depth=2, box_head="conv4fc", mask_head_norm="batch")
        settings.update(overrides)
        return cls.torchvision(num_classes, **settings)

    @classmethod
    def matterport(cls, num_classes: int = 81, **overrides) -> "Config":
        """The seed's configuration (matterport's `Config` defaults)."""
        settings = dict(
            num_classes=num_classes,
            layout="matterport",
            backbone="resnet101",
            batch_norm_eps=1e-3,
            rpn_conv_channels=512,
            rpn_objectness="softmax",
            rpn_bbox_std_dev=(0.1, 0.1, 0.2, 0.2),
            rpn_pre_nms_limit_training=6000,
            rpn_pre_nms_limit_inference=6000,
            rpn_pre_nms_per_level=False,
            rpn_nms_per_level=False,
            rpn_min_size=0.0,
            post_nms_rois_training=2000,
            post_nms_rois_inference=1000,
            roi_sampling_ratio=1,
            box_head="conv",
            mask_head_norm="batch",
            head_bn_statistics="running",
            train_rois_per_image=200,
            roi_positive_ratio=0.33,
            detection_min_confidence=0.7,
            detection_nms_threshold=0.3,
            detection_min_size=0.0,
            detection_class_mode="argmax",
            image_resize_mode="square",
            image_min_dim=800,
            image_max_dim=1024,
            image_size_divisor=64,
            pixel_mean=(123.7 / 255, 116.8 / 255, 103.9 / 255),
            pixel_std=(1 / 255, 1 / 255, 1 / 255),  # matterport subtracts the mean pixel and does not scale
            use_mini_mask=True,
            training_convention="matterport",
            learning_rate=0.001,
            lr_warmup_steps=0,
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def demo(cls, **overrides) -> "Config":
        """Small and fast for a 2-core CPU: ResNet-18, 64-channel FPN and heads, 128 px synthetic shapes.

        Trained from scratch, so batch norm is trained (also in the mask head), and AdamW at 2e-3 with half
        of the sampled ROIs positive: measured on the demo's shapes, these learn about twice as fast per
        step as SGD at 0.02 with a quarter positives.
        """
        settings = dict(
            num_classes=4,
            backbone="resnet18",
            train_bn=True,
            fpn_channels=64,
            rpn_conv_channels=64,
            anchor_scales=(8, 16, 32, 64, 128),
            rpn_pre_nms_limit_training=500,
            rpn_pre_nms_limit_inference=300,
            post_nms_rois_training=300,
            post_nms_rois_inference=100,
            rpn_train_anchors_per_image=128,
            box_head_channels=256,
            mask_head_channels=64,
            mask_head_norm="batch",
            roi_sampling_ratio=1,  # one bilinear sample per bin: half the ROIAlign cost, same accuracy here
            train_rois_per_image=64,
            roi_positive_ratio=0.5,
            mask_rois_per_image=4,  # a 25-30% faster step; learning per step as with all (0.908 vs 0.898 at 300 steps)
            # mAP is taken over every detection above 0.05 (torchvision's and detectron2's test threshold):
            # measured +0.01 mask mAP@0.5 over 0.3; `maskrcnn demo` draws only those above 0.5.
            detection_min_confidence=0.05,
            detection_max_instances=20,
            image_resize_mode="none",
            image_min_dim=128,
            image_max_dim=128,
            images_per_batch=8,
            optimizer="adamw",
            learning_rate=0.002,
            weight_decay=0.05,
            lr_warmup_steps=30,
            lr_schedule="cosine",
        )
        settings.update(overrides)
        return cls(**settings)

    def training_learning_rate(self, global_batch: int) -> tuple[float, str]:
        """The base learning rate for a global batch of this many images, and why it is that."""
        if not self.lr_reference_batch:
            return self.learning_rate, f"learning_rate {self.learning_rate:g} as given"
        rate = self.learning_rate * global_batch / self.lr_reference_batch
        return rate, (f"{self.learning_rate:g} x {global_batch} / {self.lr_reference_batch} = {rate:g}: the linear scaling "
                      f"rule (Goyal et al. 2017) from the preset's {self.learning_rate:g} for {self.lr_reference_batch} "
                      f"images a step to this run's global batch of {global_batch} (--set learning_rate=X uses X as given)")

    # ---------------------------------------------------------------- checks
    def __post_init__(self):
        self._coerce_types()
        self.validate()

    def _coerce_types(self) -> None:
        """Lists read from YAML/JSON become the tuples the fields declare; a value of the wrong type is a
        ConfigError naming the field (before any check compares it)."""
        hints = typing.get_type_hints(type(self))
        number = (int, float)
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), hints[f.name]
            if kind is tuple and isinstance(value, list):
                value = tuple(value)
                setattr(self, f.name, value)
            if kind is tuple:
                ok = isinstance(value, tuple) and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
            elif kind is float:
                ok = isinstance(value, number) and not isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is bool:
                ok = isinstance(value, bool)
            elif kind is str:
                ok = isinstance(value, str)
            elif kind is dict:
                ok = isinstance(value, dict) and all(isinstance(v, number) for v in value.values())
            else:
                ok = True
            if not ok:
                raise ConfigError(f"config field {f.name!r} = {value!r}: expected {'a list of numbers' if kind is tuple else kind.__name__}")

    def validate(self) -> None:
        """Raise ConfigError naming the field for any impossible value."""

        def fail(name: str, message: str):
            raise ConfigError(f"config field {name!r} = {getattr(self, name)!r}: {message}")

        choices = {
            "layout": ("torchvision", "matterport"),
            "training_convention": ("torchvision", "matterport"),
            "backbone": BACKBONES,
            "fpn_norm": ("none", "batch"),
            "rpn_objectness": ("sigmoid", "softmax"),
            "box_head": ("fc", "conv", "conv4fc"),
            "mask_head_norm": ("none", "batch"),
            "head_bn_statistics": ("batch", "running"),
            "detection_class_mode": ("all", "argmax"),
            "image_resize_mode": ("shorter_side", "square", "none"),
            "optimizer": ("sgd", "adamw"),
            "lr_schedule": ("step", "cosine", "constant"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {', '.join(map(repr, allowed))}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            fail("num_classes", "must be an integer >= 2 (it counts the background class 0)")
        positive_ints = (
            "fpn_channels rpn_conv_channels rpn_conv_depth anchor_stride rpn_pre_nms_limit_training "
            "rpn_pre_nms_limit_inference post_nms_rois_training post_nms_rois_inference "
            "rpn_train_anchors_per_image pool_size mask_pool_size roi_canonical_size box_head_channels "
            "mask_head_channels train_rois_per_image detection_max_instances image_size_divisor images_per_batch"
        ).split()
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "must be a positive integer")
        if self.mask_rois_per_image < 0:
            fail("mask_rois_per_image", "must be >= 0 (0: every positive ROI trains the mask head)")
        if len(self.backbone_strides) != 5 or any(s <= 0 for s in self.backbone_strides):
            fail("backbone_strides", "must be five positive strides, one per level P2..P6")
        if len(self.anchor_scales) != 5 or any(s <= 0 for s in self.anchor_scales):
            fail("anchor_scales", "must be five positive sizes in pixels, one per level P2..P6")
        if not self.anchor_ratios or any(r <= 0 for r in self.anchor_ratios):
            fail("anchor_ratios", "must be positive width/height ratios")
        for name in ("rpn_bbox_std_dev", "bbox_std_dev"):
            if len(getattr(self, name)) != 4 or any(s <= 0 for s in getattr(self, name)):
                fail(name, "must be four positive numbers (dx, dy, dw, dh)")
        for name in ("pixel_mean", "pixel_std"):
            if len(getattr(self, name)) != 3:
                fail(name, "must have three values (R, G, B)")
        if any(s <= 0 for s in self.pixel_std):
            fail("pixel_std", "must be positive")
        unit_interval = (
            "rpn_nms_threshold rpn_positive_fraction rpn_positive_iou rpn_negative_iou roi_positive_ratio "
            "roi_positive_iou roi_negative_iou detection_min_confidence detection_nms_threshold mask_threshold"
        ).split()
        for name in unit_interval:
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0) or math.isnan(value):
                fail(name, "must lie in [0, 1]")
        if self.rpn_negative_iou > self.rpn_positive_iou:
            fail("rpn_negative_iou", f"must not exceed rpn_positive_iou ({self.rpn_positive_iou})")
        if self.roi_negative_iou > self.roi_positive_iou:
            fail("roi_negative_iou", f"must not exceed roi_positive_iou ({self.roi_positive_iou})")
        if len(self.mask_shape) != 2 or self.mask_shape[0] != self.mask_shape[1]:
            fail("mask_shape", "must be a square (size, size)")
        if self.mask_shape[0] != 2 * self.mask_pool_size:
            fail("mask_shape", f"must be twice mask_pool_size ({self.mask_pool_size}): the mask head upsamples 2x")
        if self.image_min_dim < 1 or self.image_max_dim < self.image_min_dim:
            fail("image_max_dim", f"must be >= image_min_dim ({self.image_min_dim}) and both positive")
        if self.use_mini_mask and self.layout != "matterport":
            fail("use_mini_mask", "mini-masks are cut in matterport's box frame: set layout: matterport, or use_mini_mask: false")
        if self.learning_rate <= 0:
            fail("learning_rate", "must be positive")
        if self.lr_reference_batch < 0:
            fail("lr_reference_batch", "must be a number of images >= 1, or 0 to use learning_rate as given")
        if self.image_min_dim_choices:
            if any(not isinstance(d, int) or d < 1 for d in self.image_min_dim_choices):
                fail("image_min_dim_choices", "must be positive whole numbers of pixels")
            if self.image_resize_mode == "none":
                fail("image_min_dim_choices", "must be empty with image_resize_mode 'none', which resizes nothing")
            if self.layout == "matterport":
                fail("image_min_dim_choices", "must be empty with layout 'matterport' (its mold_inputs resizes "
                                              "every image to image_min_dim)")
        if self.weight_decay < 0 or self.gradient_clip_norm < 0 or self.lr_warmup_steps < 0:
            fail("weight_decay", "weight_decay, gradient_clip_norm and lr_warmup_steps must be >= 0")
        if set(self.loss_weights) != set(LOSS_NAMES):
            fail("loss_weights", f"must give a weight for each of {', '.join(LOSS_NAMES)}")

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        data = _layout_from_former_fields(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed, validated (for command-line overrides)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        if "learning_rate" in changes and "lr_reference_batch" not in changes:
            changes = {**changes, "lr_reference_batch": 0}  # a rate the user sets is used as given
        return dataclasses.replace(self, **changes)

    def save(self, path) -> None:
        """Write YAML (.yaml/.yml) or JSON (.json)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix.lower() == ".json":
            text = json.dumps(data, indent=2)
        else:
            text = yaml.safe_dump(data, sort_keys=False)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path) -> "Config":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config file: {error}") from error
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        except TypeError as error:
            raise ConfigError(f"{path}: {error}") from None


# Configs written before `layout` existed (saved models, ONNX metadata) name the layout in four fields.
FORMER_LAYOUT_FIELDS = {
    "backbone_layout": {"torchvision": "torchvision", "matterport": "matterport"},
    "box_convention": {"pixels": "torchvision", "matterport": "matterport"},
    "roi_align_method": {"roi_align": "torchvision", "crop_and_resize": "matterport"},
    "image_resize_method": {"bilinear": "torchvision", "skimage": "matterport"},
}


def _layout_from_former_fields(data: dict) -> dict:
    """`data` with the four former layout fields replaced by `layout`; a mix of the two layouts was never
    tested against either reference and is refused."""
    former = {name: data[name] for name in FORMER_LAYOUT_FIELDS if name in data}
    if not former:
        return data
    implied = {}
    for name, value in former.items():
        if value not in FORMER_LAYOUT_FIELDS[name]:
            raise ConfigError(f"config field {name!r} = {value!r}: must be one of {', '.join(map(repr, FORMER_LAYOUT_FIELDS[name]))}")
        implied[name] = FORMER_LAYOUT_FIELDS[name][value]
    if "layout" in data:
        implied["layout"] = data["layout"]
    if len(set(implied.values())) > 1:
        raise ConfigError(
            "config fields " + ", ".join(f"{k}={data[k]!r}" for k in implied)
            + " mix the torchvision and matterport layouts, which no reference was tested with; set layout: "
            "torchvision or layout: matterport instead"
        )
    rest = {k: v for k, v in data.items() if k not in FORMER_LAYOUT_FIELDS}
    return {**rest, "layout": next(iter(implied.values()))}
