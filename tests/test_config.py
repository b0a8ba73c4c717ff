"""Config: the presets (torchvision v1/v2, matterport, demo), validation naming the field, YAML/JSON round trips."""
import dataclasses
import json

import pytest
import yaml

from maskrcnn import Config
from maskrcnn.errors import ConfigError

PRESETS = {
    "default": Config,
    "torchvision": Config.torchvision,
    "torchvision_v2": Config.torchvision_v2,
    "matterport": Config.matterport,
    "demo": Config.demo,
}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_and_validate(name):
    config = PRESETS[name]()
    config.validate()  # no error
    assert config.mask_shape[0] == 2 * config.mask_pool_size
    assert len(config.anchor_scales) == 5


def test_matterport_preset_is_the_seed():
    c = Config.matterport()
    assert c.num_classes == 81
    assert c.backbone == "resnet101"
    assert c.rpn_objectness == "softmax" and c.rpn_conv_channels == 512
    assert c.box_head == "conv"
    assert c.image_resize_mode == "square" and c.image_max_dim == 1024
    assert c.detection_min_confidence == 0.7 and c.detection_nms_threshold == 0.3
    assert c.anchor_scales == (32, 64, 128, 256, 512) and c.anchor_ratios == (0.5, 1.0, 2.0)
    assert c.backbone_strides == (4, 8, 16, 32, 64) and c.anchor_stride == 1
    assert c.rpn_nms_threshold == 0.7
    assert c.post_nms_rois_training == 2000 and c.post_nms_rois_inference == 1000
    assert c.train_rois_per_image == 200 and c.roi_positive_ratio == 0.33
    assert c.pool_size == 7 and c.mask_pool_size == 14 and c.mask_shape == (28, 28)
    assert c.detection_max_instances == 100
    assert c.bbox_std_dev == (0.1, 0.1, 0.2, 0.2)


def test_torchvision_preset():
    c = Config.torchvision()
    assert c.num_classes == 91
    assert c.backbone == "resnet50"
    assert c.rpn_objectness == "sigmoid" and c.rpn_conv_channels == 256
    assert c.box_head == "fc"
    assert c.image_resize_mode == "shorter_side" and (c.image_min_dim, c.image_max_dim) == (800, 1333)
    assert c.detection_min_confidence == 0.05 and c.detection_nms_threshold == 0.5
    assert c.anchor_round and c.anchor_stride_from_feature_size
    # torchvision's aspect ratios (0.5, 1, 2) are height/width: (2, 1, 0.5) as our width/height
    assert c.anchor_ratios == (2.0, 1.0, 0.5)


def test_preset_overrides_and_num_classes():
    c = Config.torchvision(num_classes=4, backbone="resnet18", image_min_dim=64)
    assert (c.num_classes, c.backbone, c.image_min_dim) == (4, "resnet18", 64)
    assert Config.matterport(num_classes=2).num_classes == 2


@pytest.mark.parametrize("field, value", [
    ("num_classes", 1),
    ("num_classes", 0),
    ("learning_rate", -0.01),
    ("learning_rate", 0.0),
    ("backbone", "resnet7"),
    ("rpn_objectness", "tanh"),
    ("image_resize_mode", "stretch"),
    ("anchor_scales", (32, 64, 128, 256)),
    ("anchor_scales", (32, 64, 128, 256, -512)),
    ("backbone_strides", (4, 8, 16, 32)),
    ("anchor_ratios", ()),
    ("bbox_std_dev", (0.1, 0.1, 0.2)),
    ("pixel_std", (0.2, 0.0, 0.2)),
    ("pixel_mean", (0.5, 0.5)),
    ("rpn_nms_threshold", 1.5),
    ("detection_min_confidence", -0.1),
    ("pool_size", 0),
    ("detection_max_instances", 2.5),
    ("loss_weights", {"rpn_class": 1.0}),
])
def test_impossible_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        Config(**{field: value})


def test_rpn_negative_iou_above_positive_iou():
    with pytest.raises(ConfigError, match="rpn_negative_iou"):
        Config(rpn_negative_iou=0.8, rpn_positive_iou=0.7)
    Config(rpn_negative_iou=0.7, rpn_positive_iou=0.7)  # equal is allowed


def test_mask_shape_must_be_twice_mask_pool_size():
    with pytest.raises(ConfigError, match="mask_shape"):
        Config(mask_shape=(28, 28), mask_pool_size=7)
    with pytest.raises(ConfigError, match="mask_shape"):
        Config(mask_shape=(28, 14))
    Config(mask_shape=(14, 14), mask_pool_size=7)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        Config(num_classes=1)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip(tmp_path, name, suffix):
    config = PRESETS[name]()
    path = tmp_path / f"config{suffix}"
    config.save(path)
    loaded = Config.load(path)
    assert loaded == config
    # tuples come back as tuples, not lists (the model hashes and compares some of them)
    assert isinstance(loaded.anchor_scales, tuple) and isinstance(loaded.mask_shape, tuple)
    # the file is plain YAML / JSON that other tools read
    text = path.read_text()
    data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert data["num_classes"] == config.num_classes
    assert data["anchor_scales"] == list(config.anchor_scales)


def test_round_trip_keeps_a_changed_value(tmp_path):
    config = Config.torchvision(num_classes=7, rpn_nms_threshold=0.65, loss_weights={
        "rpn_class": 1.0, "rpn_bbox": 2.0, "mrcnn_class": 1.0, "mrcnn_bbox": 0.5, "mrcnn_mask": 1.0})
    config.save(tmp_path / "c.yaml")
    loaded = Config.load(tmp_path / "c.yaml")
    assert loaded.num_classes == 7 and loaded.rpn_nms_threshold == 0.65 and loaded.loss_weights["rpn_bbox"] == 2.0
    assert loaded != Config.torchvision(num_classes=7)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_unknown_field_in_file_is_named(tmp_path, suffix):
    data = Config.demo().to_dict()
    data["rpn_nms_treshold"] = 0.5  # a typo
    path = tmp_path / f"config{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="rpn_nms_treshold") as error:
        Config.load(path)
    assert str(path) in str(error.value)


def test_impossible_value_in_file_names_file_and_field(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("num_classes: 1\n")
    with pytest.raises(ConfigError, match="num_classes") as error:
        Config.load(path)
    assert str(path) in str(error.value)


def test_a_partial_file_fills_in_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("num_classes: 5\nanchor_scales: [16, 32, 64, 128, 256]\n")
    loaded = Config.load(path)
    assert loaded == dataclasses.replace(Config(), num_classes=5, anchor_scales=(16, 32, 64, 128, 256))


def test_unreadable_or_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml"):
        Config.load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        Config.load(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml"):
        Config.load(listing)


@pytest.mark.parametrize("text, field", [("rpn_nms_threshold: high\n", "rpn_nms_threshold"),
                                         ("anchor_scales: 32\n", "anchor_scales")])
def test_wrong_type_in_file_names_the_field(tmp_path, text, field):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field):
        Config.load(path)


def test_replace_validates():
    config = Config.demo()
    changed = config.replace(rpn_nms_threshold=0.6)
    assert changed.rpn_nms_threshold == 0.6 and config.rpn_nms_threshold == 0.7  # a copy
    assert changed.backbone == config.backbone
    with pytest.raises(ConfigError, match="num_classes"):
        config.replace(num_classes=1)
    with pytest.raises(ConfigError, match="learning_rate"):
        config.replace(learning_rate=-1.0)
    with pytest.raises(ConfigError, match="no_such_field"):
        config.replace(no_such_field=3)
