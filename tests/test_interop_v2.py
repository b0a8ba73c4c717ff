"""Parity with torchvision's maskrcnn_resnet50_fpn_v2, the independent reference.

Compared in float64, as the v1 parity test is: a random network amplifies float32 rounding differences
between two correct implementations into different top-k sets. Every batch norm gets random statistics and
affine parameters and every conv / linear layer a random bias, so a norm or bias mapped to the wrong
place, or a missing ReLU, changes the detections (torchvision initialises biases to 0 and BN to identity,
which would hide such mistakes).

The v2 heads are heavy in float64 on a CPU (four 3x3 convs of 256 on every ROI), so the default-suite
cases keep fewer proposals and detections; the slow case runs torchvision's own defaults at 800 px.
"""
import pytest
import torch
import torchvision
from torch import nn

from maskrcnn.config import Config
from maskrcnn.errors import CheckpointError
from maskrcnn.interop import from_torchvision

V2 = torchvision.models.detection.maskrcnn_resnet50_fpn_v2
V1 = torchvision.models.detection.maskrcnn_resnet50_fpn


def randomise_(model: nn.Module, seed: int) -> None:
    """Random BN statistics and affine parameters, and random biases, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)


def make_pair(seed: int, *, min_size: int, max_size: int, proposals: int | None = None, detections: int | None = None):
    torch.manual_seed(seed)
    reference = V2(weights=None, weights_backbone=None)
    reference.transform.min_size = (min_size,)
    reference.transform.max_size = max_size
    reference.roi_heads.score_thresh = 0.0  # every (ROI, class) pair is a candidate: ranking and NMS are exercised
    if proposals is not None:
        reference.rpn._post_nms_top_n["testing"] = proposals
    if detections is not None:
        reference.roi_heads.detections_per_img = detections
    randomise_(reference, seed + 1000)
    with torch.no_grad():
        # Random heads give mask logits of |x| ~ 30, where sigmoid rounds to exactly 1.0 and the pasted
        # (bilinearly resized) masks land exactly on 0.5, a tie neither implementation can decide; scaled
        # down, the logits stay where the 0.5 threshold is well defined.
        reference.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.05)
    reference.eval()
    ours = from_torchvision(reference)  # copies the transform, RPN and ROI-head settings above
    return reference.double(), ours.double()


def images_of(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=generator, dtype=torch.float64) for h, w in sizes]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D,) IoU of two (D, H, W) bool mask stacks; two empty masks count as equal."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))


def assert_same_detections(expected: dict, got) -> None:
    assert len(got) == len(expected["boxes"])
    assert torch.equal(got.labels, expected["labels"])
    assert got.masks.shape == expected["masks"][:, 0].shape
    if len(got) == 0:
        return
    assert (got.boxes.double() - expected["boxes"]).abs().max().item() <= 1e-3
    assert (got.scores.double() - expected["scores"]).abs().max().item() <= 1e-6
    # torchvision documents its soft masks as binarised with mask >= 0.5
    assert mask_iou(got.masks, expected["masks"][:, 0] >= 0.5).min().item() >= 0.99


def run_both(reference, ours, sizes, seed):
    images = images_of(sizes, seed)
    with torch.no_grad():
        expected = reference(images)
    got = ours.predict(images)
    assert len(got) == len(images)
    for e, g, (h, w) in zip(expected, got, sizes):
        assert g.masks.shape[-2:] == (h, w)
        assert_same_detections(e, g)
    return got


@pytest.mark.parametrize(
    "seed, sizes",
    [
        (0, [(181, 263), (297, 203)]),  # a batch of two: landscape and portrait, odd sizes (not multiples of 32)
        (1, [(224, 224)]),  # square
    ],
)
def test_same_detections_as_torchvision_v2(seed, sizes):
    reference, ours = make_pair(seed, min_size=256, max_size=400, proposals=48, detections=20)
    got = run_both(reference, ours, sizes, seed)
    assert all(len(g) == 20 for g in got)  # score threshold 0: the detection limit is reached


@pytest.mark.slow
def test_same_detections_at_full_size():
    reference, ours = make_pair(2, min_size=800, max_size=1333)
    got = run_both(reference, ours, [(480, 640), (427, 301)], 2)
    assert all(len(g) == 100 for g in got)


@pytest.fixture(scope="module")
def small_v2():
    """A 3-class v2 model with random BN statistics and biases (so tensors are told apart by value)."""
    torch.manual_seed(0)
    model = V2(weights=None, weights_backbone=None, num_classes=3)
    randomise_(model, 0)
    return model


def test_v1_or_v2_is_told_from_the_state_dict_alone(small_v2):
    v2 = small_v2
    ours = from_torchvision(v2.state_dict())
    c = ours.config
    assert (c.fpn_norm, c.rpn_conv_depth, c.box_head, c.mask_head_norm) == ("batch", 2, "conv4fc", "batch")
    assert c.num_classes == 3
    # a few tensors from each part, at the slot the layout puts them
    assert torch.equal(ours.backbone.fpn.output[2][1].running_var, v2.backbone.fpn.layer_blocks[2][1].running_var)
    assert torch.equal(ours.rpn.conv[2].bias, v2.rpn.head.conv[1][0].bias)
    assert torch.equal(ours.box_head.shared[10].weight, v2.roi_heads.box_head[3][1].weight)
    assert torch.equal(ours.box_head.shared[13].weight, v2.roi_heads.box_head[5].weight)
    assert torch.equal(ours.mask_head.convs[4].running_mean, v2.roi_heads.mask_head[1][1].running_mean)

    v1 = V1(weights=None, weights_backbone=None, num_classes=3)
    c = from_torchvision(v1.state_dict()).config
    assert (c.fpn_norm, c.rpn_conv_depth, c.box_head, c.mask_head_norm) == ("none", 1, "fc", "none")


def test_preset_matches_torchvision_v2_defaults():
    """Config.torchvision_v2() (what a bare state dict gets) equals the settings read off a default v2 model."""
    torch.manual_seed(0)
    reference = V2(weights=None, weights_backbone=None, num_classes=5)
    from_model = from_torchvision(reference).config
    assert from_model == Config.torchvision_v2(5)
    assert from_torchvision(reference.state_dict()).config == Config.torchvision_v2(5)


def test_mismatched_v2_state_dict_is_refused_with_names(small_v2):
    state = small_v2.state_dict()
    missing = dict(state)
    del missing["roi_heads.box_head.2.1.running_var"]
    with pytest.raises(CheckpointError, match=r"box_head\.shared\.7\.running_var"):
        from_torchvision(missing)
    extra = dict(state, **{"roi_heads.mask_head.4.0.weight": torch.zeros(256, 256, 3, 3)})
    with pytest.raises(CheckpointError, match=r"roi_heads\.mask_head\.4\.0\.weight"):
        from_torchvision(extra)
    misshapen = dict(state, **{"backbone.fpn.inner_blocks.1.1.weight": torch.zeros(7)})
    with pytest.raises(CheckpointError, match=r"inner_blocks\.1\.1\.weight: \(7,\)"):
        from_torchvision(misshapen)
