"""How a data set's objects fit a config (data/config_fit.py): size buckets per anchor size, instances per image,
and suggestions whose values are worked out by hand; `maskrcnn validate` prints the report and its exit status
stays that of the problems."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from maskrcnn import Config
from maskrcnn.cli import main
from maskrcnn.data import Dataset
from maskrcnn.data.config_fit import ObjectCensus, fit_report, size_buckets
from maskrcnn.runs import apply_overrides

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def squares(height: int, width: int, sides) -> np.ndarray:
    """(N, H, W) bool: one filled square of each side at the top-left corner."""
    masks = np.zeros((len(sides), height, width), dtype=bool)
    for i, side in enumerate(sides):
        masks[i, :side, :side] = True
    return masks


def census_of(*images) -> ObjectCensus:
    """images: (height, width, sides) each, every square of class 1."""
    census = ObjectCensus()
    for height, width, sides in images:
        census.add(squares(height, width, sides), np.ones(len(sides), dtype=np.int64))
    return census


def counts(report) -> list[int]:
    return [bucket.count for bucket in report.buckets]


def test_size_buckets_meet_at_the_geometric_mean_of_neighbouring_anchors():
    sizes = [4, 6, 10, 16, 20, 40, 60, 100, 150, 300, 600, 1024, 1100]
    buckets = size_buckets(np.array(sizes, dtype=float), (32, 64, 128, 256, 512))
    # under 16 | 16-45.25 | 45.25-90.51 | 90.51-181.02 | 181.02-362.04 | 362.04-1024 | over 1024
    assert [b.count for b in buckets] == [3, 3, 1, 2, 1, 2, 1]
    assert [b.anchor for b in buckets] == [None, 32, 64, 128, 256, 512, None]
    assert buckets[0].high == 16 and buckets[-1].low == 1024
    assert buckets[2].low == pytest.approx(math.sqrt(32 * 64)) and buckets[2].high == pytest.approx(math.sqrt(64 * 128))


def test_crowd_regions_and_empty_masks_are_not_objects():
    census = ObjectCensus()
    masks = squares(10, 10, [3, 4, 5])
    masks[2] = False  # empty
    census.add(masks, np.array([1, -1, 1]))  # the second is a crowd region
    census.add(np.zeros((0, 10, 10), dtype=bool), np.zeros(0, dtype=np.int64))
    assert census.instances_per_image == [1, 0]
    assert census.resized_sizes(Config.demo()).tolist() == [3.0]


def test_percentile_of_instances_is_the_nearest_rank():
    census = ObjectCensus()
    census.instances_per_image = [1] * 98 + [30, 50]
    assert census.instances_at_percentile(99) == 30  # the 99th of 100 counts
    census.instances_per_image = list(range(1, 11))
    assert census.instances_at_percentile(99) == 10  # ceil(9.9) = the 10th of 10


def test_small_objects_without_resizing_suggest_anchors_two_octaves_smaller():
    config = Config.torchvision(num_classes=2, image_resize_mode="none")  # anchors 32..512
    report = fit_report(census_of((200, 200, [4, 6, 10, 20, 40, 60, 100, 150])), config)
    assert counts(report) == [3, 2, 1, 2, 0, 0, 0]
    # 3 of 8 under 16. One octave down (16..256) leaves 4 and 6 under 8; two (8..128) leave none under 4 and
    # none over 256. No "larger images" alternative: this config does not resize.
    (suggestion,) = report.suggestions
    assert str(suggestion) == ("suggestion: 37.5% of objects are under 16 px after resizing, below half the smallest "
                               "anchor (32 px): --set anchor_scales=[8,16,32,64,128]")
    assert suggestion.overrides == ("anchor_scales=[8,16,32,64,128]",)
    assert not fit_report(census_of((200, 200, [4, 6, 10, 20, 40, 60, 100, 150])),
                          apply_overrides(config, suggestion.overrides)).suggestions


def test_sizes_are_measured_after_the_resize_and_larger_images_are_the_alternative():
    config = Config.torchvision(num_classes=2)  # shorter side 800, longer at most 1333
    # A 100x150 image is resized by min(800 / 100, 1333 / 150) = 8: sides 1, 1, 1, 3, 10 -> 8, 8, 8, 24, 80 px.
    census = census_of((100, 150, [1, 1, 1, 3, 10]))
    report = fit_report(census, config, config_name="the torchvision preset")
    assert report.lines()[0] == ("objects against the torchvision preset (shorter side resized to 800 px, longer side "
                                 "at most 1333 px):")
    assert counts(report) == [3, 1, 1, 0, 0, 0, 0]
    # Anchors 16..256 take 8 px (not under 8); images twice as large make them 16, 16, 16, 48, 160: all in reach.
    (suggestion,) = report.suggestions
    assert suggestion.message == ("60% of objects are under 16 px after resizing, below half the smallest anchor "
                                  "(32 px): --set anchor_scales=[16,32,64,128,256], or larger images: "
                                  "--set image_min_dim=1600 --set image_max_dim=2666")
    assert not fit_report(census, apply_overrides(config, ["image_min_dim=1600", "image_max_dim=2666"])).suggestions


def test_large_objects_suggest_larger_anchors():
    config = Config.demo(num_classes=2)  # anchors 8..128, not resized
    report = fit_report(census_of((400, 400, [300, 300, 50])), config)
    assert counts(report) == [0, 0, 0, 0, 1, 0, 2]
    (suggestion,) = report.suggestions
    assert suggestion.message == ("66.7% of objects are over 256 px after resizing, above twice the largest anchor "
                                  "(128 px): --set anchor_scales=[16,32,64,128,256]")


def test_objects_too_small_and_too_large_at_once_get_no_anchor_values():
    config = Config.demo(num_classes=2, anchor_scales=(64, 128, 256, 512, 1024))  # in reach: 32..2048 px
    census = ObjectCensus()  # sizes as they would be in a 30000 px image, not resized
    census.sizes_by_image_size = {(30000, 30000): [np.array([1.0, 1.0, 20000.0, 20000.0, 300.0])]}
    census.instances_per_image = [5]
    # Shifted by up to three octaves (8..128 to 512..8192), the anchors never reach 1 px (under 4 at best) nor
    # 20000 px (over 16384 at best): no shift leaves fewer than 2 + 2 outside.
    (suggestion,) = fit_report(census, config).suggestions
    assert suggestion.overrides == ()
    assert suggestion.message == ("40% of objects are under 32 px after resizing, below half the smallest anchor "
                                  "(64 px) and 40% of objects are over 2048 px after resizing, above twice the largest "
                                  "anchor (1024 px); the objects span more sizes than the anchors reach, and no "
                                  "power-of-two shift of anchor_scales brings more of them within reach")


def test_crowded_images_suggest_a_higher_detection_cap_and_a_larger_roi_sample():
    config = Config.demo(num_classes=2)  # detection_max_instances 20, 64 ROIs x 0.5 = 32 positives
    census = census_of((128, 128, [20] * 40), (128, 128, [20] * 10))
    report = fit_report(census, config)
    assert (report.max_instances, report.percentile_instances, report.positive_rois) == (40, 40, 32)
    detection, sample = report.suggestions
    assert str(detection) == ("suggestion: images hold up to 40 instances but detection_max_instances is 20: "
                              "--set detection_max_instances=40")
    assert sample.overrides == ("train_rois_per_image=80",)  # 40 positives / 0.5
    assert "the 99th percentile image holds 40 instances, more than the 32 positive ROIs" in sample.message
    assert not fit_report(census, apply_overrides(config, detection.overrides + sample.overrides)).suggestions
    # 412 instances against the default 100: rounded up to the next round hundred.
    config = Config.torchvision(num_classes=2, image_resize_mode="none", train_rois_per_image=2048)
    (detection,) = fit_report(census_of((100, 100, [40] * 412)), config).suggestions
    assert detection.overrides == ("detection_max_instances=500",)


def test_objects_that_fit_give_no_suggestion():
    report = fit_report(census_of((128, 128, [20, 40, 60]), (128, 128, [])), Config.demo(num_classes=2))
    assert report.suggestions == []
    assert not any(line.startswith("suggestion:") for line in report.lines())
    assert "  instances per image: max 3, 99th percentile 3 (2 images)" in report.lines()


# ------------------------------------------------------------------------------------------- maskrcnn validate
def _coco(tmp_path):
    """Two 200x200 images: three 2 px squares, a 30 px and a 70 px one; and 25 squares of 30 px."""
    def square(x, y, side):
        return [[x, y, x + side, y, x + side, y + side, x, y + side]]

    images, annotations = [], []
    for image_id, sides in ((1, [2, 2, 2, 30, 70]), (2, [30] * 25)):
        Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 200, "height": 200})
        for number, side in enumerate(sides):
            x, y = 5 + 6 * (number % 25), 5 + 20 * (number % 5)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, side, side], "segmentation": square(x, y, side), "iscrowd": 0})
    path = tmp_path / "objects.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dot"}]}))
    return path


def test_validate_prints_the_report_and_its_suggestions_without_failing(tmp_path, capsys):
    path = _coco(tmp_path)
    assert main(["validate", "--data", f"coco:{path}", "--preset", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "objects against the demo preset (images not resized):"
    # The demo's anchors 8..128: the 2 px squares (2-3 px rasterised) under 4, 26 of ~30 px, one of ~70 px.
    table = {line.split(":")[0].strip(): int(line.split()[-2]) for line in lines[2:9]}
    assert table == {"under 4": 3, "4-11": 0, "11-23": 0, "23-45": 26, "45-91": 1, "91-256": 0, "over 256": 0}
    assert [line for line in lines if line.startswith("suggestion:")] == [
        "suggestion: 10% of objects are under 4 px after resizing, below half the smallest anchor (8 px): "
        "--set anchor_scales=[4,8,16,32,64]",
        "suggestion: images hold up to 25 instances but detection_max_instances is 20: --set detection_max_instances=30"]
    assert lines[-1] == "2 images checked, 0 problem(s)"
    # The suggested settings, given back with --set, fit.
    assert main(["validate", "--data", f"coco:{path}", "--preset", "demo", "--set", "anchor_scales=[4,8,16,32,64]",
                 "--set", "detection_max_instances=30"]) == 0
    out = capsys.readouterr().out
    assert "the demo preset with anchor_scales=[4,8,16,32,64], detection_max_instances=30" in out
    assert "suggestion:" not in out


def test_validate_compares_with_a_config_file_or_the_weights_config(tmp_path, capsys):
    from maskrcnn import MaskRCNN, save

    path = _coco(tmp_path)
    Config.demo(num_classes=2, detection_max_instances=50).save(tmp_path / "config.yaml")
    assert main(["validate", "--data", f"coco:{path}", "--config", str(tmp_path / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"objects against {tmp_path / 'config.yaml'} (images not resized):" in out
    assert "detection_max_instances=" not in out and "anchor_scales=[4,8,16,32,64]" in out
    save(MaskRCNN(Config.demo(num_classes=2, anchor_scales=(4, 8, 16, 32, 64))), tmp_path / "model.pt")
    assert main(["validate", "--data", f"coco:{path}", "--weights", str(tmp_path / "model.pt")]) == 0
    out = capsys.readouterr().out
    assert f"objects against the config of {tmp_path / 'model.pt'}" in out and "anchor_scales=" not in out
    assert main(["validate", "--data", f"coco:{path}", "--preset", "demo", "--config", "x.yaml"]) == 2
    assert "give one of --config, --preset and --weights" in capsys.readouterr().err


def test_validate_defaults_to_the_torchvision_preset_and_shapes_fit_it(capsys):
    assert main(["validate", "--data", "shapes:6"]) == 0
    out = capsys.readouterr().out
    assert "objects against the torchvision preset (shorter side resized to 800 px" in out
    assert "suggestion:" not in out
