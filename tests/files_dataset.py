"""Shared by tests/test_data_loader.py and tests/test_data_validate.py: a data set of plain image files."""
import numpy as np
from PIL import Image

from maskrcnn.data import Dataset


class Files(Dataset):
    """Plain image files of different sizes; image i has i instances (one-pixel-high stripes)."""

    def __init__(self, folder, sizes):
        super().__init__()
        self.add_class("files", 1, "thing")
        for i, (width, height) in enumerate(sizes):
            path = folder / f"{i}.png"
            Image.new("RGB", (width, height), (i, i, i)).save(path)
            self.add_image("files", i, str(path))
        self.prepare()

    def load_mask(self, image_index):
        with Image.open(self.image_info[image_index]["path"]) as image:
            width, height = image.size
        masks = np.zeros((image_index, height, width), dtype=bool)
        for k in range(image_index):
            masks[k, k % height, :] = True
        return masks, np.ones(image_index, dtype=np.int64)
