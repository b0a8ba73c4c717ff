"""RPN (rpn.py): anchor targets on hand-made boxes, and the two RPN losses (rpn_class, rpn_bbox) by hand."""
import math

import pytest
import torch
from numeric_helpers import boxes, smooth_l1

from maskrcnn.boxes import decode_deltas
from maskrcnn.rpn import RPNTargets, rpn_bbox_loss, rpn_class_loss, rpn_targets
from maskrcnn.structures import IGNORE, NEGATIVE, POSITIVE

P, N, I = POSITIVE, NEGATIVE, IGNORE
WINDOW = (0.0, 0.0, 200.0, 200.0)  # y1 x1 y2 x2 of the real image inside the padded batch
RPN = dict(positive_iou=0.7, negative_iou=0.3, anchors_per_image=256, positive_fraction=0.5,
           std_dev=(1.0, 1.0, 1.0, 1.0), ignore_crossing=False)


# ---------------------------------------------------------------------------------------------- targets
def test_rpn_labels_by_hand():
    gt = boxes((0, 0, 20, 20), (50, 50, 70, 70))
    anchors = boxes(
        (0, 0, 20, 40),        # gt0: 400 / 800 = 0.5, gt0's best anchor -> positive although < 0.7
        (10, 0, 30, 20),       # gt0: 200 / 600 = 0.333 -> between 0.3 and 0.7: ignored
        (100, 100, 120, 120),  # no overlap -> negative
        (15, 0, 35, 20),       # gt0: 100 / 700 = 0.143 -> negative
        (50, 50, 70, 72),      # gt1: 400 / 440 = 0.909 -> positive (gt1's best)
        (50, 50, 70, 78),      # gt1: 400 / 560 = 0.714 -> positive
    )
    targets = rpn_targets(anchors, [gt], [WINDOW], **RPN)
    assert targets.labels.shape == (1, 6) and targets.deltas.shape == (1, 6, 4)
    assert targets.labels[0].tolist() == [P, I, N, N, P, P]
    # Anchor 0 (centre 10, 20; 20 x 40) onto gt0 (centre 10, 10; 20 x 20): dx 0, dy -10/40, dw log 1, dh log 1/2.
    expected = torch.tensor([0.0, -0.25, 0.0, math.log(0.5)])
    torch.testing.assert_close(targets.deltas[0, 0], expected)
    # Anchor 5 (centre 60, 64; 20 x 28) onto gt1 (centre 60, 60; 20 x 20).
    torch.testing.assert_close(targets.deltas[0, 5], torch.tensor([0.0, -4 / 28, 0.0, math.log(20 / 28)]))
    # Non-positive anchors carry zero deltas.
    assert torch.count_nonzero(targets.deltas[0, [1, 2, 3]]) == 0


def test_rpn_deltas_of_positives_decode_onto_their_ground_truth():
    gt = boxes((10, 12, 50, 40), (60, 70, 140, 150))
    anchors = boxes((8, 10, 48, 44), (12, 14, 52, 38), (62, 68, 138, 146), (56, 72, 150, 160), (0, 150, 30, 190))
    std = (0.1, 0.1, 0.2, 0.2)
    targets = rpn_targets(anchors, [gt], [WINDOW], **dict(RPN, std_dev=std))
    positive = targets.labels[0] == P
    assert positive.tolist() == [True, True, True, True, False]
    decoded = decode_deltas(targets.deltas[0, positive], anchors[positive], std)
    torch.testing.assert_close(decoded, gt[[0, 0, 1, 1]], atol=1e-4, rtol=0)


def test_rpn_many_positives_keep_exactly_half_of_the_sample():
    gt = boxes((40, 40, 80, 80))
    near = gt.repeat(300, 1)  # 300 anchors with IoU 1
    far = boxes((150, 150, 190, 190)).repeat(500, 1)  # 500 anchors with IoU 0
    targets = rpn_targets(torch.cat((near, far)), [gt], [WINDOW], **RPN)
    labels = targets.labels[0]
    assert (labels == P).sum().item() == int(256 * 0.5) == 128
    assert (labels == N).sum().item() == 128
    assert bool((labels[:300] != N).all()) and bool((labels[300:] != P).all())


def test_rpn_positive_share_never_exceeds_the_fraction():
    gt = boxes((40, 40, 80, 80))
    anchors = torch.cat((gt.repeat(50, 1), boxes((150, 150, 190, 190)).repeat(20, 1)))
    for size, fraction in [(32, 0.25), (64, 0.5), (16, 1.0), (256, 0.5)]:
        labels = rpn_targets(anchors, [gt], [WINDOW], **dict(RPN, anchors_per_image=size, positive_fraction=fraction)).labels[0]
        kept_positive = (labels == P).sum().item()
        kept = (labels != I).sum().item()
        assert kept_positive == min(50, int(size * fraction))
        assert kept == min(size, kept_positive + 20)


def test_rpn_image_without_objects_gives_only_negatives():
    anchors = torch.cat((boxes((40, 40, 80, 80)).repeat(200, 1), boxes((0, 0, 10, 10)).repeat(200, 1)))
    gt = [boxes((40, 40, 80, 80)), torch.zeros((0, 4))]  # a batch of two images: the second has no objects
    targets = rpn_targets(anchors, gt, [WINDOW, WINDOW], **RPN)
    empty = targets.labels[1]
    assert (empty == P).sum().item() == 0
    assert (empty == N).sum().item() == 256  # a full sample of negatives
    assert torch.count_nonzero(targets.deltas[1]) == 0
    assert (targets.labels[0] == P).sum().item() == 128


def test_rpn_anchors_crossing_the_image_edge_are_ignored_when_asked():
    gt = boxes((0, 0, 20, 20))
    anchors = boxes((-4, 0, 16, 20), (100, 100, 120, 120), (90, 190, 110, 210))
    window = (0.0, 0.0, 200.0, 200.0)
    kept = rpn_targets(anchors, [gt], [window], **RPN).labels[0]
    assert kept.tolist() == [P, N, N]
    ignored = rpn_targets(anchors, [gt], [window], **dict(RPN, ignore_crossing=True)).labels[0]
    assert ignored.tolist() == [I, N, I]


# ---------------------------------------------------------------------------------------------- losses
def test_rpn_class_loss_sigmoid_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0, 5.0]])
    labels = torch.tensor([[P, N, I, P]])
    # -log sigmoid(0), -log(1 - sigmoid(2)), -log sigmoid(5); the ignored anchor does not count.
    expected = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-5))) / 3
    assert rpn_class_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_rpn_class_loss_softmax_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [1.0, 3.0], [2.0, 0.0], [4.0, -4.0]]])  # (N, L, 2): background, object
    labels = torch.tensor([[P, N, I, N]])
    expected = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-8))) / 3
    assert rpn_class_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_rpn_class_loss_with_nothing_sampled_is_zero():
    logits = torch.tensor([[1.0, 2.0]], requires_grad=True)
    loss = rpn_class_loss(logits, torch.tensor([[I, I]]))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.count_nonzero(logits.grad) == 0


def test_rpn_bbox_loss_by_hand():
    labels = torch.tensor([[P, N, I, P]])
    targets = RPNTargets(labels, torch.tensor([[[0.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0.5, 0, 0, 0]]]))
    deltas = torch.tensor([[[0.05, 0, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9], [-0.5, 0, 0, 0.02]]])
    # Positives only (anchors 0 and 3), summed, divided by the 3 sampled anchors.
    expected = (smooth_l1(0.05) + smooth_l1(-1.0) + smooth_l1(0.02)) / 3
    assert rpn_bbox_loss(deltas, targets).item() == pytest.approx(expected, rel=1e-6)


def test_rpn_bbox_loss_without_positives_is_exactly_zero():
    targets = RPNTargets(torch.tensor([[N, N, I]]), torch.zeros((1, 3, 4)))
    assert rpn_bbox_loss(torch.full((1, 3, 4), 3.0), targets).item() == 0.0
