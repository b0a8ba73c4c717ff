"""MaskRCNN.predict on a small random model: input checks, image kinds, batches, empty results, modes, float64."""
import numpy as np
import pytest
import torch

from maskrcnn import Config, Detections, MaskRCNN

# A narrow ResNet-18 model resizing images to 32-48 px: fast on a shared 2-core machine, yet every step runs.
SMALL = dict(
    num_classes=3, backbone="resnet18", image_min_dim=32, image_max_dim=48, fpn_channels=32, rpn_conv_channels=32,
    box_head_channels=64, mask_head_channels=32, rpn_pre_nms_limit_inference=200, post_nms_rois_inference=100,
    detection_max_instances=10,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskRCNN(Config.torchvision(**SMALL)).eval()


def rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def check_detections(found: Detections, height: int, width: int, num_classes: int = 3):
    """The output contract of `predict` for one image: boxes, labels, scores, masks of the input's size."""
    n = len(found)
    assert found.boxes.shape == (n, 4) and found.boxes.dtype == torch.float32
    assert found.labels.shape == (n,) and found.labels.dtype == torch.int64
    assert found.scores.shape == (n,) and found.scores.dtype == torch.float32
    assert found.masks.shape == (n, height, width) and found.masks.dtype == torch.bool
    if n:
        assert found.labels.min() >= 1 and found.labels.max() <= num_classes - 1
        assert torch.all(found.scores[:-1] >= found.scores[1:])
        assert torch.all(found.boxes[:, 0::2] >= 0) and torch.all(found.boxes[:, 0::2] <= width)
        assert torch.all(found.boxes[:, 1::2] >= 0) and torch.all(found.boxes[:, 1::2] <= height)
        assert torch.all(found.boxes[:, 2:] >= found.boxes[:, :2])


# ----------------------------------------------------------------------------------------- bad input
GOOD = rgb(40, 50)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((40, 50, 3), dtype=np.float64), ["float64"]),
    (torch.zeros((3, 40, 50), dtype=torch.int64), ["int64"]),
    (torch.zeros((3, 40, 50), dtype=torch.uint8), ["uint8"]),
    (np.zeros((40, 50, 2), dtype=np.uint8), ["channels", "2)"]),
    (np.zeros((40, 50, 5), dtype=np.uint8), ["channels", "5)"]),
    (torch.zeros((2, 40, 50)), ["channels"]),
    (np.zeros((0, 50, 3), dtype=np.uint8), ["empty"]),
    (np.zeros((40, 0, 3), dtype=np.uint8), ["empty"]),
    (torch.zeros((3, 0, 50)), ["empty"]),
    (np.zeros((50,), dtype=np.uint8), ["shape", "(50,)"]),
    (np.zeros((2, 40, 50, 3), dtype=np.uint8), ["shape"]),
    ([[1, 2, 3]], ["list"]),
    ("image.jpg", ["str"]),
    (None, ["NoneType"]),
])
def test_bad_input_names_the_image_and_the_problem(model, bad, words):
    with pytest.raises(ValueError, match="image 1") as error:
        model.predict([GOOD, bad])
    for word in words:
        assert word in str(error.value)


def test_bad_first_image_is_image_0(model):
    with pytest.raises(ValueError, match="image 0"):
        model.predict([np.zeros((40, 50, 2), dtype=np.uint8), GOOD])


def test_no_images(model):
    with pytest.raises(ValueError):
        model.predict([])


# ----------------------------------------------------------------------------------------- image kinds
def test_rgb_uint8_and_float_tensor_agree(model):
    image = rgb(48, 64, seed=1)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    from_numpy, from_tensor = model.predict([image, tensor])
    check_detections(from_numpy, 48, 64)
    assert len(from_numpy) > 0  # a random model with a 0.05 threshold finds something: the masks are exercised
    torch.testing.assert_close(from_numpy.boxes, from_tensor.boxes)
    torch.testing.assert_close(from_numpy.scores, from_tensor.scores)
    assert torch.equal(from_numpy.masks, from_tensor.masks)


def test_grayscale_and_rgba_images(model):
    # (H, W) and (H, W, 1) gray images are the RGB image with three equal channels; RGBA drops its alpha.
    gray = np.random.default_rng(2).integers(0, 256, (40, 56), dtype=np.uint8)
    gray_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    alpha = np.random.default_rng(4).integers(0, 256, (40, 56, 1), dtype=np.uint8)
    images = [gray, gray[:, :, None], np.concatenate((gray_rgb, alpha), axis=2), gray_rgb]
    found = model.predict(images)
    assert len(found) == 4
    reference = found[3]
    check_detections(reference, 40, 56)
    assert len(reference) > 0
    for kind, detections in zip(["(H, W)", "(H, W, 1)", "RGBA"], found[:3]):
        check_detections(detections, 40, 56)
        torch.testing.assert_close(detections.boxes, reference.boxes, msg=kind)
        torch.testing.assert_close(detections.scores, reference.scores, msg=kind)
        assert torch.equal(detections.masks, reference.masks), kind


def test_batch_of_different_sizes(model):
    sizes = [(50, 70), (90, 40), (33, 33)]
    images = [rgb(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    found = model.predict(images)
    assert len(found) == 3
    for detections, (h, w) in zip(found, sizes):
        check_detections(detections, h, w)
        assert detections.image_size == (h, w)


def test_batched_tensor_input(model):
    batch = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    found = model.predict(batch)
    assert len(found) == 2
    for detections in found:
        check_detections(detections, 40, 48)


# ----------------------------------------------------------------------------------------- nothing found
def check_empty(found: Detections, height: int, width: int):
    assert found.boxes.shape == (0, 4) and found.boxes.dtype == torch.float32
    assert found.labels.shape == (0,) and found.labels.dtype == torch.int64
    assert found.scores.shape == (0,) and found.scores.dtype == torch.float32
    assert found.masks.shape == (0, height, width) and found.masks.dtype == torch.bool


def test_nothing_found_with_score_threshold_argument(model):
    found = model.predict([rgb(45, 61), rgb(30, 20, seed=1)], score_threshold=1.0)
    check_empty(found[0], 45, 61)
    check_empty(found[1], 30, 20)


def test_nothing_found_with_config_threshold():
    torch.manual_seed(0)
    strict = MaskRCNN(Config.torchvision(**dict(SMALL, detection_min_confidence=1.0)))
    check_empty(strict.predict(rgb(45, 61))[0], 45, 61)


# ----------------------------------------------------------------------------------------- modes and graphs
def test_predict_restores_training_mode_and_leaves_batch_norm_alone():
    torch.manual_seed(0)
    demo = MaskRCNN(Config.demo(**{k: v for k, v in SMALL.items() if k != "backbone"}, detection_min_confidence=0.05))
    assert demo.config.train_bn  # batch norm that trains: running statistics would move in training mode
    buffers = {k: v.clone() for k, v in demo.state_dict().items()}
    demo.train()
    found = demo.predict(rgb(40, 48))
    assert demo.training
    assert all(m.training for m in demo.modules())
    for key, value in demo.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    demo.eval()
    demo.predict(rgb(40, 48))
    assert not demo.training
    check_detections(found[0], 40, 48, num_classes=demo.config.num_classes)


def test_predict_builds_no_graph(model):
    image = torch.rand(3, 40, 48, requires_grad=True)
    found = model.predict([image])[0]
    assert len(found) > 0
    for tensor in (found.boxes, found.scores, found.masks):
        assert not tensor.requires_grad and tensor.grad_fn is None


def test_predict_in_float64():
    torch.manual_seed(0)
    single = MaskRCNN(Config.torchvision(**SMALL)).eval()
    double = MaskRCNN(Config.torchvision(**SMALL)).eval()
    double.load_state_dict(single.state_dict())
    double.double()
    assert double.dtype == torch.float64
    image = rgb(44, 60, seed=5)
    found = double.predict(image)[0]
    check_detections(found, 44, 60)  # outputs stay float32 / int64 / bool
    reference = single.predict(image)[0]
    # The same weights in float32: the best detection agrees to float32 precision.
    assert len(found) > 0 and len(reference) > 0
    torch.testing.assert_close(found.scores[0], reference.scores[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.boxes[0], reference.boxes[0], rtol=0, atol=1e-2)
