"""Box head (box_head.py): detection targets on hand-made proposals and boxes, and the two head losses
(mrcnn_class, mrcnn_bbox) by hand."""
import math

import pytest
import torch
from numeric_helpers import boxes, smooth_l1

from maskrcnn.box_head import detection_targets, mrcnn_bbox_loss, mrcnn_class_loss
from maskrcnn.boxes import decode_deltas

HEADS_STD = (0.1, 0.1, 0.2, 0.2)
HEADS = dict(rois_per_image=64, positive_ratio=0.33, positive_iou=0.5, negative_iou=0.5, std_dev=HEADS_STD)


# ---------------------------------------------------------------------------------------------- targets
def test_detection_targets_without_ground_truth_are_all_background():
    proposals = boxes((0, 0, 10, 10), (5, 5, 30, 30), (50, 60, 90, 100))
    sampled = detection_targets([proposals], [torch.zeros((0, 4))], [torch.zeros((0,), dtype=torch.int64)], **HEADS)
    assert sampled.num_positive == [0]
    assert sampled.labels.tolist() == [0, 0, 0]
    assert torch.count_nonzero(sampled.deltas) == 0
    assert sorted(map(tuple, sampled.rois[0].tolist())) == sorted(map(tuple, proposals.tolist()))
    assert sampled.matched_gt[0].numel() == 0


def test_ground_truth_box_without_proposal_becomes_a_positive_roi():
    proposals = boxes((0, 0, 10, 10), (150, 150, 190, 190))  # nowhere near the object
    gt, classes = boxes((60, 50, 100, 110)), torch.tensor([2])
    sampled = detection_targets([proposals], [gt], [classes], **HEADS)
    assert sampled.num_positive == [1]
    torch.testing.assert_close(sampled.rois[0][0], gt[0])  # positives come first
    assert sampled.labels.tolist() == [2, 0, 0]
    assert sampled.matched_gt[0].tolist() == [0]
    assert torch.count_nonzero(sampled.deltas) == 0  # a perfect ROI needs no correction


def test_detection_targets_positive_ratio_and_total():
    gt, classes = boxes((40, 40, 80, 80)), torch.tensor([1])
    shifted = torch.cat([gt + torch.tensor([d, 0.0, d, 0.0]) for d in torch.linspace(-5, 5, 100).tolist()])  # IoU >= 0.77
    far = boxes((150, 150, 190, 190)).repeat(100, 1)
    sampled = detection_targets([torch.cat((shifted, far))], [gt], [classes], **HEADS)
    assert sampled.num_positive == [int(64 * 0.33)] == [21]
    assert len(sampled.rois[0]) == 64
    assert sampled.labels.tolist() == [1] * 21 + [0] * 43


def test_detection_targets_with_two_classes_decode_onto_their_ground_truth():
    gt, classes = boxes((10, 10, 50, 60), (100, 80, 160, 120)), torch.tensor([3, 1])
    proposals = boxes((12, 8, 52, 58), (8, 14, 46, 64), (104, 84, 158, 124), (96, 76, 150, 118), (170, 170, 190, 190))
    sampled = detection_targets([proposals], [gt], [classes], **HEADS)
    count = sampled.num_positive[0]
    assert count == 6  # four proposals and the two ground-truth boxes
    positives = sampled.rois[0][:count]
    matched = sampled.matched_gt[0]
    assert sampled.labels[:count].tolist() == classes[matched].tolist()
    assert sorted(matched.tolist()) == [0, 0, 0, 1, 1, 1]
    decoded = decode_deltas(sampled.deltas[:count], positives, HEADS_STD)
    torch.testing.assert_close(decoded, gt[matched], atol=1e-4, rtol=0)
    assert sampled.labels[count:].tolist() == [0]  # the far proposal


def test_detection_targets_labels_a_batch_image_by_image():
    gt = [boxes((10, 10, 50, 50)), torch.zeros((0, 4))]
    classes = [torch.tensor([2]), torch.zeros((0,), dtype=torch.int64)]
    proposals = [boxes((100, 100, 140, 140)), boxes((10, 10, 50, 50), (0, 0, 5, 5))]
    sampled = detection_targets(proposals, gt, classes, **HEADS)
    assert sampled.num_positive == [1, 0]
    assert [len(r) for r in sampled.rois] == [2, 2]
    # The second image's ROI equal to the first image's object is background there.
    assert sampled.labels.tolist() == [2, 0, 0, 0]


# ---------------------------------------------------------------------------------------------- losses
def test_mrcnn_class_loss_by_hand():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 2])
    expected = (math.log(1 + 2 * math.exp(-1)) + math.log(1 + 2 * math.exp(-2))) / 2
    assert mrcnn_class_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mrcnn_bbox_loss_uses_the_true_class_of_positives_only():
    deltas = torch.full((3, 3, 4), 7.0)  # other classes' and the negative's deltas must not count
    deltas[0, 2] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    deltas[2, 1] = torch.tensor([0.0, 0.0, 0.1, 0.0])
    labels = torch.tensor([2, 0, 1])
    targets = torch.tensor([[0.0, 0, 0, 0], [5, 5, 5, 5], [0, 0, 0, 0.05]])
    expected = (smooth_l1(0.5) + smooth_l1(0.1) + smooth_l1(-0.05)) / 3  # divided by all 3 ROIs
    assert mrcnn_bbox_loss(deltas, labels, targets).item() == pytest.approx(expected, rel=1e-6)
    assert mrcnn_bbox_loss(deltas, torch.tensor([0, 0, 0]), targets).item() == 0.0
