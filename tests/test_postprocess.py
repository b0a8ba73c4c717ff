"""Detection layer on hand-made head outputs, mask pasting worked out by hand, the way back to original pixels."""
import math

import numpy as np
import pytest
import torch

from maskrcnn.frame import PixelFrame
from maskrcnn.postprocess import detect, expand_boxes, paste_masks, to_original

# ----------------------------------------------------------------------------------------- mask pasting
# The paste definition: the 28 x 28 mask is padded by one zero cell (30 x 30), its box grown by 30/28 about its
# centre and truncated toward zero to whole pixels (x0, y0, x1, y1), the padded mask resized bilinearly (half-pixel
# centres, as F.interpolate with align_corners=False) to (y1 - y0 + 1) x (x1 - x0 + 1) pixels, and thresholded > 0.5.
#
# Box (10, 20, 30, 44): 20 x 24 px centred on (20, 32). Grown: x 20 -/+ 10 * 30/28 = 9.29 .. 30.71 -> 9 .. 30,
# y 32 -/+ 12 * 30/28 = 19.14 .. 44.86 -> 19 .. 44, so 22 columns and 26 rows. Column j samples the padded mask at
# s = (j + 0.5) * 30/22 - 0.5. The padded all-ones mask is 0 at cells 0 and 29 and 1 on 1..28, so the value is > 0.5
# for 0.5 < s < 28.5, i.e. j = 1..20: image columns 10..29. Rows: s = (i + 0.5) * 30/26 - 0.5 in (0.5, 28.5) for
# i = 1..24: image rows 20..43. The all-ones mask fills exactly the box's own pixels.
BOX = [10.0, 20.0, 30.0, 44.0]


def test_paste_all_ones_mask_fills_the_box():
    masks = torch.ones(1, 28, 28)
    pasted = paste_masks(masks, torch.tensor([BOX]), 64, 50, 0.5)
    assert pasted.shape == (1, 64, 50) and pasted.dtype == torch.bool
    expected = torch.zeros(64, 50, dtype=torch.bool)
    expected[20:44, 10:30] = True
    assert torch.equal(pasted[0], expected)


def test_paste_left_half_mask():
    # Mask columns 0..13 are 1: padded cells 1..14. Value > 0.5 for 0.5 < s < 14.5, i.e. (j + 0.5) * 30/22 < 15:
    # j = 1..10, image columns 10..19 (the left half of the 20 px box). Rows as for the all-ones mask.
    masks = torch.zeros(1, 28, 28)
    masks[0, :, :14] = 1.0
    pasted = paste_masks(masks, torch.tensor([BOX]), 64, 50, 0.5)
    expected = torch.zeros(64, 50, dtype=torch.bool)
    expected[20:44, 10:20] = True
    assert torch.equal(pasted[0], expected)


def test_paste_box_partly_outside_the_image():
    masks = torch.ones(2, 28, 28)
    # Box 0 is BOX in a 30 x 25 image: cut at the bottom and right, rows 20..29 and columns 10..24 remain.
    # Box 1, (-10, -4, 10, 20), crosses the top-left corner. Grown: x 0 -/+ 10.71 -> -10 .. 10 (truncated toward
    # zero), 21 columns, s = (j + 0.5) * 30/21 - 0.5 in (0.5, 28.5) for j = 1..19: columns -9..9; y 8 -/+ 12.86 ->
    # -4 .. 20, 25 rows, (i + 0.5) * 30/25 - 0.5 in (0.5, 28.5) for i = 1..23: rows -3..19. Visible: rows 0..19,
    # columns 0..9, the part of the box inside the image.
    boxes = torch.tensor([BOX, [-10.0, -4.0, 10.0, 20.0]])
    pasted = paste_masks(masks, boxes, 30, 25, 0.5)
    first = torch.zeros(30, 25, dtype=torch.bool)
    first[20:30, 10:25] = True
    second = torch.zeros(30, 25, dtype=torch.bool)
    second[0:20, 0:10] = True
    assert torch.equal(pasted[0], first)
    assert torch.equal(pasted[1], second)


def test_paste_box_wholly_outside_the_image_is_empty():
    pasted = paste_masks(torch.ones(1, 28, 28), torch.tensor([[100.0, 100.0, 120.0, 130.0]]), 30, 25, 0.5)
    assert pasted.shape == (1, 30, 25) and not pasted.any()


def test_paste_no_detections():
    pasted = paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), 17, 23, 0.5)
    assert pasted.shape == (0, 17, 23) and pasted.dtype == torch.bool


def reference_paste(mask: np.ndarray, box, height: int, width: int, threshold: float) -> np.ndarray:
    """The paste definition written out pixel by pixel in numpy (an independent implementation)."""
    size = mask.shape[0]
    padded = np.pad(mask, 1)
    n = size + 2
    scale = n / size
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) / 2 * scale, (box[3] - box[1]) / 2 * scale
    x0, y0, x1, y1 = int(cx - hw), int(cy - hh), int(cx + hw), int(cy + hh)
    bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)

    def source(j, out):
        s = max((j + 0.5) * n / out - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n - 1)
        i1 = min(i0 + 1, n - 1)
        return i0, i1, s - i0

    out = np.zeros((height, width), dtype=bool)
    for y in range(max(y0, 0), min(y1 + 1, height)):
        a0, a1, ly = source(y - y0, bh)
        for x in range(max(x0, 0), min(x1 + 1, width)):
            b0, b1, lx = source(x - x0, bw)
            value = ((1 - ly) * ((1 - lx) * padded[a0, b0] + lx * padded[a0, b1])
                     + ly * ((1 - lx) * padded[a1, b0] + lx * padded[a1, b1]))
            out[y, x] = value > threshold
    return out


def test_paste_matches_a_pixel_by_pixel_reference_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 28, 28, generator=generator, dtype=torch.float64)
    boxes = torch.tensor([
        [3.3, 4.7, 17.9, 30.2],
        [-6.5, 10.0, 12.2, 19.9],
        [20.0, -3.1, 39.5, 8.8],
        [25.4, 22.2, 45.0, 50.0],
        [5.0, 5.0, 6.0, 7.0],  # smaller than the mask
        [0.0, 0.0, 40.0, 33.0],  # the whole image
    ], dtype=torch.float64)
    pasted = paste_masks(masks, boxes, 33, 40, 0.5)
    for i in range(len(boxes)):
        expected = reference_paste(masks[i].numpy(), boxes[i].tolist(), 33, 40, 0.5)
        assert np.array_equal(pasted[i].numpy(), expected), i


def test_expand_boxes():
    grown = expand_boxes(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), 1.5)
    assert grown.tolist() == [[5.0, 10.0, 35.0, 70.0]]


# ----------------------------------------------------------------------------------------- detection layer
DETECT = dict(std_dev=(1.0, 1.0, 1.0, 1.0), min_confidence=0.25, nms_threshold=0.5, max_instances=100, min_size=0.0, frame=PixelFrame())
WINDOW = (0, 0, 200, 200)  # (y1, x1, y2, x2)


def logits_from(probabilities):
    """Logits whose softmax is the given (R, C) probabilities."""
    return torch.log(torch.tensor(probabilities, dtype=torch.float64))


def test_detect_all_classes_mode_per_class_nms():
    # ROI 0: P = (0.1, 0.6, 0.3); ROI 1: P = (0.2, 0.1, 0.7); the ROIs overlap with IoU 100 / 121 = 0.83.
    # Candidates above 0.25: (ROI 0, class 1, 0.6), (ROI 0, class 2, 0.3), (ROI 1, class 2, 0.7).
    # Per-class NMS: class 2's 0.3 is removed by ROI 1's 0.7; class 1's 0.6 stays although it overlaps ROI 1.
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 11.0, 11.0]], dtype=torch.float64)
    logits = logits_from([[0.1, 0.6, 0.3], [0.2, 0.1, 0.7]])
    found = detect(logits, torch.zeros(2, 3, 4, dtype=torch.float64), rois, WINDOW, class_mode="all", **DETECT)
    assert found.labels.tolist() == [2, 1]
    torch.testing.assert_close(found.scores, torch.tensor([0.7, 0.6], dtype=torch.float64))
    assert torch.equal(found.boxes, rois[[1, 0]])
    assert found.labels.dtype == torch.int64


def test_detect_all_classes_mode_without_overlap_keeps_every_pair():
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]], dtype=torch.float64)
    logits = logits_from([[0.1, 0.6, 0.3], [0.2, 0.1, 0.7]])
    found = detect(logits, torch.zeros(2, 3, 4, dtype=torch.float64), rois, WINDOW, class_mode="all", **DETECT)
    assert found.labels.tolist() == [2, 1, 2]
    torch.testing.assert_close(found.scores, torch.tensor([0.7, 0.6, 0.3], dtype=torch.float64))
    assert torch.equal(found.boxes, rois[[1, 0, 0]])


def test_detect_argmax_mode_keeps_only_the_best_class():
    # ROI 2's best class is the background: dropped. ROI 0 keeps class 1 only, not its 0.3 for class 2.
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [100.0, 100.0, 120.0, 120.0]], dtype=torch.float64)
    logits = logits_from([[0.1, 0.6, 0.3], [0.2, 0.1, 0.7], [0.5, 0.3, 0.2]])
    found = detect(logits, torch.zeros(3, 3, 4, dtype=torch.float64), rois, WINDOW, class_mode="argmax", **DETECT)
    assert found.labels.tolist() == [2, 1]
    torch.testing.assert_close(found.scores, torch.tensor([0.7, 0.6], dtype=torch.float64))
    assert torch.equal(found.boxes, rois[[1, 0]])


def test_detect_threshold():
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]], dtype=torch.float64)
    logits = logits_from([[0.1, 0.6, 0.3], [0.2, 0.1, 0.7]])
    settings = dict(DETECT, min_confidence=0.65)
    for mode in ("all", "argmax"):
        found = detect(logits, torch.zeros(2, 3, 4, dtype=torch.float64), rois, WINDOW, class_mode=mode, **settings)
        assert found.labels.tolist() == [2], mode
    settings = dict(DETECT, min_confidence=0.9)
    found = detect(logits, torch.zeros(2, 3, 4, dtype=torch.float64), rois, WINDOW, class_mode="all", **settings)
    assert found.boxes.shape == (0, 4) and found.scores.shape == (0,) and found.labels.shape == (0,)


def test_detect_uses_each_class_deltas_and_std_dev():
    rois = torch.tensor([[10.0, 10.0, 30.0, 30.0]], dtype=torch.float64)
    deltas = torch.zeros(1, 3, 4, dtype=torch.float64)
    deltas[0, 2, 0] = 5.0  # class 2: dx = 5 * 0.1 = 0.5 of the 20 px width -> 10 px right
    deltas[0, 1, 3] = math.log(2.0) / 0.2  # class 1: height doubled about the centre
    logits = logits_from([[0.1, 0.45, 0.45]])
    settings = dict(DETECT, std_dev=(0.1, 0.1, 0.2, 0.2))
    found = detect(logits, deltas, rois, WINDOW, class_mode="all", **settings)
    boxes = {label: box for label, box in zip(found.labels.tolist(), found.boxes.tolist())}
    assert set(boxes) == {1, 2}
    assert boxes[2] == pytest.approx([20.0, 10.0, 40.0, 30.0])
    assert boxes[1] == pytest.approx([10.0, 0.0, 30.0, 40.0])


def test_detect_clips_to_the_window_and_drops_tiny_boxes():
    # ROI 0 crosses the window (180 high, 200 wide) and is clipped; ROI 1 is 0.001 px wide, below min_size 0.01.
    rois = torch.tensor([[150.0, 150.0, 250.0, 250.0], [10.0, 10.0, 10.001, 20.0]], dtype=torch.float64)
    logits = logits_from([[0.1, 0.9, 1e-9], [0.1, 0.9, 1e-9]])
    settings = dict(DETECT, min_size=0.01)
    found = detect(logits, torch.zeros(2, 3, 4, dtype=torch.float64), rois, (0, 0, 180, 200), class_mode="all", **settings)
    assert found.boxes.tolist() == [[150.0, 150.0, 200.0, 180.0]]


def test_detect_max_instances_keeps_the_highest_scores():
    rois = torch.tensor([[40.0 * i, 0.0, 40.0 * i + 20, 20.0] for i in range(5)], dtype=torch.float64)
    foreground = [0.5, 0.9, 0.7, 0.6, 0.8]
    logits = logits_from([[1 - p, p] for p in foreground])
    settings = dict(DETECT, max_instances=3)
    found = detect(logits, torch.zeros(5, 2, 4, dtype=torch.float64), rois, WINDOW, class_mode="all", **settings)
    torch.testing.assert_close(found.scores, torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64))
    assert torch.equal(found.boxes, rois[[1, 4, 2]])


def test_detect_with_no_rois():
    found = detect(torch.zeros(0, 3), torch.zeros(0, 3, 4), torch.zeros(0, 4), WINDOW, class_mode="all", **DETECT)
    assert found.boxes.shape == (0, 4) and found.labels.shape == (0,)


# ----------------------------------------------------------------------------------------- back to the original image
def test_to_original_undoes_resize_and_window():
    # A 100 x 200 image resized by 0.5 to 50 x 100, placed at the origin of the padded batch.
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0]])
    assert to_original(boxes, (0, 0, 50, 100), (100, 200)).tolist() == [[20.0, 10.0, 60.0, 50.0]]
    # The same resized image centred in a 128 x 128 square: window (39, 14, 89, 114); the offset comes off first.
    shifted = boxes + torch.tensor([14.0, 39.0, 14.0, 39.0])
    assert to_original(shifted, (39, 14, 89, 114), (100, 200)).tolist() == [[20.0, 10.0, 60.0, 50.0]]


def test_to_original_with_different_ratios_in_x_and_y():
    # A 90 x 60 image shown as 64 x 32: y ratio 90/64 = 1.40625, x ratio 60/32 = 1.875 (both exact in binary).
    boxes = torch.tensor([[32.0, 16.0, 64.0, 48.0]], dtype=torch.float64)
    out = to_original(boxes, (0, 0, 64, 32), (90, 60))
    assert out.tolist() == [[60.0, 22.5, 120.0, 67.5]]
    assert out.dtype == torch.float64
