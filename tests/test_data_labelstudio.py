"""LabelStudioDataset: percent polygons and rectangles, brush RLE, upload-prefixed paths, broken exports."""
import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import LabelStudioDataset, load_dataset_spec
from maskrcnn.data.labelstudio import decode_brush_rle
from maskrcnn.errors import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 40, 50


def brush_rle(values) -> list:
    """An rle-pack stream written as a string of bits: 8-bit words, every run a repeated chunk whose
    length - 1 is in a 16-bit field (sizes field 0), alternating with a literal chunk of one value."""
    bits = f"{len(values):032b}{7:05b}" + "".join(f"{15:04b}" for _ in range(4))
    index = 0
    values = list(values)
    while index < len(values):
        end = index
        while end < len(values) and values[end] == values[index] and end - index < 65536:
            end += 1
        if end - index == 1:  # a literal chunk of one value
            bits += "0" + "00" + f"{0:016b}" + f"{values[index]:08b}"
        else:
            bits += "1" + "00" + f"{end - index - 1:016b}" + f"{values[index]:08b}"
        index = end
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def _result(kind, value, result_id, labels):
    return {"id": result_id, "type": kind, "from_name": "label", "to_name": "image", "original_width": W,
            "original_height": H, "image_rotation": 0, "value": {**value, kind: labels}}


def _write(folder, tasks, images=("photo.png",)):
    for name in images:
        Image.new("RGB", (W, H)).save(folder / name)
    path = folder / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def test_decode_brush_rle_literal_and_repeated_chunks():
    values = [0] * 7 + [255] + [3, 3] + [0] * 300
    assert decode_brush_rle(brush_rle(values)).tolist() == values


def test_every_result_type_and_upload_prefix(tmp_path):
    brush = np.zeros((H, W), dtype=bool)
    brush[30:35, 40:48] = True
    brush[0, 0] = True
    rgba = np.repeat(brush.astype(np.uint8).ravel() * 255, 4)  # Label Studio encodes RGBA
    task = {"id": 12, "data": {"image": "/data/upload/1/3f2a1b9c-photo.png"}, "annotations": [
        {"id": 1, "was_cancelled": True, "result": []},
        {"id": 2, "result": [
            _result("polygonlabels", {"points": [[20, 12.5], [60, 12.5], [60, 37.5], [20, 37.5]]}, "p1", ["cat"]),
            _result("rectanglelabels", {"x": 0, "y": 50, "width": 10, "height": 25, "rotation": 0}, "r1", ["dog"]),
            _result("rectanglelabels", {"x": 40, "y": 0, "width": 10, "height": 25, "rotation": 90}, "r2", ["dog"]),
            _result("brushlabels", {"format": "rle", "rle": brush_rle(rgba)}, "b1", ["cat"]),
            {"id": "k1", "type": "keypointlabels", "value": {"x": 1, "y": 1, "keypointlabels": ["cat"]}},
        ]}]}
    with pytest.warns(DataWarning, match="annotation 'k1': result type 'keypointlabels'"):
        dataset = load_dataset_spec(f"labelstudio:{_write(tmp_path, [task])}:{tmp_path}")
    assert dataset.class_names == ["BG", "cat", "dog"]
    assert dataset.image_info[0]["id"] == 12 and dataset.image_info[0]["path"].endswith("photo.png")
    masks, class_ids = dataset.load_mask(0)
    assert class_ids.tolist() == [1, 2, 2, 1]
    assert masks[0].sum() == 200 and masks[0][5:15, 10:30].all()      # 20%..60% of 50, 12.5%..37.5% of 40
    assert masks[1].sum() == 50 and masks[1][20:30, 0:5].all()
    # 5 x 10 px from (20, 0), turned 90 degrees clockwise about its top-left corner: x 10..20, y 0..5
    assert masks[2].sum() == 50 and masks[2][0:5, 10:20].all()
    assert np.array_equal(masks[3], brush)


def test_image_found_with_the_hash_in_its_name_and_local_files(tmp_path):
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/3f2a1b9c-photo.png"}, "annotations": []},
             {"id": 2, "data": {"image": "/data/local-files/?d=sub/other.png"}, "annotations": []}]
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "sub" / "other.png")
    path = _write(tmp_path, tasks, images=("3f2a1b9c-photo.png",))
    dataset = LabelStudioDataset(path, allow_empty=True)
    assert [info["path"] for info in dataset.image_info] == [str(tmp_path / "3f2a1b9c-photo.png"),
                                                              str(tmp_path / "sub" / "other.png")]
    assert dataset.image_info[0]["height"] == H  # read from the image when no result gives the size


def test_broken_export_names_every_problem(tmp_path):
    good = _result("rectanglelabels", {"x": 0, "y": 0, "width": 50, "height": 50}, "ok", ["cat"])
    no_size = {**good, "id": "ns"}
    del no_size["original_width"]
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/1/aaaaaaaa-missing.png"}, "annotations": []},
        {"id": 2, "data": {"image": "photo.png"}, "annotations": [{"result": [
            good, no_size,
            _result("polygonlabels", {"points": [[1, 1], [5, 5]]}, "two", ["cat"]),
            _result("rectanglelabels", {"x": 0, "y": 0, "width": 0, "height": 5}, "flat", ["cat"]),
            _result("rectanglelabels", {"x": 200, "y": 0, "width": 10, "height": 5}, "out", ["cat"]),
            _result("brushlabels", {"format": "rle", "rle": [1, 2, 3]}, "cut", ["cat"]),
            _result("polygonlabels", {"points": [[1, 1], [5, 5], [9, 1]]}, "nolabel", [])]
            + [good] * 10}]},
        "not a task"]
    with pytest.raises(DataError) as error:
        LabelStudioDataset(_write(tmp_path, tasks))
    text = str(error.value)
    assert "3 problem(s)" in text
    assert "image 1: image '/data/upload/1/aaaaaaaa-missing.png' not found" in text
    assert "image 2, annotation 'ns': result needs positive whole-number original_width" in text
    assert "image '#2': task 2 is not an object with 'data'" in text
    dataset = LabelStudioDataset(_write(tmp_path, tasks), collect_errors=True)
    messages = [str(p) for p in dataset.load_problems if not p.fatal]
    for annotation, what in (("two", "polygon needs at least 3"), ("flat", "rectangle has zero or negative size"),
                             ("out", "its mask has no pixel inside"), ("cut", "brush RLE cannot be decoded"), ("nolabel", "value has no")):
        assert any(f"annotation '{annotation}': {what}" in m for m in messages), annotation
    assert dataset.num_instances(0) == 11
