"""Parity with torchvision's maskrcnn_resnet50_fpn, the independent reference.

Compared in float64: a randomly initialised network amplifies float32 rounding differences between two
correct implementations into different top-100 sets; in float64 both must agree to the tolerances below.
"""
import pytest
import torch
import torchvision

from maskrcnn.errors import CheckpointError
from maskrcnn.interop import from_torchvision


def make_pair(seed: int, *, min_size: int, max_size: int, score_threshold: float = 0.0):
    torch.manual_seed(seed)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    reference.transform.min_size = (min_size,)
    reference.transform.max_size = max_size
    reference.roi_heads.score_thresh = score_threshold
    # 300 proposals instead of 1000 keeps the float64 box head cheap; from_torchvision copies the setting.
    reference.rpn._post_nms_top_n = dict(training=2000, testing=300)
    reference.eval()
    ours = from_torchvision(reference)
    return reference.double(), ours.double()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))


def assert_same_detections(expected: dict, got):
    assert len(got) == len(expected["boxes"])
    assert torch.equal(got.labels, expected["labels"])
    assert (got.boxes.double() - expected["boxes"]).abs().max().item() <= 1e-3 if len(got) else True
    assert (got.scores.double() - expected["scores"]).abs().max().item() <= 1e-6 if len(got) else True
    assert got.masks.shape == expected["masks"][:, 0].shape
    if len(got):
        assert mask_iou(got.masks, expected["masks"][:, 0] > 0.5).min().item() >= 0.99


def images_of(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=generator, dtype=torch.float64) for h, w in sizes]


@pytest.mark.parametrize(
    "seed, sizes",
    [
        (0, [(180, 260)]),  # landscape
        (1, [(301, 197)]),  # portrait, odd sizes
        (2, [(224, 224)]),  # square
        (3, [(203, 257), (150, 333)]),  # a batch of two different sizes
    ],
)
def test_same_detections_as_torchvision(seed, sizes):
    reference, ours = make_pair(seed, min_size=192, max_size=320)
    images = images_of(sizes, seed)
    with torch.no_grad():
        expected = reference(images)
    got = ours.predict(images)
    assert len(got) == len(images)
    for e, g, (h, w) in zip(expected, got, sizes):
        assert len(g) == 100  # score threshold 0: many detections, so ranking and NMS are exercised
        assert g.masks.shape[-2:] == (h, w)
        assert_same_detections(e, g)


def test_same_detections_with_default_threshold():
    reference, ours = make_pair(4, min_size=192, max_size=320, score_threshold=0.05)
    images = images_of([(190, 250)], 4)
    with torch.no_grad():
        expected = reference(images)
    assert_same_detections(expected[0], ours.predict(images)[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 6])
def test_same_detections_at_full_size(seed):
    reference, ours = make_pair(seed, min_size=800, max_size=1333)
    images = images_of([(480, 640), (427, 301)], seed)
    with torch.no_grad():
        expected = reference(images)
    for e, g in zip(expected, ours.predict(images)):
        assert_same_detections(e, g)


def test_settings_are_copied_from_the_model():
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=7, min_size=512, max_size=700,
        box_score_thresh=0.2, box_nms_thresh=0.4, box_detections_per_img=33, rpn_post_nms_top_n_test=500,
    )
    ours = from_torchvision(reference)
    c = ours.config
    assert (c.num_classes, c.image_min_dim, c.image_max_dim) == (7, 512, 700)
    assert (c.detection_min_confidence, c.detection_nms_threshold, c.detection_max_instances) == (0.2, 0.4, 33)
    assert c.post_nms_rois_inference == 500


def test_state_dict_gives_the_same_weights():
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    ours = from_torchvision(reference.state_dict())
    assert ours.config.num_classes == 3
    assert torch.equal(ours.box_head.class_logits.weight, reference.roi_heads.box_predictor.cls_score.weight)
    assert torch.equal(ours.backbone.trunk.layer3[2].conv2.weight, reference.backbone.body.layer3[2].conv2.weight)


def test_mismatched_state_dict_is_refused_with_names():
    torch.manual_seed(0)
    state = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3).state_dict()
    missing = dict(state)
    del missing["rpn.head.bbox_pred.weight"]
    with pytest.raises(CheckpointError, match="rpn.deltas.weight"):
        from_torchvision(missing)
    extra = dict(state, **{"roi_heads.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="roi_heads.extra.weight"):
        from_torchvision(extra)
    misshapen = dict(state, **{"backbone.fpn.layer_blocks.0.0.bias": torch.zeros(7)})
    with pytest.raises(CheckpointError, match="layer_blocks.0.0.bias"):
        from_torchvision(misshapen)


def test_unknown_weights_name_and_offline_download_fail_clearly(monkeypatch):
    with pytest.raises(ValueError, match="torchvision-coco"):
        from_torchvision("nonsense")
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(MaskRCNN_ResNet50_FPN_Weights.COCO_V1), "get_state_dict", offline)
    with pytest.raises(CheckpointError, match="could not download"):
        from_torchvision("torchvision-coco")
