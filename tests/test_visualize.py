"""Drawing and plotting: shapes, which pixels change, and files that can be read back."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.data.dataset import Dataset
from maskrcnn.structures import Detections
from maskrcnn.visualize import (_place_caption, contact_sheet, draw_ground_truth, draw_instances, instance_colors,
                                plot_losses, plot_precision_recall, save_image)

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


def test_scale_enlarges_pixels_into_blocks():
    image, detections = scene()
    drawn = draw_instances(image, detections, CLASS_NAMES, scale=3)
    assert drawn.shape == (3 * H, 3 * W, 3)
    colors = instance_colors(2)
    blended = np.rint(0.55 * 40 + 0.45 * np.array(colors[0])).astype(np.uint8)
    np.testing.assert_array_equal(drawn[120:123, 60:63], np.broadcast_to(blended, (3, 3, 3)))  # pixel (40, 20)
    # The outline is found at the image's resolution, so it is 3 pixels thick: pixel (40, 10).
    np.testing.assert_array_equal(drawn[120:123, 30:33], np.broadcast_to(np.array(colors[0], np.uint8), (3, 3, 3)))
    np.testing.assert_array_equal(drawn[15:45, 120:165], 40)  # pixels (5:15, 40:55), away from everything
    with pytest.raises(ValueError, match="scale"):
        draw_instances(image, detections, CLASS_NAMES, scale=1.5)


def test_nothing_above_the_threshold_draws_the_best_below_under_a_note():
    image, detections = scene()  # scores 0.9 and 0.4
    plain = draw_instances(image, detections, CLASS_NAMES, score_threshold=0.95, scale=3)
    np.testing.assert_array_equal(plain, 40)  # without best_below: nothing drawn, as before
    drawn = draw_instances(image, detections, CLASS_NAMES, score_threshold=0.95, scale=3, best_below=1)
    colors = instance_colors(1)
    np.testing.assert_array_equal(drawn[121, 61], np.rint(0.55 * 40 + 0.45 * np.array(colors[0])).astype(np.uint8))
    np.testing.assert_array_equal(drawn[151, 196], 40)  # the 0.4 detection, pixel (50, 65), is not among the best 1
    np.testing.assert_array_equal(drawn[0], 0)  # the note's strip across the top
    assert (drawn[:12] == 255).any()  # its white text
    nothing = draw_instances(image, detections[:0], CLASS_NAMES, score_threshold=0.5, scale=3, best_below=3)
    np.testing.assert_array_equal(nothing[0], 0)  # "no detection at all"
    np.testing.assert_array_equal(nothing[-40:], 40)


def test_captions_are_placed_off_each_other():
    # (x1, y1, x2, y2) box, (w, h) caption, 96 x 64 image: above the box first, then inside its top, then below.
    assert _place_caption((10, 30, 30, 50), (20, 10), 96, 64, []) == (10, 20)
    assert _place_caption((10, 30, 30, 50), (20, 10), 96, 64, [(10, 20, 30, 30)]) == (10, 30)
    assert _place_caption((10, 30, 30, 50), (20, 10), 96, 64, [(10, 20, 30, 30), (10, 30, 30, 40)]) == (10, 50)
    # No room above a box at the top: inside it; a box at the right edge: the caption is moved left into the image.
    assert _place_caption((0, 0, 30, 20), (20, 10), 96, 64, []) == (0, 0)
    assert _place_caption((90, 30, 96, 50), (20, 10), 96, 64, []) == (76, 20)


def test_contact_sheet_layout():
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((4, 5, 3), np.uint8)
    blue[..., 2] = 255
    sheet = contact_sheet([red, blue, red], columns=2, gap=1)
    # 2 rows of (4 + 1) plus 1 = 11 high, 2 columns of (5 + 1) plus 1 = 13 wide, white between the tiles.
    assert sheet.shape == (11, 13, 3)
    np.testing.assert_array_equal(sheet[1:5, 1:6], red)
    np.testing.assert_array_equal(sheet[1:5, 7:12], blue)
    np.testing.assert_array_equal(sheet[6:10, 1:6], red)
    np.testing.assert_array_equal(sheet[6:10, 7:12], 255)  # no fourth tile
    np.testing.assert_array_equal(sheet[0], 255)
    np.testing.assert_array_equal(sheet[:, 6], 255)
    labelled = contact_sheet([red, blue], columns=2, gap=1, labels=["pred", "truth"])
    label_h = labelled.shape[0] - 6
    assert label_h > 0 and labelled.shape[1] == 13
    np.testing.assert_array_equal(labelled[1 + label_h:5 + label_h, 7:12], blue)
    assert (labelled[1:1 + label_h] < 128).any()  # the labels' dark text
    with pytest.raises(ValueError, match="differ in size"):
        contact_sheet([red, np.zeros((5, 5, 3), np.uint8)], columns=2)
    with pytest.raises(ValueError, match="labels"):
        contact_sheet([red, blue], columns=2, labels=["one"])
    with pytest.raises(ValueError, match="no tiles"):
        contact_sheet([], columns=2)


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
