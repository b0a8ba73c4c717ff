"""LabelMeDataset: every shape type, group_id, embedded images, skipped shapes and broken files."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import LabelMeDataset, load_dataset_spec
from maskrcnn.errors import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 40, 50


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _shape(label, points, kind="polygon", group_id=None, **extra):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group_id, "flags": {}, **extra}


def _write(folder, name, shapes, image=True, image_path=None, **extra):
    stem = name.rsplit(".", 1)[0]
    if image:
        Image.new("RGB", (W, H), (9, 9, 9)).save(folder / f"{stem}.png")
    data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path or f"{stem}.png",
            "imageData": None, "imageHeight": H, "imageWidth": W, **extra}
    (folder / name).write_text(json.dumps(data))


def _mask_part():
    part = np.zeros((3, 4), dtype=np.uint8)
    part[0, 0] = part[2, 3] = part[1, 1] = 255
    return part


def test_every_shape_type(tmp_path):
    _write(tmp_path, "a.json", [
        _shape("cat", [[10, 5], [30, 5], [30, 15], [10, 15]]),                     # polygon, 200 px
        _shape("dog", [[30, 15], [10, 5]], "rectangle"),                            # corners in any order
        _shape("cat", [[25, 25], [25, 30]], "circle"),                              # radius 5
        _shape("dog", [[2, 30], [5, 32]], "mask", mask=_png_base64(_mask_part())),
        _shape("cat", [[0, 0], [4, 0], [4, 2], [0, 2]], group_id=1),                # these two: one instance
        _shape("cat", [[40, 30], [44, 30], [44, 32], [40, 32]], group_id=1),
        _shape("dog", [[1, 1]], "point"),
        _shape("dog", [[1, 1], [5, 5]], "line"),
        _shape("dog", [[1, 1], [5, 5], [9, 1]], "linestrip"),
    ])
    with pytest.warns(DataWarning, match="shape 6.*'point' has no area"):
        dataset = LabelMeDataset(tmp_path)
    assert dataset.class_names == ["BG", "cat", "dog"]
    masks, class_ids = dataset.load_mask(0)
    assert class_ids.tolist() == [1, 2, 1, 2, 1]
    assert masks.shape == (5, H, W)
    assert masks[0].sum() == 200 and masks[0][5:15, 10:30].all()
    assert np.array_equal(masks[1], masks[0])
    circle = [(x, y) for y in range(H) for x in range(W) if (x + 0.5 - 25) ** 2 + (y + 0.5 - 25) ** 2 <= 25]
    assert masks[2].sum() == len(circle) and all(masks[2][y, x] for x, y in circle)
    expected = np.zeros((H, W), dtype=bool)
    expected[30:33, 2:6] = _mask_part() > 0
    assert np.array_equal(masks[3], expected)
    assert masks[4].sum() == 16 and masks[4][0:2, 0:4].all() and masks[4][30:32, 40:44].all()
    assert [p.annotation_id for p in dataset.load_problems] == ["shape 6", "shape 7", "shape 8"]


def test_imagepath_in_another_folder_and_embedded_image(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (W, H), (200, 0, 0)).save(tmp_path / "images" / "x.png")
    _write(tmp_path / "labels", "x.json", [_shape("a", [[0, 0], [9, 0], [9, 9]])], image=False,
           image_path="..\\images\\x.png")
    embedded = np.zeros((H, W, 3), dtype=np.uint8)
    embedded[:, :, 1] = 77
    _write(tmp_path / "labels", "y.json", [_shape("a", [[0, 0], [9, 0], [9, 9]])], image=False,
           image_path="gone.png", imageData=_png_base64(embedded))
    dataset = load_dataset_spec(f"labelme:{tmp_path}")
    assert [info["id"] for info in dataset.image_info] == ["labels/x.json", "labels/y.json"]
    assert dataset.load_image(0)[0, 0].tolist() == [200, 0, 0]
    assert dataset.load_image(1)[0, 0].tolist() == [0, 77, 0]


def test_empty_and_bad_shapes_are_dropped_with_their_names(tmp_path):
    _write(tmp_path, "a.json", [
        _shape("a", [[0, 0], [9, 0], [9, 9]]),
        _shape("a", [[60, 5], [70, 5], [70, 15]]),         # outside the 50-wide image
        _shape("a", [[3.1, 3.1], [3.3, 3.3]], "rectangle"),  # sub-pixel
        _shape("a", [[0, 0], [5, 5]]),                      # a two-point polygon
    ] + [_shape("a", [[0, 0], [9, 0], [9, 9]])] * 20)
    with pytest.warns(DataWarning) as caught:
        dataset = LabelMeDataset(tmp_path, max_skip_fraction=0.5)
    messages = [str(w.message) for w in caught]
    assert any("'a.json', annotation 'shape 1': its mask has no pixel inside the 50x40 image" in m for m in messages)
    assert any("annotation 'shape 2': its mask has no pixel" in m for m in messages)
    assert any("annotation 'shape 3': polygon has 2 points" in m for m in messages)
    assert dataset.num_instances(0) == 21
    assert dataset.load_mask(0)[0].any(axis=(1, 2)).all()


def test_broken_files_are_all_named(tmp_path):
    _write(tmp_path, "good.json", [_shape("a", [[0, 0], [9, 0], [9, 9]])])
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    _write(tmp_path, "lost.json", [_shape("a", [[0, 0], [9, 0], [9, 9]])], image=False, image_path="lost.png")
    _write(tmp_path, "escape.json", [], image=False, image_path="../../etc/passwd")
    with pytest.raises(DataError) as error:
        LabelMeDataset(tmp_path)
    text = str(error.value)
    assert "4 problem(s)" in text
    for name in ("broken.json: not a valid JSON file", "other.json: not a LabelMe file",
                 "lost.json: image 'lost.png' not found", "escape.json", "outside the image folder"):
        assert name in text
    dataset = LabelMeDataset(tmp_path, collect_errors=True)
    assert len(dataset) == 1 and sum(p.fatal for p in dataset.load_problems) == 4


def test_missing_folder_and_no_files(tmp_path):
    with pytest.raises(DataError, match="LabelMe folder not found"):
        LabelMeDataset(tmp_path / "nope")
    with pytest.raises(DataError, match="no LabelMe .json file"):
        LabelMeDataset(tmp_path)
