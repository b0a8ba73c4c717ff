"""Instances whose mask has no pixel in the image are dropped with a warning naming the file and the annotation,
for every reader and for a user's own `load_mask`, so training never sees a box of zero size."""
import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import CocoDataset, Dataset, LabelMeDataset, ViaDataset
from maskrcnn.errors import DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 40, 50
INSIDE = [10, 5, 30, 5, 30, 15, 10, 15]


def _valid_boxes(target) -> bool:
    boxes = target["boxes"]
    return bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all())


def test_coco_drops_empty_masks_when_built(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    annotations = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10], "segmentation": [INSIDE]},
                   # the box reaches into the image, the polygon lies to its right, outside
                   {"id": 2, "image_id": 1, "category_id": 3, "bbox": [45, 5, 10, 10],
                    "segmentation": [[55, 5, 65, 5, 65, 15]]},
                   # a sliver thinner than a pixel between pixel centres
                   {"id": 3, "image_id": 1, "category_id": 3, "bbox": [3.1, 3.1, 0.2, 0.2],
                    "segmentation": [[3.1, 3.1, 3.3, 3.1, 3.3, 3.3]]}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
                                "annotations": annotations, "categories": [{"id": 3, "name": "cat"}]}))
    with pytest.warns(DataWarning) as caught:
        dataset = CocoDataset(path, max_skip_fraction=1.0)
    text = "\n".join(str(w.message) for w in caught)
    assert "image 1, annotation 2: its mask has no pixel inside the 50x40 image; skipped" in text
    assert "image 1, annotation 3: its mask has no pixel" in text
    assert [a["id"] for a in dataset.coco.dataset["annotations"]] == [1]
    assert _valid_boxes(dataset.load_target(0)) and len(dataset.load_target(0)["labels"]) == 1


def test_via_drops_regions_outside_the_image(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    regions = [{"shape_attributes": {"name": "polygon", "all_points_x": [10, 30, 30], "all_points_y": [5, 5, 15]}},
               {"shape_attributes": {"name": "polygon", "all_points_x": [60, 70, 70], "all_points_y": [5, 5, 15]}}]
    path = tmp_path / "via.json"
    path.write_text(json.dumps({"a": {"filename": "a.png", "regions": regions}}))
    dataset = ViaDataset(path)
    with pytest.warns(DataWarning, match="via.json: image 'a.png', annotation 'region 1': its mask has no pixel"):
        masks, class_ids = dataset.load_mask(0)
    assert masks.shape == (1, H, W) and class_ids.tolist() == [1]


def test_labelme_drops_empty_shapes_when_built(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    shapes = [{"label": "a", "points": [[10, 5], [30, 15]], "shape_type": "rectangle"},
              {"label": "a", "points": [[60, 5], [70, 15]], "shape_type": "rectangle"}]
    (tmp_path / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "a.png", "imageHeight": H,
                                                 "imageWidth": W}))
    with pytest.warns(DataWarning, match="image 'a.json', annotation 'shape 1': its mask has no pixel"):
        dataset = LabelMeDataset(tmp_path, max_skip_fraction=1.0)
    assert dataset.num_instances(0) == 1


class _UserDataset(Dataset):
    """A user's subclass whose load_mask returns an all-zero mask between two good ones."""

    def __init__(self):
        super().__init__()
        self.add_class("mine", 1, "thing")
        self.add_image("mine", "x", None)
        self.prepare()

    def load_image(self, image_index):
        return np.zeros((H, W, 3), dtype=np.uint8)

    def load_mask(self, image_index):
        masks = np.zeros((3, H, W), dtype=bool)
        masks[0, 0:5, 0:5] = True
        masks[2, 10:20, 10:30] = True
        return masks, np.array([1, 1, 1])


def test_user_load_mask_empty_instance_left_out_of_the_target():
    with pytest.warns(DataWarning, match="mine:x: instance 1 of load_mask has an empty mask; left out"):
        target = _UserDataset().load_target(0)
    assert target["boxes"].tolist() == [[0, 0, 5, 5], [10, 10, 30, 20]]
    assert target["masks"].shape == (2, H, W) and _valid_boxes(target)
