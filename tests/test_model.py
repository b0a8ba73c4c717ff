"""MaskRCNN (model.py): the two entry points keep their contracts; predict leaves every module's mode alone;
the heads' batch norm follows the references; the five losses of images without objects, the loss weights, and
the limit on the ROIs that train the mask head."""
from __future__ import annotations

import math

import pytest
import torch

import maskrcnn
from maskrcnn import Config, MaskRCNN
from maskrcnn.data import ShapesDataset, make_loader
from maskrcnn.layers import RunningStatsBatchNorm2d
from maskrcnn.train import freeze_unselected_norms, select_trainable


def test_predict_keeps_frozen_batch_norm_frozen_in_a_training_model():
    """A heads-only run with trainable batch norm freezes the trunk's norms; validating with predict() in
    between must not put them back in train mode (the next step would update their running statistics)."""
    torch.manual_seed(0)
    model = MaskRCNN(Config.demo())
    data = ShapesDataset(count=2, height=128, width=128, seed=1)
    model.train()
    select_trainable(model, "heads")
    freeze_unselected_norms(model)
    trunk_norms = [m for m in model.backbone.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert trunk_norms and not any(m.training for m in trunk_norms)
    model.predict([data.load_image(0)])
    assert model.training and model.box_head.training  # the model itself is back in train mode
    assert not any(m.training for m in trunk_norms)  # the frozen norms stay frozen
    before = [m.running_mean.clone() for m in trunk_norms]
    image, target = data[0]
    model([image], [target])  # a training forward
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, trunk_norms))


def test_heads_batch_norm_trains_gamma_and_beta_as_the_references():
    # torchvision v2: nn.BatchNorm2d in the mask and box heads; matterport: gamma and beta trained, running statistics kept
    v2 = MaskRCNN(Config.torchvision_v2(num_classes=3, backbone="resnet18"))
    norms = [m for m in [*v2.mask_head.modules(), *v2.box_head.modules()] if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 8 and all(type(m) is torch.nn.BatchNorm2d and m.weight.requires_grad for m in norms)
    matterport = MaskRCNN(Config.matterport(num_classes=3, backbone="resnet50"))
    norms = [m for m in [*matterport.mask_head.modules(), *matterport.box_head.modules()] if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and all(isinstance(m, RunningStatsBatchNorm2d) and m.weight.requires_grad for m in norms)


# ---------------------------------------------------------------------------------------------- losses
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


# ---------------------------------------------------------------------------------------------- mask ROIs
def test_mask_head_trains_on_at_most_the_limit_per_image():
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
