"""Mask head (mask_head.py): mask targets on hand-made masks and against torchvision's project_masks_on_boxes,
the sample of mask ROIs, the mask loss (mrcnn_mask) by hand, and the channels-last head against the contiguous
one (float64)."""
import math

import pytest
import torch
import torch.nn.functional as F
from numeric_helpers import assert_close, boxes
from torchvision.ops import roi_align

from maskrcnn.mask_head import MaskHead, mask_targets, mrcnn_mask_loss, sample_mask_rois


# ---------------------------------------------------------------------------------------------- targets
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


def test_mask_targets_index_the_truths_instead_of_copying_them():
    # Reference: the plain way, one full-image mask copied per ROI and pooled with its own row index.
    from maskrcnn.mask_head import mask_targets

    generator = torch.Generator().manual_seed(6)
    gt_masks = torch.rand(3, 40, 50, generator=generator) > 0.5  # (G, H, W)
    corner = torch.rand(9, 2, generator=generator) * 30
    rois = torch.cat((corner, corner + 3 + torch.rand(9, 2, generator=generator) * 20), dim=1)  # (P, 4)
    matched = torch.tensor([2, 0, 1, 1, 2, 0, 0, 2, 1])
    copies = gt_masks[matched][:, None].float()  # (P, 1, H, W)
    rows = torch.cat((torch.arange(9, dtype=torch.float32)[:, None], rois), dim=1)
    expected = roi_align(copies, rows, 28, spatial_scale=1.0)[:, 0]
    assert torch.equal(mask_targets(gt_masks, rois, matched, 28), expected)
    assert 0 < expected.mean() < 1


def test_mask_roi_sample_is_all_positives_unless_limited():
    assert sample_mask_rois(5, 0).tolist() == [0, 1, 2, 3, 4]  # 0: every positive (the seed, torchvision)
    assert sample_mask_rois(3, 8).tolist() == [0, 1, 2]
    torch.manual_seed(0)
    picks = [sample_mask_rois(20, 6).tolist() for _ in range(30)]
    for pick in picks:
        assert len(pick) == 6 and len(set(pick)) == 6 and pick == sorted(pick) and 0 <= pick[0] and pick[-1] < 20
    assert len({tuple(p) for p in picks}) > 1  # random, not the first six (the proposals come before the truths)


# ---------------------------------------------------------------------------------------------- loss
def test_mrcnn_mask_loss_true_class_only():
    logits = torch.full((2, 3, 2, 2), 9.0)
    logits[0, 1] = torch.tensor([[0.0, 0.0], [2.0, -2.0]])
    logits[1, 2] = 0.0
    labels = torch.tensor([1, 2])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    per_pixel = [math.log(2), math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(-2))] + [math.log(2)] * 4
    assert mrcnn_mask_loss(logits, labels, targets).item() == pytest.approx(sum(per_pixel) / 8, rel=1e-6)
    empty = mrcnn_mask_loss(torch.zeros((0, 3, 2, 2)), torch.zeros((0,), dtype=torch.int64), torch.zeros((0, 2, 2)))
    assert empty.item() == 0.0


# ---------------------------------------------------------------------------------------------- the head
def test_channels_last_mask_head_equals_contiguous():
    torch.manual_seed(0)
    head = MaskHead(in_channels=16, channels=16, num_classes=5, norm="none", bn_statistics="batch", eps=1e-5).double().eval()
    pooled = torch.rand(7, 16, 14, 14, dtype=torch.float64)
    with torch.no_grad():
        got = head(pooled)
        expected = head.mask_logits(F.relu(head.upsample(head.convs(pooled))))
    assert got.shape == (7, 5, 28, 28)
    assert_close(got, expected)
