"""Drawing and plotting: shapes, which pixels change, and files that can be read back."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.data.dataset import Dataset
from maskrcnn.structures import Detections
from maskrcnn.visualize import (draw_ground_truth, draw_instances, instance_colors, plot_losses,
                                plot_precision_recall, save_image)

H, W = 64, 96
CLASS_NAMES = ["BG", "square", "bar"]


def scene():
    image = np.full((H, W, 3), 40, dtype=np.uint8)
    masks = np.zeros((2, H, W), dtype=bool)
    masks[0, 30:50, 10:30] = True
    masks[1, 35:60, 60:70] = True
    detections = Detections(
        boxes=torch.tensor([[10, 30, 30, 50], [60, 35, 70, 60]], dtype=torch.float32),
        labels=torch.tensor([1, 2]),
        scores=torch.tensor([0.9, 0.4]),
        masks=torch.from_numpy(masks),
    )
    return image, detections


def test_draw_instances_colours_masks_only():
    image, detections = scene()
    before = image.copy()
    drawn = draw_instances(image, detections, CLASS_NAMES)
    assert drawn.shape == (H, W, 3) and drawn.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # the input is not modified
    # Inside the masks (away from outlines and captions) the colour blends towards each instance's colour.
    colors = instance_colors(2)
    assert colors[0] != colors[1]
    expected = np.rint(0.55 * 40 + 0.45 * np.array(colors[0])).astype(np.uint8)
    np.testing.assert_array_equal(drawn[40, 20], expected)
    expected = np.rint(0.55 * 40 + 0.45 * np.array(colors[1])).astype(np.uint8)
    np.testing.assert_array_equal(drawn[50, 65], expected)
    # The mask's outline is drawn in the full colour.
    np.testing.assert_array_equal(drawn[40, 10], colors[0])
    # Far from every instance and caption nothing changes.
    np.testing.assert_array_equal(drawn[5:15, 40:55], before[5:15, 40:55])
    np.testing.assert_array_equal(drawn[55:, :5], before[55:, :5])


def test_score_threshold_and_captions_inside_image():
    image, detections = scene()
    drawn = draw_instances(image, detections, CLASS_NAMES, score_threshold=0.5)
    np.testing.assert_array_equal(drawn[50, 65], image[50, 65])  # the 0.4 detection is left out
    # An instance at the top-left corner: its caption goes inside the box, not above the image.
    corner = Detections(torch.tensor([[0.0, 0.0, 30.0, 20.0]]), torch.tensor([1]), torch.tensor([0.99]),
                        torch.zeros(1, H, W, dtype=torch.bool))
    drawn = draw_instances(image, corner, CLASS_NAMES)
    assert (drawn[1:8, 1:20] != image[1:8, 1:20]).any()


def test_draw_rejects_bad_input():
    image, detections = scene()
    with pytest.raises(ValueError):
        draw_instances(image.astype(np.float32), detections, CLASS_NAMES)
    with pytest.raises(ValueError):
        draw_instances(image[:32], detections, CLASS_NAMES)  # masks are 64 x 96
    gray = draw_instances(image[:, :, 0], detections, CLASS_NAMES)
    assert gray.shape == (H, W, 3)


class TwoShapes(Dataset):
    def __init__(self):
        super().__init__()
        self.add_class("test", 1, "square")
        self.add_class("test", 2, "bar")
        self.add_image("test", 7, None)
        self.prepare()

    def load_image(self, image_index):
        return np.full((H, W, 3), 40, dtype=np.uint8)

    def load_mask(self, image_index):
        image, detections = scene()
        return detections.masks.numpy(), np.array([1, -2], dtype=np.int64)  # the bar is a crowd region


def test_draw_ground_truth():
    drawn = draw_ground_truth(TwoShapes(), 0)
    assert drawn.shape == (H, W, 3) and drawn.dtype == np.uint8
    colors = instance_colors(2)
    np.testing.assert_array_equal(drawn[40, 20], np.rint(0.55 * 40 + 0.45 * np.array(colors[0])).astype(np.uint8))
    np.testing.assert_array_equal(drawn[50, 65], np.rint(0.55 * 40 + 0.45 * np.array(colors[1])).astype(np.uint8))
    np.testing.assert_array_equal(drawn[5:15, 40:55], 40)


def test_save_image_round_trip(tmp_path):
    image, detections = scene()
    drawn = draw_instances(image, detections, CLASS_NAMES)
    path = save_image(drawn, tmp_path / "new" / "folder" / "picture.png")
    with Image.open(path) as loaded:
        assert loaded.format == "PNG"
        np.testing.assert_array_equal(np.asarray(loaded.convert("RGB")), drawn)


RECORDS = [
    {"step": step, "loss": 3.0 / step, "rpn_class": 0.5 / step, "rpn_bbox": 0.4 / step, "mrcnn_class": 0.9 / step,
     "mrcnn_bbox": 0.7 / step, "mrcnn_mask": 0.5 / step, "lr": 0.01}
    for step in range(1, 51)
]


def is_png(path):
    with Image.open(path) as loaded:
        return loaded.format == "PNG" and loaded.size[0] > 100 and loaded.size[1] > 100


def test_plot_losses_from_records_and_jsonl(tmp_path):
    path = plot_losses(RECORDS, tmp_path / "plots" / "losses.png")
    assert is_png(path)
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    assert is_png(plot_losses(log, tmp_path / "from_file.png"))
    assert is_png(plot_losses(str(log), tmp_path / "from_str.png"))
    with pytest.raises(ValueError, match="no losses"):
        plot_losses([{"step": 1, "lr": 0.1}], tmp_path / "none.png")
    log.write_text('{"step": 1, "loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match="log.jsonl:2"):
        plot_losses(log, tmp_path / "bad.png")


def test_plot_precision_recall(tmp_path):
    path = plot_precision_recall([1, 1, 0.667, 0.667, 0], [0, 0.5, 0.5, 1, 1], tmp_path / "pr.png", title="PR", ap=0.83)
    assert is_png(path)
    with pytest.raises(ValueError):
        plot_precision_recall([1, 0], [0, 0.5, 1], tmp_path / "bad.png")
