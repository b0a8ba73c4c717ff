"""Training as matterport's code trains (`Config.training_convention = "matterport"`): each piece by hand from
its functions (`build_rpn_targets`, `detection_targets_graph`, the `*_loss_graph`s), then the five losses of
matterport's own float64 training graph on the case's weights (../shared/matterport/train_case_r50_512)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskrcnn import Config, MaskRCNN
from maskrcnn.box_head import (detection_targets_zero_padded, mrcnn_bbox_loss_per_positive, mrcnn_class_loss,
                               padded_sample_sizes)
from maskrcnn.errors import ConfigError
from maskrcnn.mask_head import mrcnn_mask_loss_clipped
from maskrcnn.rpn import RPNTargets, rpn_bbox_loss_per_positive, rpn_targets
from maskrcnn.structures import IGNORE, NEGATIVE, POSITIVE
from maskrcnn.training_convention import MatterportTraining, TorchvisionTraining

SHARED = Path(__file__).resolve().parents[2] / "shared" / "matterport"
CASES = SHARED / "train_case_r50_512"
P, N, I = POSITIVE, NEGATIVE, IGNORE
ROIS = dict(positive_iou=0.5, negative_iou=0.5, std_dev=(0.1, 0.1, 0.2, 0.2))
RPN = dict(positive_iou=0.7, negative_iou=0.3, anchors_per_image=256, positive_fraction=0.5, std_dev=(1, 1, 1, 1),
           ignore_crossing=False)


def smooth_l1(d: float) -> float:
    """matterport's `smooth_l1_loss`: 0.5 d^2 if |d| < 1 else |d| - 0.5."""
    d = abs(d)
    return 0.5 * d * d if d < 1 else d - 0.5


# ------------------------------------------------------------------------------------------ detection targets
def test_sample_sizes_keep_positives_over_ratio_and_no_fill_up():
    # int(200 * 0.33) = 66 positives at most; negatives int(float32(1 / 0.33) * P) - P
    assert padded_sample_sizes(100, 1000, 200, 0.33) == (66, 134)
    assert padded_sample_sizes(10, 1000, 200, 0.33) == (10, 20)  # 10 * 3.030303 = 30.3 -> 30 - 10
    assert padded_sample_sizes(0, 1000, 200, 0.33) == (0, 0)  # no positive: no negative either, all padding
    assert padded_sample_sizes(10, 5, 200, 0.33) == (10, 5)
    assert padded_sample_sizes(14, 0, 2000, 1.0) == (14, 0)  # the reference cases' settings


def test_zero_padded_sample_adds_no_ground_truth_and_pads_with_zero_rois():
    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 80.0, 80.0]], dtype=torch.float64)
    proposals = torch.tensor([
        [11.0, 10.0, 30.0, 30.0],  # IoU 0.95 with gt0: positive
        [40.0, 40.0, 50.0, 50.0],  # IoU 0: negative
        [0.0, 0.0, 5.0, 5.0],  # negative
        [90.0, 0.0, 99.0, 9.0],  # negative
        [200.0, 200.0, 210.0, 210.0],  # negative
    ], dtype=torch.float64)  # gt1 has no proposal: it gets no ROI (torchvision would add its box)
    out = detection_targets_zero_padded([proposals], [gt], [torch.tensor([3, 5])], rois_per_image=10,
                                        positive_ratio=0.33, generator=torch.Generator().manual_seed(0), **ROIS)
    rois = out.rois[0]
    assert out.num_positive == [1] and rois.shape == (10, 4)
    assert torch.equal(rois[0], proposals[0]) and out.labels.tolist() == [3] + [0] * 9
    # 1 positive -> int(3.030303 * 1) - 1 = 2 negatives, then 7 zero rows
    negatives = rois[1:3]
    assert all(any(torch.equal(r, p) for p in proposals[1:]) for r in negatives)
    assert torch.equal(rois[3:], torch.zeros((7, 4), dtype=torch.float64))
    assert out.matched_gt[0].tolist() == [0]
    assert torch.equal(out.deltas[1:], torch.zeros((9, 4), dtype=torch.float64))


def test_zero_padded_sample_keeps_rois_near_a_crowd_out_of_the_negatives():
    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0]], dtype=torch.float64)
    crowd = torch.tensor([[100.0, 100.0, 200.0, 200.0]], dtype=torch.float64)
    proposals = torch.tensor([[10.0, 10.0, 30.0, 31.0], [190.0, 190.0, 300.0, 300.0], [300.0, 300.0, 310.0, 310.0]],
                             dtype=torch.float64)  # row 1 touches the crowd (IoU 0.0048 >= 0.001), row 2 does not
    out = detection_targets_zero_padded([proposals], [gt], [torch.tensor([1])], [crowd], rois_per_image=4,
                                        positive_ratio=0.25, **ROIS)
    # 1 positive -> int(4.0 * 1) - 1 = 3 negatives wanted, only row 2 is one
    assert torch.equal(out.rois[0][:2], proposals[[0, 2]]) and torch.equal(out.rois[0][2:], torch.zeros((2, 4), dtype=torch.float64))
    without_crowd = detection_targets_zero_padded([proposals], [gt], [torch.tensor([1])], rois_per_image=4,
                                                  positive_ratio=0.25, generator=torch.Generator().manual_seed(0), **ROIS)
    assert sorted(r[0].item() for r in without_crowd.rois[0][1:3]) == [190.0, 300.0]


# ------------------------------------------------------------------------------------------ RPN targets
def test_rpn_anchors_near_a_crowd_are_never_negative():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    crowd = torch.tensor([[50.0, 50.0, 100.0, 100.0]])
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # the ground truth's best: positive
        [60.0, 60.0, 70.0, 70.0],  # inside the crowd: IoU 0.04 with it, 0 with the ground truth
        [99.0, 99.0, 120.0, 120.0],  # touches the crowd: IoU 1 / 2940 = 0.00034 < 0.001, so negative
        [200.0, 200.0, 210.0, 210.0],  # far from both: negative
    ])
    plain = rpn_targets(anchors, [gt], [(0, 0, 300, 300)], **RPN).labels[0]
    assert plain.tolist() == [P, N, N, N]  # torchvision: crowds are dropped
    crowded = rpn_targets(anchors, [gt], [(0, 0, 300, 300)], crowd_boxes=[crowd], crowd_iou=0.001, **RPN).labels[0]
    assert crowded.tolist() == [P, I, N, N]


def test_rpn_order_best_anchor_positive_even_below_negative_threshold_and_regressed_to_its_own_best():
    """`build_rpn_targets`: negatives below 0.3 first, then every anchor tying a ground truth's best IoU positive,
    then >= 0.7 positive; each positive regresses onto its own best-IoU ground truth (`anchor_iou_argmax`)."""
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 30.0], [100.0, 100.0, 110.0, 110.0]])
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 9.0],  # IoU 0.9 with gt0: positive
        [0.0, 0.0, 10.0, 16.0],  # gt1's best (0.533), but its own best is gt0 (0.625): positive, onto gt0
        [100.0, 100.0, 130.0, 130.0],  # IoU 0.111 < 0.3, but gt2's best: positive
        [20.0, 0.0, 30.0, 10.0],  # IoU 0: negative
    ])
    goal = rpn_targets(anchors, [gt], [(0, 0, 200, 200)], **RPN)
    assert goal.labels[0].tolist() == [P, P, P, N]
    # anchor 1 (centre 5, 8; 10 x 16) onto gt0 (centre 5, 5; 10 x 10), not onto gt1 (centre 5, 15; 10 x 30)
    assert goal.deltas[0, 1].tolist() == pytest.approx([0.0, -3 / 16, 0.0, math.log(10 / 16)])


# ------------------------------------------------------------------------------------------ losses
def test_class_loss_counts_padding_rows_and_drops_inactive_predictions():
    logits = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 0])  # one positive, then three rows (zero padding: class 0)
    ce = [math.log(1 + 2 * math.exp(-2)), math.log(1 + 2 * math.exp(-1)), math.log(1 + 2 * math.exp(-1)),
          3 - 0 + math.log(2 + math.exp(3)) - 3]
    assert mrcnn_class_loss(logits, labels).item() == pytest.approx(sum(ce) / 4, rel=1e-12)
    # `mrcnn_class_loss_graph`: class 2 inactive -> row 3 (argmax 2) drops out of sum and count
    active = torch.tensor([True, True, False])
    assert mrcnn_class_loss(logits, labels, active).item() == pytest.approx(sum(ce[:3]) / 3, rel=1e-12)


def test_box_losses_are_smooth_l1_beta_1_over_four_times_the_positives():
    deltas = torch.full((3, 3, 4), 9.0)
    deltas[0, 2] = torch.tensor([0.5, 0.0, 2.0, 0.0])
    deltas[2, 1] = torch.tensor([0.0, -0.2, 0.0, 0.0])
    labels = torch.tensor([2, 0, 1])
    targets = torch.tensor([[0.0, 0, 0, 0], [5, 5, 5, 5], [0, 0, 0, 0.3]])
    expected = (smooth_l1(0.5) + smooth_l1(2.0) + smooth_l1(-0.2) + smooth_l1(-0.3)) / (4 * 2)
    assert mrcnn_bbox_loss_per_positive(deltas, labels, targets).item() == pytest.approx(expected, rel=1e-6)
    assert mrcnn_bbox_loss_per_positive(deltas, torch.tensor([0, 0, 0]), targets).item() == 0.0

    rpn_deltas = torch.tensor([[[1.5, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0], [0.0, 0.0, 0.0, -0.4]]])
    goal = RPNTargets(torch.tensor([[P, N, P]]), torch.zeros((1, 3, 4)))
    expected = (smooth_l1(1.5) + smooth_l1(-0.4)) / (4 * 2)  # not / the 3 sampled anchors
    assert rpn_bbox_loss_per_positive(rpn_deltas, goal).item() == pytest.approx(expected, rel=1e-6)


def test_mask_loss_clips_the_probability_like_keras():
    logits = torch.zeros((1, 2, 1, 2), dtype=torch.float64)
    logits[0, 1] = torch.tensor([[40.0, 0.0]])  # sigmoid(40) rounds to 1 - 4e-18: clipped to 1 - 1e-7
    targets = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    expected = (-math.log(1e-7) + math.log(2)) / 2  # BCE with logits would give 40 for the first pixel
    assert mrcnn_mask_loss_clipped(logits, torch.tensor([1]), targets).item() == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------------------ config
def small(preset, **changes) -> Config:
    return preset(num_classes=3, backbone="resnet50", image_min_dim=64, image_max_dim=64, **changes)


def test_each_preset_chooses_its_references_convention_once():
    assert type(MaskRCNN(small(Config.matterport)).training_convention) is MatterportTraining
    assert type(MaskRCNN(small(Config.torchvision)).training_convention) is TorchvisionTraining
    assert Config.matterport().training_convention == "matterport" and Config.torchvision_v2().training_convention == "torchvision"
    with pytest.raises(ConfigError, match="'training_convention'"):
        Config(training_convention="detectron2")
    with pytest.raises(ConfigError, match="'use_mini_mask'.*layout: matterport"):
        Config.torchvision(use_mini_mask=True)


def test_masks_neither_image_nor_mini_mask_sized_are_refused():
    model = MaskRCNN(small(Config.matterport, fpn_channels=16, rpn_conv_channels=16, box_head_channels=16, mask_head_channels=8))
    image = torch.rand(3, 64, 64)
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1]), "masks": torch.ones((1, 28, 28), dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"masks are \(28, 28\).*mini-masks \(56, 56\)"):
        model([image], [target])
    plain = MaskRCNN(small(Config.matterport, use_mini_mask=False, fpn_channels=16, rpn_conv_channels=16, box_head_channels=16, mask_head_channels=8))
    with pytest.raises(ValueError, match=r"masks are \(56, 56\) but the image is \(64, 64\)$"):
        plain([image], [dict(target, masks=torch.ones((1, 56, 56), dtype=torch.bool))])


# ------------------------------------------------------------------------------------------ the reference losses
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The case's weights, rebuilt from its seed by matterport's make_h5.py (about 2 s, 180 MB)."""
    out = tmp_path_factory.mktemp("matterport") / "case_r50_s11.h5"
    subprocess.run([sys.executable, str(SHARED / "make_h5.py"), "--backbone", "resnet50", "--seed", "11",
                    "--heads", str(SHARED / "case_r50_512_s11" / "heads.npz"), "--out", str(out)], check=True)
    return out


def reference_losses(weights: Path, case: str, use_mini_mask: bool) -> tuple[dict, dict]:
    """(our five losses, matterport's) for one case: float64, train mode, batch norm as TRAIN_BN = False."""
    from maskrcnn.interop import from_matterport

    config = Config.matterport(num_classes=81, backbone="resnet50", image_min_dim=512, image_max_dim=512,
                               rpn_train_anchors_per_image=130944, roi_positive_ratio=1.0, train_rois_per_image=2000,
                               post_nms_rois_training=2000, use_mini_mask=use_mini_mask)
    model = from_matterport(weights, config=config).double().train()  # frozen trunk, heads on running statistics
    data = np.load(CASES / f"{case}.npz")
    image = torch.from_numpy(data["image"]).permute(2, 0, 1).double() / 255.0
    boxes = data["gt_boxes"].astype(np.float64)[:, [1, 0, 3, 2]]  # y1 x1 y2 x2 -> x1 y1 x2 y2, one past
    target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(data["gt_class_ids"].astype(np.int64)),
              "masks": torch.from_numpy(np.ascontiguousarray(data["gt_masks"].transpose(2, 0, 1)))}
    with torch.no_grad():
        ours = {name: value.item() for name, value in model([image], [target]).items()}
    entry = json.loads((CASES / "losses.json").read_text())[case + ("_mini_mask" if use_mini_mask else "")]
    return ours, {name: entry["losses"][f"{name}_loss"] for name in ours}


CASE_PARAMS = [pytest.param("case_s2", False, id="s2"), pytest.param("case_s11", False, id="s11"),
               pytest.param("case_s11", True, id="s11_mini_mask", marks=pytest.mark.slow)]


@pytest.mark.skipif(not (CASES / "losses.json").exists(), reason="matterport training reference not found")
@pytest.mark.parametrize("case, use_mini_mask", CASE_PARAMS)
def test_five_losses_equal_matterports_training_graph(weights, case, use_mini_mask):
    """14 (s2) and 3 (s11) positive ROIs, the rest of 2000 zero padding; every anchor labelled (~25 s each)."""
    ours, theirs = reference_losses(weights, case, use_mini_mask)
    for name, expected in theirs.items():
        assert ours[name] == pytest.approx(expected, rel=1e-6), name
