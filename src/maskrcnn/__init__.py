"""maskrcnn: Mask R-CNN instance segmentation on PyTorch."""
from .config import Config
from .model import MaskRCNN
from .structures import Detections

__all__ = ["Config", "MaskRCNN", "Detections"]
__version__ = "0.1.0"
