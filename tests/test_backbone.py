"""The backbone's CPU fast paths against the plain computation each replaces: batch norm folded into the convs
against conv then batch norm, channels-last against contiguous (forward and gradients), the rule that picks
the layout, and the contiguous layout while tracing.

Float64 throughout, so that only summation order separates the two (about 1e-15 relative).
"""
import pytest
import torch
from numeric_helpers import assert_close
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn import Config, MaskRCNN
from maskrcnn import backbone as backbone_module
from maskrcnn.backbone import CHANNELS_LAST_TRAINING_MIN_PIXELS, FPN, Backbone, ResNetTrunk, channels_last_pays, conv_bn, is_foldable
from maskrcnn.cpu import has_avx512


def randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    """Statistics and affine far from the identity, so that a wrong fold shows."""
    for bn in module.modules():
        if isinstance(bn, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            n = bn.running_mean.shape[0]
            bn.running_mean.copy_(torch.randn(n, generator=generator, dtype=bn.running_mean.dtype) * 0.5)
            bn.running_var.copy_(torch.rand(n, generator=generator, dtype=bn.running_var.dtype) * 2 + 0.2)
            bn.weight.data.copy_(torch.rand(n, generator=generator, dtype=bn.weight.dtype) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=generator, dtype=bn.bias.dtype) * 0.2)


def plain_trunk(trunk: ResNetTrunk, x: torch.Tensor) -> list[torch.Tensor]:
    """torchvision's own module calls: conv, then batch norm as a separate layer."""
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    outputs = []
    for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        x = layer(x)
        outputs.append(x)
    return outputs


def trunk_pair(name: str, train_bn: bool):
    torch.manual_seed(0)
    trunk = ResNetTrunk(name, train_bn=train_bn, eps=1e-5).double().eval()
    with torch.no_grad():
        randomise_batch_norms(trunk, torch.Generator().manual_seed(1))
    return trunk


@pytest.mark.parametrize("name, train_bn", [("resnet50", False), ("resnet18", True)])
def test_folded_batch_norm_trunk_equals_conv_then_batch_norm(name, train_bn):
    # FrozenBatchNorm2d (torchvision preset) and nn.BatchNorm2d in eval mode (demo preset, predicting).
    trunk = trunk_pair(name, train_bn)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected = plain_trunk(trunk, x)
        got = trunk(x)
    for g, e in zip(got, expected):
        assert_close(g, e)


def test_training_batch_norm_is_not_folded():
    # nn.BatchNorm2d in training mode normalises by the batch's statistics: conv_bn must not fold it.
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1).double(), nn.BatchNorm2d(4).double().train()
    assert not is_foldable(bn)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    expected = nn.BatchNorm2d(4).double().train()(conv(x))
    got = conv_bn(conv, bn, x)
    assert torch.equal(got, expected)
    assert bn.num_batches_tracked.item() == 1  # the running statistics were updated, as bn(conv(x)) does


def test_folded_batch_norm_gives_the_same_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True).double()
    bn = FrozenBatchNorm2d(5).double()
    randomise_batch_norms(bn, torch.Generator().manual_seed(3))
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 5, 9, 7, dtype=torch.float64)
    (conv_bn(conv, bn, x) * weights).sum().backward()
    got = (conv.weight.grad.clone(), conv.bias.grad.clone(), x.grad.clone())
    conv.weight.grad = conv.bias.grad = x.grad = None
    (bn(conv(x)) * weights).sum().backward()
    for g, e in zip(got, (conv.weight.grad, conv.bias.grad, x.grad)):
        assert_close(g, e)


def test_folded_weights_follow_weight_changes():
    # Nothing is cached: after an in-place change (an optimiser step, load_state_dict) the fold is new.
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 1).double(), FrozenBatchNorm2d(3).double()
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    before = conv_bn(conv, bn, x)
    with torch.no_grad():
        conv.weight.mul_(2)
        bn.running_var.fill_(4.0)
    assert_close(conv_bn(conv, bn, x), bn(conv(x)))
    assert not torch.allclose(before, conv_bn(conv, bn, x))


def test_channels_last_backbone_equals_contiguous():
    trunk = trunk_pair("resnet50", False)
    backbone = Backbone(trunk, FPN(trunk.out_channels, 32).double()).eval()
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        got = backbone(x)
        expected = backbone.fpn(plain_trunk(trunk, x.contiguous()))
    assert got[0].is_contiguous(memory_format=torch.channels_last)  # the fast path really ran
    assert not expected[0].is_contiguous(memory_format=torch.channels_last)
    for g, e in zip(got, expected):
        assert_close(g, e)
    # the ROI heads read P2..P5 channels-last for roi_align_cpu (fixed sampling), contiguous for torchvision's op
    for sampling_ratio, layout in ((2, torch.channels_last), (0, torch.contiguous_format)):
        model = MaskRCNN(Config.demo(roi_sampling_ratio=sampling_ratio))
        assert all(level.is_contiguous(memory_format=layout) for level in model.roi_features(got))
        assert all(torch.equal(a, b) for a, b in zip(model.roi_features(got), got[:4]))


def test_channels_last_rule_for_training():
    small = torch.zeros(2, 3, 128, 128)
    large = torch.zeros(1, 3, 512, 512)
    assert channels_last_pays(small, grad_enabled=False) and channels_last_pays(large, grad_enabled=False)
    assert not channels_last_pays(small, grad_enabled=True)  # the demo's size: contiguous measured faster
    assert 512 * 512 >= CHANNELS_LAST_TRAINING_MIN_PIXELS > 128 * 128
    assert channels_last_pays(large, grad_enabled=True) == has_avx512()


def test_channels_last_training_gives_the_same_gradients(monkeypatch):
    """The backward of a channels-last trunk + FPN equals the contiguous one (float64, summation order only)."""
    trunk = trunk_pair("resnet18", True)
    backbone = Backbone(trunk, FPN(trunk.out_channels, 16).double()).eval()  # eval: the same statistics both ways
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    results = {}
    for channels_last in (False, True):
        monkeypatch.setattr(backbone_module, "channels_last_pays", lambda images, grad_enabled, c=channels_last: c)
        backbone.zero_grad(set_to_none=True)
        pyramid = backbone(x)
        assert pyramid[0].is_contiguous(memory_format=torch.channels_last) == channels_last  # that layout really ran
        sum((level * (i + 1)).square().mean() for i, level in enumerate(pyramid)).backward()
        results[channels_last] = [p.grad.clone() for p in backbone.parameters()]
    assert len(results[True]) == len(list(backbone.parameters()))
    for got, expected in zip(results[True], results[False]):
        assert_close(got, expected, rtol=1e-9)


def test_traced_backbone_keeps_the_contiguous_layout(monkeypatch):
    """ONNX export traces the model, and the full-size export parity (tests/test_export.py, slow) broke when the
    traced backbone ran channels-last: while tracing, the layout stays contiguous."""
    monkeypatch.setattr(backbone_module, "channels_last_pays", lambda images, grad_enabled: True)
    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18", train_bn=False, eps=1e-5).eval()
    backbone = Backbone(trunk, FPN(trunk.out_channels, 8)).eval()
    x = torch.rand(1, 3, 64, 64)
    assert backbone(x)[0].is_contiguous(memory_format=torch.channels_last)  # not tracing: the fast layout
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    pyramid = backbone(x)
    assert pyramid[0].is_contiguous() and not pyramid[0].is_contiguous(memory_format=torch.channels_last)
