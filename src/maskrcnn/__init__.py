"""maskrcnn: Mask R-CNN instance segmentation on PyTorch."""
from . import data, evaluation, interop
from .config import Config
from .model import MaskRCNN
from .saving import load, save
from .structures import Detections

__all__ = ["Config", "MaskRCNN", "Detections", "save", "load", "data", "evaluation", "interop"]
__version__ = "0.1.0"
