"""ViaDataset: the balloon layout (VIA 1 dict regions), VIA 2 lists and project files, classes, shapes."""
import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import ViaDataset
from maskrcnn.errors import DataError, DataWarning

pytestmark = [pytest.mark.filterwarnings("ignore::maskrcnn.errors.DataWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")]

W, H = 50, 40


def _polygon(xs, ys, **attributes):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": attributes}


def _rect(x, y, w, h, **attributes):
    return {"shape_attributes": {"name": "rect", "x": x, "y": y, "width": w, "height": h},
            "region_attributes": attributes}


def _write(tmp_path, data, names=("a.jpg", "b.jpg")):
    for name in names:
        Image.new("RGB", (W, H), (5, 5, 5)).save(tmp_path / name)
    path = tmp_path / "via_region_data.json"
    path.write_text(json.dumps(data))
    return path


def _balloon_style():
    """VIA 1: regions as a dict keyed "0", "1", ...; the key is filename + size, as VIA writes it."""
    return {
        "a.jpg123": {"filename": "a.jpg", "size": 123, "file_attributes": {},
                     "regions": {"0": _rect(10, 5, 20, 10, kind="red"), "1": _rect(0, 30, 5, 5, kind="blue")}},
        "b.jpg456": {"filename": "b.jpg", "size": 456, "file_attributes": {}, "regions": {}},
    }


def test_balloon_layout_one_class(tmp_path):
    dataset = ViaDataset(_write(tmp_path, _balloon_style()))  # image folder defaults to the JSON's folder
    assert dataset.class_names == ["BG", "object"]
    masks, class_ids = dataset.load_mask(0)
    assert masks.shape == (2, H, W) and class_ids.tolist() == [1, 1]
    assert masks[0].sum() == 200 and masks[1].sum() == 25
    target = dataset.load_target(0)
    assert target["boxes"].tolist() == [[10, 5, 30, 15], [0, 30, 5, 35]]
    assert dataset.load_mask(1)[0].shape == (0, H, W)  # no regions: a negative image


def test_single_class_name(tmp_path):
    dataset = ViaDataset(_write(tmp_path, _balloon_style()), class_names=["balloon"])
    assert dataset.class_names == ["BG", "balloon"]


def test_class_attribute_string_and_checkbox(tmp_path):
    data = _balloon_style()
    data["b.jpg456"]["regions"] = [_rect(1, 1, 4, 4, kind={"blue": True, "red": False})]
    dataset = ViaDataset(_write(tmp_path, data), class_attribute="kind")
    assert dataset.class_names == ["BG", "blue", "red"]  # sorted, so ids do not depend on file order
    assert dataset.load_mask(0)[1].tolist() == [2, 1]
    assert dataset.load_mask(1)[1].tolist() == [1]
    assert dataset.get_source_class_id(2, "via") == 2


def test_class_not_in_given_names(tmp_path):
    with pytest.raises(DataError, match="a.jpg.*'red'.*class_names"):
        ViaDataset(_write(tmp_path, _balloon_style()), class_attribute="kind", class_names=["blue"])


def test_via2_project_file_with_polygon_circle_ellipse(tmp_path):
    regions = [
        _polygon([10, 20, 20, 10], [10, 10, 20, 20]),  # edges at 10 and 20: 10 x 10 pixels, as in COCO
        {"shape_attributes": {"name": "circle", "cx": 35, "cy": 10, "r": 5}, "region_attributes": {}},
        {"shape_attributes": {"name": "ellipse", "cx": 35, "cy": 30, "rx": 8, "ry": 4, "theta": 0},
         "region_attributes": {}},
        {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}, "region_attributes": {}},
    ]
    entry = {"filename": "a.jpg", "size": 1, "regions": regions}
    project = {"_via_settings": {}, "_via_img_metadata": {"a.jpg1": entry}}
    with pytest.warns(DataWarning, match="region 3.*'point'"):
        dataset = ViaDataset(_write(tmp_path, project, names=("a.jpg",)), max_skip_fraction=0.5)
    masks, class_ids = dataset.load_mask(0)
    assert class_ids.tolist() == [1, 1, 1]
    assert masks[0].sum() == 100 and masks[0][10:20, 10:20].all()
    assert abs(int(masks[1].sum()) - np.pi * 25) < 6  # a disc of radius 5
    assert abs(int(masks[2].sum()) - np.pi * 32) < 6  # an ellipse 8 x 4
    # Pixel centres x + 0.5 within 27..43 and y + 0.5 within 26..34 (the ellipse's extent).
    assert dataset.load_target(0)["boxes"][1:].tolist() == [[30, 5, 40, 15], [27, 26, 43, 34]]


def test_bad_polygon_skipped_with_warning(tmp_path):
    data = _balloon_style()
    data["b.jpg456"]["regions"] = [_polygon([1, 2], [1, 2]), _rect(0, 0, 3, 3)]
    with pytest.warns(DataWarning, match="b.jpg.*region 0.*polygon"):
        dataset = ViaDataset(_write(tmp_path, data), max_skip_fraction=0.5)
    assert dataset.load_mask(1)[1].tolist() == [1]


def test_filename_outside_refused(tmp_path):
    data = _balloon_style()
    data["a.jpg123"]["filename"] = "../a.jpg"
    with pytest.raises(DataError, match="a.jpg123.*refused"):
        ViaDataset(_write(tmp_path, data))


def test_not_a_via_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="x.json.*filename"):
        ViaDataset(path)


def test_no_regions_at_all_refused_unless_allowed(tmp_path):
    data = {"b.jpg456": {"filename": "b.jpg", "size": 456, "regions": []}}
    with pytest.raises(DataError, match="no usable region"):
        ViaDataset(_write(tmp_path, data))
    assert len(ViaDataset(_write(tmp_path, data), allow_empty=True)) == 1
