"""Data sets, image reading, augmentation and batching (see each module's docstring)."""
from .coco import CocoDataset
from .cvat import CvatDataset
from .labelme import LabelMeDataset
from .labelstudio import LabelStudioDataset
from .dataset import Dataset, masks_to_boxes
from .images import read_image, to_rgb_array
from .loader import Batch, SkipUnreadable, collate, make_loader
from .mask_folder import MaskFolderDataset
from .problems import Problem
from .shapes import ShapesDataset
from .spec import load_dataset_spec
from .split import DatasetView, holdout_split
from .transforms import Compose, HorizontalFlip, default_min_dim_choices, expand_masks, minimize_masks
from .validate import validate_dataset
from .via import ViaDataset
from .yolo import YoloDataset

__all__ = [
    "Dataset", "masks_to_boxes", "ShapesDataset", "CocoDataset", "ViaDataset", "MaskFolderDataset",
    "LabelMeDataset", "CvatDataset", "LabelStudioDataset", "YoloDataset",
    "read_image", "to_rgb_array", "Compose", "HorizontalFlip", "default_min_dim_choices", "minimize_masks", "expand_masks",
    "collate", "make_loader", "Batch", "SkipUnreadable", "validate_dataset", "Problem", "load_dataset_spec",
    "DatasetView", "holdout_split",
]
