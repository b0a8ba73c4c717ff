"""CocoDataset: masks compared with pycocotools' own decoding, id mapping, and every robustness case."""
import copy
import json
import warnings

import numpy as np
from rle_helpers import uncompressed_rle
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from maskrcnn.data import CocoDataset
from maskrcnn.errors import DataError, DataWarning

# Warnings are asserted with pytest.warns where they matter; elsewhere they are expected noise.
pytestmark = [pytest.mark.filterwarnings("ignore::maskrcnn.errors.DataWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")]

W, H = 40, 30
# A square of columns 5..14 and rows 5..14 as a polygon: COCO polygons trace pixel edges, x 5..15, y 5..15.
SQUARE = [5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0]


def _mask_block(x1, y1, x2, y2):
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def _compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _data():
    return {
        "images": [
            {"id": 1, "width": W, "height": H, "file_name": "one.png"},
            {"id": 2, "width": W, "height": H, "file_name": "sub/two.png"},
            {"id": 3, "width": W, "height": H, "file_name": "three.png"},  # no annotations: a negative
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "segmentation": [SQUARE], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 12, "bbox": [20, 2, 10, 6],
             "segmentation": _compressed_rle(_mask_block(20, 2, 30, 8)), "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [0, 20, 40, 10],
             "segmentation": uncompressed_rle(_mask_block(0, 20, 40, 30)), "iscrowd": 1},
            {"id": 20, "image_id": 2, "category_id": 7, "bbox": [30, 10, 6, 6],
             "segmentation": [[30, 10, 36, 10, 36, 16, 30, 16]], "iscrowd": 0},
        ],
    }


def _write(tmp_path, data, images=True):
    if images:
        for image in data.get("images", []):
            if "file_name" not in image:
                continue
            path = tmp_path / image["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                Image.new("RGB", (W, H), (9, 9, 9)).save(path)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def _load(tmp_path, data, **kwargs):
    return CocoDataset(_write(tmp_path, data), tmp_path, **kwargs)


def test_instances_classes_boxes_areas(tmp_path):
    data = _data()
    dataset = _load(tmp_path, data)
    assert dataset.class_names == ["BG", "cat", "dog", "bird"]
    assert [info["id"] for info in dataset.image_info] == [1, 2, 3]
    masks, class_ids = dataset.load_mask(0)
    assert class_ids.tolist() == [1, 3, -2]  # cat, bird, crowd dog
    for mask, annotation in zip(masks, data["annotations"][:3]):
        np.testing.assert_array_equal(mask, dataset.coco.annToMask(annotation).astype(bool))
    assert [int(m.sum()) for m in masks] == [100, 60, 400]
    target = dataset.load_target(0)  # crowd left out
    assert target["labels"].tolist() == [1, 3]
    assert target["boxes"].tolist() == [[5, 5, 15, 15], [20, 2, 30, 8]]
    image, _ = dataset[0]
    assert image.shape == (3, H, W)


def test_image_without_annotations_is_a_negative(tmp_path):
    dataset = _load(tmp_path, _data())
    masks, class_ids = dataset.load_mask(2)
    assert masks.shape == (0, H, W) and class_ids.shape == (0,)
    target = dataset.load_target(2)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["masks"].shape == (0, H, W)


def test_polygon_and_both_rles_give_the_same_mask(tmp_path):
    data = _data()
    square = _mask_block(5, 5, 15, 15)
    data["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "segmentation": [SQUARE]},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [5, 5, 10, 10], "segmentation": _compressed_rle(square)},
        {"id": 3, "image_id": 3, "category_id": 3, "bbox": [5, 5, 10, 10], "segmentation": uncompressed_rle(square)},
    ]
    dataset = _load(tmp_path, data)
    decoded = [dataset.load_mask(i)[0][0] for i in range(3)]
    for mask in decoded:
        np.testing.assert_array_equal(mask, square.astype(bool))
    # and pycocotools decodes each of the three to the same mask too
    for annotation in data["annotations"]:
        np.testing.assert_array_equal(dataset.coco.annToMask(copy.deepcopy(annotation)), square)


def test_gapped_category_ids_round_trip(tmp_path):
    dataset = _load(tmp_path, _data())
    assert [dataset.get_source_class_id(i, "coco") for i in (1, 2, 3)] == [3, 7, 12]
    assert [dataset.map_source_class_id(f"coco.{c}") for c in (3, 7, 12)] == [1, 2, 3]


def test_coco_object_is_usable_for_evaluation(tmp_path):
    dataset = _load(tmp_path, _data())
    assert sorted(dataset.coco.getImgIds()) == [1, 2, 3]
    assert sorted(dataset.coco.getCatIds()) == [3, 7, 12]
    assert dataset.coco.anns[10]["area"] == 100.0  # filled in from the mask when the file has none


# ---------------------------------------------------------------------------------------------- malformed files
def test_json_that_does_not_parse(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        CocoDataset(path, tmp_path)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_list(tmp_path, key):
    data = _data()
    del data[key]
    with pytest.raises(DataError, match=f"annotations.json.*{key}"):
        _load(tmp_path, data)


@pytest.mark.parametrize("field", ["width", "height", "file_name"])
def test_image_missing_field(tmp_path, field):
    data = _data()
    del data["images"][1][field]
    with pytest.raises(DataError, match=f"annotations.json: image 2: missing '{field}'"):
        _load(tmp_path, data)


@pytest.mark.parametrize("field", ["bbox", "image_id"])
def test_annotation_missing_field(tmp_path, field):
    data = _data()
    del data["annotations"][0][field]
    with pytest.raises(DataError, match=f"annotations.json: annotation 10: missing '{field}'"):
        _load(tmp_path, data)


def test_duplicate_image_id(tmp_path):
    data = _data()
    data["images"][1]["id"] = 1
    with pytest.raises(DataError, match="annotations.json: image id 1 appears twice"):
        _load(tmp_path, data)


def test_duplicate_annotation_id(tmp_path):
    data = _data()
    data["annotations"][1]["id"] = 10
    with pytest.raises(DataError, match="annotations.json: annotation id 10 appears twice"):
        _load(tmp_path, data)


def test_unknown_category(tmp_path):
    data = _data()
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(DataError, match="annotation 10.*category_id 99"):
        _load(tmp_path, data)


def test_unknown_image(tmp_path):
    data = _data()
    data["annotations"][3]["image_id"] = 42
    with pytest.raises(DataError, match="annotation 20.*image_id 42"):
        _load(tmp_path, data)


def test_rle_of_another_size(tmp_path):
    data = _data()
    data["annotations"][1]["segmentation"]["size"] = [H + 1, W]
    with pytest.raises(DataError, match="annotation 11.*RLE size"):
        _load(tmp_path, data)


@pytest.mark.parametrize("file_name", ["/etc/passwd", "../outside.png", "sub/../../outside.png", "C:\\x.png"])
def test_file_name_escaping_the_image_dir_is_refused(tmp_path, file_name):
    data = _data()
    data["images"][2]["file_name"] = file_name
    (tmp_path / "images").mkdir()
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="image 3.*refused"):
        CocoDataset(path, tmp_path / "images")


def test_image_size_disagreeing_with_the_file(tmp_path):
    data = _data()
    _write(tmp_path, data)
    Image.new("RGB", (W + 5, H), 0).save(tmp_path / "three.png")  # the file on disk is wider than annotated
    dataset = CocoDataset(tmp_path / "annotations.json", tmp_path)
    dataset.load_image(0)
    with pytest.raises(DataError, match="three.png.*annotations"):
        dataset.load_image(2)


# ---------------------------------------------------------------------------------------------- skipped and repaired
def _many(data, extra=40):
    """Add clean annotations so that a single skip stays under max_skip_fraction."""
    for i in range(extra):
        data["annotations"].append({"id": 1000 + i, "image_id": 3, "category_id": 3, "bbox": [1, 1, 3, 3],
                                    "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]})
    return data


@pytest.mark.parametrize("bbox", [[5, 5, 0, 10], [5, 5, 10, -1]])
def test_zero_size_box_is_skipped_with_a_warning(tmp_path, bbox):
    data = _many(_data())
    data["annotations"][0]["bbox"] = bbox
    with pytest.warns(DataWarning, match="annotation 10.*zero or negative"):
        dataset = _load(tmp_path, data)
    assert dataset.load_mask(0)[1].tolist() == [3, -2]
    assert any(p.annotation_id == 10 for p in dataset.load_problems)


def test_box_entirely_outside_is_skipped(tmp_path):
    data = _many(_data())
    data["annotations"][0]["bbox"] = [W + 5, 0, 10, 10]
    with pytest.warns(DataWarning, match="annotation 10.*entirely outside"):
        dataset = _load(tmp_path, data)
    assert 1 not in dataset.load_mask(0)[1].tolist()


def test_box_partly_outside_is_clipped(tmp_path):
    data = _data()
    data["annotations"][3]["bbox"] = [30, 10, 20, 6]  # reaches x = 50 in a 40 wide image
    with pytest.warns(DataWarning, match="annotation 20.*clipped"):
        dataset = _load(tmp_path, data)
    record = dataset.image_info[1]["annotations"][0]
    assert record["box"] == (30.0, 10.0, 40.0, 16.0)
    assert dataset.load_mask(1)[1].tolist() == [2]


def test_bad_polygon_dropped_instance_kept(tmp_path):
    data = _data()
    data["annotations"][0]["segmentation"] = [SQUARE, [1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7]]
    with pytest.warns(DataWarning, match="annotation 10.*polygon 1"):
        dataset = _load(tmp_path, data)
    masks, class_ids = dataset.load_mask(0)
    assert class_ids[0] == 1 and masks[0].sum() == 100


def test_instance_without_valid_polygon_is_dropped(tmp_path):
    data = _many(_data())
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    with pytest.warns(DataWarning, match="annotation 10.*no valid polygon"):
        dataset = _load(tmp_path, data)
    assert dataset.load_mask(0)[1].tolist() == [3, -2]


def test_summary_warning_and_too_many_skips(tmp_path):
    data = _many(_data(), extra=16)  # 20 instances; one skip is 5 %, two are 10 %
    data["annotations"][0]["bbox"] = [5, 5, 0, 0]
    with pytest.warns(DataWarning, match=r"skipped 1 of 20 instances \(1 zero-size boxes\)"):
        _load(tmp_path, data)
    data["annotations"][1]["bbox"] = [5, 5, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match="skipped 2 of 20.*max_skip_fraction"):
            _load(tmp_path, data)
        _load(tmp_path, data, max_skip_fraction=0.2)


def test_no_usable_instance_refused_unless_allowed(tmp_path):
    data = _data()
    data["annotations"] = [a for a in data["annotations"] if a["iscrowd"]]  # crowd only
    with pytest.raises(DataError, match="no usable instance.*allow_empty"):
        _load(tmp_path, data)
    data["annotations"] = []
    dataset = _load(tmp_path, data, allow_empty=True)
    assert len(dataset) == 3 and dataset.load_mask(0)[0].shape == (0, H, W)


def test_misspelled_segmentation_key_is_reported_once_naming_it(tmp_path):
    data = _data()
    for annotation in data["annotations"]:
        annotation["segmentaton"] = annotation.pop("segmentation")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as raised:
            _load(tmp_path, data)
    message = str(raised.value)
    assert "'segmentaton'" in message and "4 annotation(s) (10, 11, 12, 20)" in message and "rename it" in message
    assert not [w for w in caught if issubclass(w.category, DataWarning)]  # not one line per annotation


def test_too_many_skipped_says_which_flag_allows_them(tmp_path):
    data = _data()
    data["annotations"][0]["bbox"] = [5, 5, 0, 10]
    data["annotations"][3]["bbox"] = [5, 5, 0, 10]  # 2 of 4 skipped
    with pytest.warns(DataWarning), pytest.raises(DataError) as raised:
        _load(tmp_path, data)
    assert "--max-skip-fraction 0.51" in str(raised.value) and "max_skip_fraction=0.51" in str(raised.value)
    with pytest.warns(DataWarning):
        assert len(_load(tmp_path, data, max_skip_fraction=0.51)) == 3
