"""MaskRCNN (model.py): the two entry points keep their contracts; predict leaves every module's mode alone;
the heads' batch norm follows the references."""
from __future__ import annotations

import torch

from maskrcnn import Config, MaskRCNN
from maskrcnn.data import ShapesDataset
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


def test_running_statistics_batch_norm_in_train_mode():
    norm = RunningStatsBatchNorm2d(3, eps=1e-3).train()
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
        norm.weight.copy_(torch.tensor([2.0, 1.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0, -1.0]))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = norm(x)
    mean, var = norm.running_mean[:, None, None], norm.running_var[:, None, None]
    expected = (x - mean) / torch.sqrt(var + 1e-3) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(out, expected)
    assert torch.equal(norm.running_mean, torch.tensor([1.0, 2.0, 3.0]))  # never updated
    out.sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad is not None
