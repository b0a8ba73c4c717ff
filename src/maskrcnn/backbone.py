"""ResNet trunk and Feature Pyramid Network (seed section 1.1; Lin et al., 2017).

Shape letters:
    N: images in the batch
    H, W: padded batch height and width
    F: FPN channels (fpn_channels)
C2..C5 have strides 4, 8, 16, 32; P2..P5 the same with F channels; P6 is P5 subsampled by 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .cpu import has_avx512
from .layers import norm_layer

# Output channels of C2..C5 for each trunk.
TRUNK_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


class ResNetTrunk(nn.Module):
    """torchvision's ResNet without its classifier; returns [C2, C3, C4, C5].

    Module names (conv1, bn1, layer1..layer4) are torchvision's, so its ImageNet weights load as they are.
    """

    def __init__(self, name: str, *, train_bn: bool, eps: float):
        super().__init__()
        factory = {
            "resnet18": torchvision.models.resnet18,
            "resnet34": torchvision.models.resnet34,
            "resnet50": torchvision.models.resnet50,
            "resnet101": torchvision.models.resnet101,
        }[name]
        resnet = factory(weights=None, norm_layer=norm_layer(train_bn, eps))
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.out_channels = TRUNK_CHANNELS[name]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(torch.relu_(conv_bn(self.conv1, self.bn1, images)))  # (N, 64, H/4, W/4)
        c2 = residual_stage(self.layer1, x)  # (N, C2, H/4, W/4)
        c3 = residual_stage(self.layer2, c2)  # (N, C3, H/8, W/8)
        c4 = residual_stage(self.layer3, c3)  # (N, C4, H/16, W/16)
        c5 = residual_stage(self.layer4, c4)  # (N, C5, H/32, W/32)
        return [c2, c3, c4, c5]


def is_foldable(bn: nn.Module) -> bool:
    """Whether `bn` is a fixed affine map: frozen, or nn.BatchNorm2d in eval mode with running statistics."""
    if isinstance(bn, FrozenBatchNorm2d):
        return True
    return isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.running_var is not None


def conv_bn(conv: nn.Conv2d, bn: nn.Module, x: Tensor) -> Tensor:
    """bn(conv(x)), with a fixed batch norm folded into the conv's weight and bias.

    A fixed batch norm is y * s + (b - mean * s) with s = gamma / sqrt(var + eps), so conv(x, w * s) plus
    that bias gives the same values (to float rounding) with one pass over the activations instead of
    two (batch norm was ~9% of the CPU inference time at 800x1066). The folded weights are rebuilt on every
    call: ~50 ms for ResNet-50 against ~1 s saved, never stale whatever changes the weights, and
    gradients reach conv.weight through the fold.
    """
    if not is_foldable(bn):
        return bn(conv(x))
    return conv._conv_forward(x, *fold(conv, bn))


def fold(conv: nn.Conv2d, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """The weight (O, I, k, k) and bias (O,) of conv followed by the fixed batch norm bn."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # (O,), as torchvision's FrozenBatchNorm2d
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale[:, None, None, None], bias


def residual_block(block: nn.Module, x: Tensor) -> Tensor:
    """torchvision's BasicBlock / Bottleneck forward, with each conv's batch norm through conv_bn."""
    out = torch.relu_(conv_bn(block.conv1, block.bn1, x))
    out = conv_bn(block.conv2, block.bn2, out)
    if hasattr(block, "conv3"):  # Bottleneck: 1x1, 3x3, 1x1
        out = conv_bn(block.conv3, block.bn3, torch.relu_(out))
    shortcut = x if block.downsample is None else conv_bn(block.downsample[0], block.downsample[1], x)
    return torch.relu_(out + shortcut)


def residual_stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    for block in stage:
        x = residual_block(block, x)
    return x


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> nn.Sequential:
    """A conv, followed by batch norm when norm == "batch" (the conv then has no bias)."""
    with_norm = norm == "batch"
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not with_norm)]
    if with_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class FPN(nn.Module):
    """Top-down pathway with lateral connections (FPN paper, Fig. 3), plus P6 for the RPN."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, norm: str = "none"):
        super().__init__()
        self.lateral = nn.ModuleList(conv_norm(c, out_channels, 1, norm) for c in in_channels)
        self.output = nn.ModuleList(conv_norm(out_channels, out_channels, 3, norm) for _ in in_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """[C2..C5] -> [P2, P3, P4, P5, P6], each (N, F, Hl, Wl)."""
        top_down = self.lateral[-1](features[-1])
        pyramid = [self.output[-1](top_down)]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])
            # Upsample to the lateral's exact size (nearest), so odd feature sizes line up.
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            pyramid.insert(0, self.output[level](top_down))
        pyramid.append(F.max_pool2d(pyramid[-1], kernel_size=1, stride=2))  # P6: P5 subsampled by 2
        return pyramid


class Backbone(nn.Module):
    """Trunk + FPN: images (N, 3, H, W) -> [P2, P3, P4, P5, P6]."""

    def __init__(self, trunk: nn.Module, fpn: FPN, *, channels_last: bool = True):
        """channels_last: whether the CPU convolutions may run in channels-last where that pays
        (`channels_last_pays`); the matterport layout keeps the contiguous layout (see `Layout`)."""
        super().__init__()
        self.trunk = trunk
        self.fpn = fpn
        self.channels_last = channels_last

    def forward(self, images: Tensor) -> list[Tensor]:
        # Tracing for ONNX export stays contiguous: a graph traced in channels-last gave wrong boxes at full size.
        tracing = torch.jit.is_tracing()
        if images.device.type == "cpu" and self.channels_last and not tracing and channels_last_pays(images, torch.is_grad_enabled()):
            # Every conv after this one keeps the layout; values are the same up to summation order.
            images = images.contiguous(memory_format=torch.channels_last)
        return self.fpn(self.trunk(images))


# Training on the CPU, channels-last / contiguous step time, ResNet-50 Mask R-CNN, batch of 2:
# 0.76 at 800x1066 and 0.88 at 512x512 on AVX-512 (Intel Xeon); ResNet-18 at the demo's 128x128: 1.05.
# With AVX2 kernels oneDNN's channels-last 3x3 convs forward + backward are 1.2-1.6x slower (1x1: 0.6-0.9x),
# and the whole step measured slower on an AVX2 AMD EPYC. Below this size, or without AVX-512,
# training keeps the contiguous layout.
CHANNELS_LAST_TRAINING_MIN_PIXELS = 512 * 512


def channels_last_pays(images: Tensor, grad_enabled: bool) -> bool:
    """Whether the CPU convolutions over these (N, 3, H, W) images run faster in channels-last (NHWC).

    Without autograd always: oneDNN's forward convs are about 25% faster on NHWC. With autograd only on
    AVX-512 and images of at least CHANNELS_LAST_TRAINING_MIN_PIXELS (measurements above).
    """
    if not grad_enabled:
        return True
    return has_avx512() and images.shape[-2] * images.shape[-1] >= CHANNELS_LAST_TRAINING_MIN_PIXELS


def build_backbone(*, trunk: type[nn.Module], name: str, fpn_channels: int, fpn_norm: str, train_bn: bool, eps: float,
                   channels_last: bool = True) -> Backbone:
    """trunk: ResNetTrunk, or the matterport layout's MatterportResNet (same constructor)."""
    trunk_module = trunk(name, train_bn=train_bn, eps=eps)
    return Backbone(trunk_module, FPN(trunk_module.out_channels, fpn_channels, fpn_norm), channels_last=channels_last)
