"""The two layouts people have Mask R-CNN weights for, chosen once by `Config.layout`.

A layout is what differs between torchvision's and matterport's arithmetic for the same network: the
trunk, the pre-processing, the box frame (decoding, clipping, ranking, the way back to the image) and the
ROI pooler. `MaskRCNN` (and the ONNX predictor, for pre- and post-processing) take them from here; the
stages receive the chosen objects and never compare a layout name.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .backbone import ResNetTrunk
from .config import Config
from .frame import PixelFrame
from .matterport import CropAndResizePooler, MatterportFrame, MatterportPreprocessor, MatterportResNet
from .preprocess import Preprocessor
from .roi_align import PyramidROIAlign


@dataclass(frozen=True)
class Layout:
    frame: PixelFrame  # box arithmetic handed to the anchors, proposal and detection layers, post-processing
    preprocessor: type[Preprocessor]  # resize, normalise, pad
    trunk: type[nn.Module]  # ResNet giving C2..C5: (name, *, train_bn, eps)
    pooler: type  # pyramid ROI pooling: (*, output_size, strides, sampling_ratio, canonical_size, canonical_level)
    # Whether the CPU convolutions may switch to channels-last: matterport's float64 reference detections
    # hinge on crop_and_resize samples that land exactly on a feature map's edge, and channels-last sums in
    # another order, which moves those by an ulp and flips a few ROIs.
    channels_last: bool


LAYOUTS = {
    "torchvision": Layout(PixelFrame(), Preprocessor, ResNetTrunk, PyramidROIAlign, channels_last=True),
    "matterport": Layout(MatterportFrame(), MatterportPreprocessor, MatterportResNet, CropAndResizePooler, channels_last=False),
}


def layout_of(config: Config) -> Layout:
    return LAYOUTS[config.layout]


def build_preprocessor(config: Config) -> Preprocessor:
    """The pre-processing of a config (the model's, and the ONNX predictor's from a file's metadata)."""
    c = config
    return layout_of(c).preprocessor(
        resize_mode=c.image_resize_mode, min_dim=c.image_min_dim, max_dim=c.image_max_dim,
        size_divisor=c.image_size_divisor, pixel_mean=c.pixel_mean, pixel_std=c.pixel_std,
        min_dim_choices=c.image_min_dim_choices,
    )
