"""maskrcnn.save / maskrcnn.load: weights, config and class names in one safe, atomically written file."""
import numpy as np
import pytest
import torch

import maskrcnn
from maskrcnn import Config, MaskRCNN
from maskrcnn.errors import CheckpointError

SMALL = dict(
    num_classes=3, backbone="resnet18", image_min_dim=32, image_max_dim=48, fpn_channels=32, rpn_conv_channels=32,
    box_head_channels=64, mask_head_channels=32, rpn_pre_nms_limit_inference=200, post_nms_rois_inference=100,
    detection_max_instances=10,
)
NAMES = ["BG", "square", "circle"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    built = MaskRCNN(Config.torchvision(**SMALL, rpn_nms_threshold=0.65), class_names=NAMES).eval()
    with torch.no_grad():  # a change that a fresh random model could not reproduce, in a weight and a buffer
        next(built.parameters()).add_(0.5)
        buffers = [value for key, value in built.state_dict().items() if key.endswith("running_mean")]
        assert buffers  # the frozen batch norm keeps its statistics as buffers
        buffers[0].fill_(0.25)
    return built


def test_round_trip_gives_the_same_model(model, tmp_path):
    path = tmp_path / "model.pt"
    maskrcnn.save(model, path)
    loaded = maskrcnn.load(path)
    assert isinstance(loaded, MaskRCNN)
    assert loaded.config == model.config
    assert loaded.config.rpn_nms_threshold == 0.65
    assert loaded.class_names == NAMES
    expected = model.state_dict()
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_loaded_model_predicts_the_same(model, tmp_path):
    maskrcnn.save(model, tmp_path / "model.pt")
    loaded = maskrcnn.load(tmp_path / "model.pt")
    assert not loaded.training
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    before, after = model.predict(image)[0], loaded.predict(image)[0]
    assert len(before) > 0
    assert torch.equal(before.boxes, after.boxes)
    assert torch.equal(before.scores, after.scores)
    assert torch.equal(before.labels, after.labels)
    assert torch.equal(before.masks, after.masks)


def test_file_holds_only_plain_values(model, tmp_path):
    path = tmp_path / "model.pt"
    maskrcnn.save(model, path)
    data = torch.load(path, weights_only=True)  # refuses anything but tensors and plain values
    assert data["class_names"] == NAMES
    assert Config.from_dict(data["config"]) == model.config
    assert all(isinstance(value, torch.Tensor) for value in data["state_dict"].values())
    assert all(value.device.type == "cpu" for value in data["state_dict"].values())


def test_default_class_names_round_trip(tmp_path):
    torch.manual_seed(0)
    plain = MaskRCNN(Config.torchvision(**SMALL))
    maskrcnn.save(plain, tmp_path / "plain.pt")
    loaded = maskrcnn.load(tmp_path / "plain.pt")
    assert loaded.class_names == plain.class_names
    assert len(loaded.class_names) == 3 and loaded.class_names[0] == "BG"


def test_save_replaces_atomically_and_leaves_no_temporary_files(model, tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    maskrcnn.save(model, path)
    original = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="model.pt"):
        maskrcnn.save(model, path)
    monkeypatch.undo()
    assert path.read_bytes() == original  # the good file is still there, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    maskrcnn.load(path)


def test_load_missing_or_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        maskrcnn.load(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        maskrcnn.load(empty)
    for name, content in [("config.pt", b"num_classes: 3\n"), ("zip.pt", b"PK\x03\x04junk"), ("zeros.pt", bytes(100))]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=name):
            maskrcnn.load(tmp_path / name)
    weights_only = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, weights_only)  # a plain state dict: no config inside
    with pytest.raises(CheckpointError, match="weights.pt"):
        maskrcnn.load(weights_only)


@pytest.mark.parametrize("content", [b"this is not a torch file at all", b"hello"])
def test_load_text_file(tmp_path, content):
    path = tmp_path / "text.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="text.pt"):
        maskrcnn.load(path)


class NotPlain:
    """An object that a weights-only load must refuse to rebuild."""


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"config": Config.demo().to_dict(), "state_dict": {}, "payload": NotPlain()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        maskrcnn.load(path)


def saved_with(model, tmp_path, name, change):
    """A file written by `save` with its contents changed by `change(data)`."""
    path = tmp_path / name
    maskrcnn.save(model, path)
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)
    return path


def test_weights_missing_for_the_config(model, tmp_path):
    # fpn_norm "batch" needs batch-norm weights the file does not have
    path = saved_with(model, tmp_path, "norm.pt", lambda data: data["config"].update(fpn_norm="batch"))
    with pytest.raises(CheckpointError, match="norm.pt"):
        maskrcnn.load(path)


def test_weights_of_the_wrong_shape_for_the_config(model, tmp_path):
    def more_classes(data):
        data["config"]["num_classes"] = 5
        data["class_names"] = None

    path = saved_with(model, tmp_path, "shape.pt", more_classes)
    with pytest.raises(CheckpointError, match="shape.pt"):
        maskrcnn.load(path)


def test_bad_config_in_file_names_the_file(model, tmp_path):
    path = saved_with(model, tmp_path, "config.pt", lambda data: data["config"].update(bogus=1))
    with pytest.raises(maskrcnn.errors.ConfigError, match="config.pt"):
        maskrcnn.load(path)
