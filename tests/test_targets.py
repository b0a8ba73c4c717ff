"""RPN anchor targets, detection targets and mask targets on hand-made boxes and masks."""
import math

import torch

from maskrcnn.box_head import detection_targets
from maskrcnn.boxes import decode_deltas
from maskrcnn.data import minimize_masks
from maskrcnn.mask_head import mask_targets, sample_mask_rois
from maskrcnn.rpn import rpn_targets
from maskrcnn.structures import IGNORE, NEGATIVE, POSITIVE

P, N, I = POSITIVE, NEGATIVE, IGNORE
WINDOW = (0.0, 0.0, 200.0, 200.0)  # y1 x1 y2 x2 of the real image inside the padded batch
RPN = dict(positive_iou=0.7, negative_iou=0.3, anchors_per_image=256, positive_fraction=0.5,
           std_dev=(1.0, 1.0, 1.0, 1.0), ignore_crossing=False)
HEADS_STD = (0.1, 0.1, 0.2, 0.2)
HEADS = dict(rois_per_image=64, positive_ratio=0.33, positive_iou=0.5, negative_iou=0.5, std_dev=HEADS_STD)


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------- RPN
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


# ---------------------------------------------------------------------------------------------- detection targets
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


# ---------------------------------------------------------------------------------------------- mask targets
def _rectangle_mask(height=64, width=64, x1=16, y1=16, x2=32, y2=48) -> torch.Tensor:
    mask = torch.zeros((1, height, width), dtype=torch.bool)
    mask[0, y1:y2, x1:x2] = True
    return mask


def test_mask_target_inside_the_rectangle_is_all_ones():
    target = mask_targets(_rectangle_mask(), boxes((18, 18, 30, 46)), torch.tensor([0]), 28)
    assert target.shape == (1, 28, 28) and target.dtype == torch.float32
    assert bool((target == 1).all())


def test_mask_target_with_the_rectangle_in_the_left_half_by_hand():
    # ROI (16, 16, 48, 48), rectangle columns 16..31 and rows 16..47: bins are 8/7 px, two samples per bin side
    # (torchvision's adaptive ceil(32 / 28)), at 16 + (j + 0.25) * 8/7 and 16 + (j + 0.75) * 8/7, bilinear
    # between pixel centres. Column 13 samples x = 31.14 and 31.71: (6/7 + 2/7) / 2 = 4/7 of the object;
    # columns 14.. sample x >= 32.3: none. Row 27 likewise samples y = 47.14 and 47.71: 4/7.
    target = mask_targets(_rectangle_mask(), boxes((16, 16, 48, 48)), torch.tensor([0]), 28).double()[0]
    expected = torch.zeros((28, 28), dtype=torch.float64)
    expected[:, :13] = 1
    expected[:, 13] = 4 / 7
    expected[27] *= 4 / 7
    torch.testing.assert_close(target, expected, rtol=0, atol=1e-5)  # float32 sample positions


def test_mask_target_outside_the_object_is_empty_and_uses_the_matched_mask():
    masks = torch.cat((_rectangle_mask(), _rectangle_mask(x1=40, y1=0, x2=64, y2=12)))
    rois = boxes((41, 1, 62, 10), (41, 1, 62, 10), (0, 50, 10, 60))
    target = mask_targets(masks, rois, torch.tensor([1, 0, 0]), 28)
    assert bool((target[0] == 1).all())  # ROI inside object 1's rectangle, matched to object 1
    assert bool((target[1] == 0).all())  # the same ROI matched to object 0 sees none of it
    assert bool((target[2] == 0).all())


def test_mask_target_without_rois_is_empty():
    target = mask_targets(_rectangle_mask(), torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64), 28)
    assert target.shape == (0, 28, 28)


def test_mask_targets_equal_torchvisions_project_masks_on_boxes():
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    generator = torch.Generator().manual_seed(3)
    masks = torch.rand(4, 50, 70, generator=generator) > 0.4  # (G, H, W)
    corner = torch.rand(12, 2, generator=generator) * torch.tensor([50.0, 30.0])
    rois = torch.cat((corner, corner + 2 + torch.rand(12, 2, generator=generator) * 25), dim=1).double()  # (P, 4)
    matched = torch.randint(0, 4, (12,), generator=generator)
    expected = project_masks_on_boxes(masks.to(torch.uint8), rois, matched, 28)
    assert torch.equal(mask_targets(masks, rois, matched, 28), expected)
    assert 0 < expected.mean() < 1


def test_mask_roi_sample_is_all_positives_unless_limited():
    assert sample_mask_rois(5, 0).tolist() == [0, 1, 2, 3, 4]  # 0: every positive (the seed, torchvision)
    assert sample_mask_rois(3, 8).tolist() == [0, 1, 2]
    torch.manual_seed(0)
    picks = [sample_mask_rois(20, 6).tolist() for _ in range(30)]
    for pick in picks:
        assert len(pick) == 6 and len(set(pick)) == 6 and pick == sorted(pick) and 0 <= pick[0] and pick[-1] < 20
    assert len({tuple(p) for p in picks}) > 1  # random, not the first six (the proposals come before the truths)


def test_mask_head_trains_on_at_most_the_limit_per_image():
    import maskrcnn
    from maskrcnn.data import ShapesDataset, make_loader

    torch.manual_seed(0)
    images, targets = next(iter(make_loader(ShapesDataset(2, 64, 64, seed=3), 2, shuffle=False, seed=0)))
    rows = []
    for limit in (0, 1):
        model = maskrcnn.MaskRCNN(maskrcnn.Config.demo(image_min_dim=64, image_max_dim=64, mask_rois_per_image=limit))
        hook = model.mask_head.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0])))
        losses = model(images, targets)
        hook.remove()
        assert torch.isfinite(losses["mrcnn_mask"]) and losses["mrcnn_mask"] > 0
    # Each image has at least its ground-truth boxes as positives; with limit 1 each image gives exactly one.
    assert rows[0] >= sum(len(t["boxes"]) for t in targets) and rows[1] == 2
