"""The five losses: hand-computed values on tiny logits, images without objects, loss weights."""
import math

import pytest
import torch

import maskrcnn
from maskrcnn.box_head import mrcnn_bbox_loss, mrcnn_class_loss
from maskrcnn.mask_head import mrcnn_mask_loss
from maskrcnn.rpn import RPNTargets, rpn_bbox_loss, rpn_class_loss
from maskrcnn.structures import IGNORE, NEGATIVE, POSITIVE

P, N, I = POSITIVE, NEGATIVE, IGNORE


def smooth_l1(x: float, beta: float = 1 / 9) -> float:
    x = abs(x)
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


# ---------------------------------------------------------------------------------------------- by hand
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


# ---------------------------------------------------------------------------------------------- the model
def _tiny_config(**overrides) -> maskrcnn.Config:
    return maskrcnn.Config.demo(image_min_dim=64, image_max_dim=64, **overrides)


def _blank_images():
    torch.manual_seed(3)
    return [torch.rand(3, 64, 64), torch.rand(3, 64, 96)]


def _no_objects(images):
    return [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64),
             "masks": torch.zeros((0,) + tuple(image.shape[-2:]), dtype=torch.bool)} for image in images]


def _one_object_each(images):
    targets = []
    for image in images:
        masks = torch.zeros((1,) + tuple(image.shape[-2:]), dtype=torch.bool)
        masks[0, 10:40, 20:50] = True
        targets.append({"boxes": torch.tensor([[20.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([2]), "masks": masks})
    return targets


def test_images_without_objects_have_zero_box_and_mask_losses():
    torch.manual_seed(0)
    model = maskrcnn.MaskRCNN(_tiny_config())
    images = _blank_images()
    losses = model(images, _no_objects(images))
    assert set(losses) == {"rpn_class", "rpn_bbox", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask"}
    assert all(math.isfinite(value.item()) for value in losses.values())
    assert losses["rpn_bbox"].item() == 0.0
    assert losses["mrcnn_bbox"].item() == 0.0
    assert losses["mrcnn_mask"].item() == 0.0
    assert losses["rpn_class"].item() > 0 and losses["mrcnn_class"].item() > 0  # background is still learned
    sum(losses.values()).backward()  # the zero losses stay differentiable
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_loss_weights_scale_each_loss():
    weights = {"rpn_class": 2.0, "rpn_bbox": 0.5, "mrcnn_class": 3.0, "mrcnn_bbox": 0.0, "mrcnn_mask": 1.5}
    torch.manual_seed(0)
    plain = maskrcnn.MaskRCNN(_tiny_config())
    weighted = maskrcnn.MaskRCNN(_tiny_config(loss_weights=weights))
    weighted.load_state_dict(plain.state_dict())
    images = _blank_images()
    targets = _one_object_each(images)
    torch.manual_seed(1)  # the target sampling draws from the global generator: the same draws for both
    base = plain(images, targets)
    torch.manual_seed(1)
    scaled = weighted(images, targets)
    for name, weight in weights.items():
        assert base[name].item() > 0, name
        assert scaled[name].item() == pytest.approx(weight * base[name].item(), rel=1e-5, abs=0), name
