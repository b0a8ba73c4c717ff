"""Training equal to torchvision's: the five losses and every gradient of one training step, in float64.

The independent reference is torchvision's own `maskrcnn_resnet50_fpn` (v1) and `maskrcnn_resnet50_fpn_v2` in
train mode, with random batch-norm statistics and its batch norms in eval mode (frozen, as ours). Keeping every
anchor and every ROI (sample sizes above the counts, positive fraction 1.0) takes random sampling out, so the
two steps are deterministic; the same two images and targets (ellipse masks, 2-5 instances each) go to both.
Loss names: torchvision's loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg, loss_mask are ours
rpn_class, rpn_bbox, mrcnn_class, mrcnn_bbox, mrcnn_mask.
"""
from __future__ import annotations

import pytest
import torch
import torchvision

from maskrcnn.interop import from_torchvision
from maskrcnn.interop.torchvision import V1_RULES, _rename
from maskrcnn.interop.torchvision_v2 import V2_RULES

LOSS_NAMES = {"loss_objectness": "rpn_class", "loss_rpn_box_reg": "rpn_bbox", "loss_classifier": "mrcnn_class",
              "loss_box_reg": "mrcnn_bbox", "loss_mask": "mrcnn_mask"}
NO_SAMPLING = dict(rpn_batch_size_per_image=10**7, rpn_positive_fraction=1.0, box_batch_size_per_image=10**7,
                   box_positive_fraction=1.0, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300)
SIZES = [(150, 200), (181, 139)]  # a landscape and an odd-sided portrait image


def ellipse_targets(height: int, width: int, count: int, generator: torch.Generator) -> dict:
    """`count` filled ellipses at random places and sizes; boxes are the masks' extents (x2, y2 one past)."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    masks = []
    for _ in range(count):
        cy, cx = (torch.rand(2, generator=generator, dtype=torch.float64) * torch.tensor([height, width]) * 0.6
                  + torch.tensor([height, width]) * 0.2)
        ry, rx = torch.rand(2, generator=generator, dtype=torch.float64) * torch.tensor([height, width]) * 0.2 + 6
        masks.append(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1)
    masks = torch.stack(masks)
    boxes = []
    for m in masks:
        rows, cols = torch.where(m)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    labels = torch.randint(1, 5, (count,), generator=generator)
    return {"boxes": torch.tensor(boxes, dtype=torch.float64), "labels": labels, "masks": masks.to(torch.uint8)}


def reference_model(version: str) -> torch.nn.Module:
    torch.manual_seed(5)
    build = {"v1": torchvision.models.detection.maskrcnn_resnet50_fpn,
             "v2": torchvision.models.detection.maskrcnn_resnet50_fpn_v2}[version]
    model = build(weights=None, weights_backbone=None, num_classes=5, min_size=160, max_size=224, **NO_SAMPLING)
    generator = torch.Generator().manual_seed(6)
    for module in model.modules():  # random statistics, so that frozen batch norm is not the identity
        if isinstance(module, (torch.nn.BatchNorm2d, torchvision.ops.misc.FrozenBatchNorm2d)):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    for module in model.backbone.body.modules():  # the trunk's batch norm frozen whole, as ours (train_bn=False)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.requires_grad_(False)
    return model.double()


def frozen_train_mode(model: torch.nn.Module) -> torch.nn.Module:
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_one_training_step_equals_torchvision(version):
    reference = reference_model(version)
    ours = from_torchvision(reference).double()
    assert ours.config.rpn_train_anchors_per_image == 10**7 and ours.config.post_nms_rois_training == 300
    generator = torch.Generator().manual_seed(7)
    images = [torch.rand(3, h, w, generator=generator, dtype=torch.float64) for h, w in SIZES]
    targets = [ellipse_targets(h, w, count, generator) for (h, w), count in zip(SIZES, (2, 5))]

    expected = frozen_train_mode(reference)([i.clone() for i in images], [{k: v.clone() for k, v in t.items()} for t in targets])
    sum(expected.values()).backward()
    got = frozen_train_mode(ours)(images, targets)
    sum(got.values()).backward()

    for name, ours_name in LOSS_NAMES.items():
        assert got[ours_name].item() == pytest.approx(expected[name].item(), rel=1e-6), ours_name
    assert all(v.item() > 0 for v in got.values())  # every loss takes part in the comparison

    reference_gradients = {}
    for name, parameter in reference.named_parameters():
        if parameter.grad is not None:
            reference_gradients[name] = parameter.grad
    ours_by_name = dict(ours.named_parameters())
    rules = {"v1": V1_RULES, "v2": V2_RULES}[version]  # torchvision name -> ours
    compared = 0
    for name, gradient in reference_gradients.items():
        mine = ours_by_name[_rename(name, rules)].grad
        scale = gradient.abs().max().item()
        assert (mine - gradient).abs().max().item() <= 1e-5 * scale + 1e-12, name
        compared += 1
    assert compared == sum(p.requires_grad for p in ours.parameters())  # every trainable tensor of ours compared


@pytest.mark.parametrize("positives, negatives, size, fraction", [
    (10, 1000, 256, 0.5),  # few positives: negatives fill the sample (RPN, 256 anchors)
    (400, 1000, 256, 0.5),  # too many positives: half of the sample
    (30, 20, 512, 0.25),  # fewer candidates than the sample (ROI heads, 512)
    (0, 700, 512, 0.25),
    (300, 0, 512, 0.25),
])
def test_sampling_keeps_the_counts_of_torchvisions_balanced_sampler(positives, negatives, size, fraction):
    """torchvision's BalancedPositiveNegativeSampler: at most int(size * fraction) positives, negatives fill the
    rest; which ones is random in both, the counts are not."""
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    from maskrcnn.matching import sample_labels
    from maskrcnn.structures import IGNORE, NEGATIVE, POSITIVE

    labels = torch.cat((torch.full((positives,), POSITIVE), torch.full((negatives,), NEGATIVE), torch.full((50,), IGNORE)))
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    [pos_mask], [neg_mask] = BalancedPositiveNegativeSampler(size, fraction)([labels.clone()])
    ours = sample_labels(labels, size, fraction, generator=torch.Generator().manual_seed(2))
    assert int((ours == POSITIVE).sum()) == int(pos_mask.sum())
    assert int((ours == NEGATIVE).sum()) == int(neg_mask.sum())
    assert bool((labels[ours == POSITIVE] == POSITIVE).all()) and bool((labels[ours == NEGATIVE] == NEGATIVE).all())
