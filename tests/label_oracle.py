"""Test helper shared by the format and GeoJSON tests: objects painted into a picture, and a stand-in for
`MaskRCNN.predict` that reads them back off whatever window it is given (a whole image or a tile), with exact
masks, so that what `maskrcnn predict [--tile]` writes can be compared with the objects painted.

Channel 0 holds each object's number (1, 2, ...; 0 is background), channel 1 its class index.
"""
import numpy as np
import torch

from maskrcnn import Config, Detections, MaskRCNN, categories
from maskrcnn.categories import Category

NAMES = ["cat", "dog", "fox"]
IDS = [3, 7, 12]


def label_picture(objects, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 picture of [(class index, (H, W) bool mask)], later objects painted over earlier ones."""
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    for number, (label, mask) in enumerate(objects, start=1):
        picture[mask, 0] = number
        picture[mask, 1] = label
    return picture


def read_objects(image: np.ndarray) -> Detections:
    """The objects visible in an (h, w, 3) window: exact masks, tight boxes, object k scoring 0.9 - 0.01 k."""
    numbers = [int(n) for n in np.unique(image[:, :, 0]) if n > 0]
    boxes, labels, masks = [], [], []
    for number in numbers:
        mask = image[:, :, 0] == number
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(int(image[mask, 1][0]))
        masks.append(mask)
    height, width = image.shape[:2]
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64),
                      torch.tensor([0.9 - 0.01 * n for n in numbers], dtype=torch.float32),
                      torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, height, width), dtype=torch.bool))


def oracle_predict(self, images, score_threshold=None):
    """Stands in for MaskRCNN.predict (monkeypatched): one Detections per (h, w, 3) uint8 window."""
    return [read_objects(np.asarray(image)) for image in images]


def save_tiny_model(path) -> None:
    """A small random-weight model with the classes NAMES and the category ids IDS."""
    torch.manual_seed(0)
    model = MaskRCNN(Config.torchvision(num_classes=4, backbone="resnet18", image_min_dim=32, image_max_dim=48,
                                        fpn_channels=32, rpn_conv_channels=32, box_head_channels=64,
                                        mask_head_channels=32), class_names=["BG"] + NAMES)
    categories.attach(model, [Category(i, n) for i, n in zip(IDS, NAMES)])
    import maskrcnn

    maskrcnn.save(model, path)
