"""Validation of a data set (data/validate.py): `maskrcnn validate` lists every problem of a file in one run,
validate_dataset finds broken images and masks and includes load-time skips; building the data set names every
fatal problem."""
import json

import pytest
from files_dataset import Files
from PIL import Image

from maskrcnn.cli import main
from maskrcnn.data import CocoDataset, validate_dataset
from maskrcnn.errors import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 40, 50
SQUARE = [[10, 5, 30, 5, 30, 15, 10, 15]]


def _mixed(tmp_path):
    for name in ("good.png", "other.png"):
        Image.new("RGB", (W, H), (50, 60, 70)).save(tmp_path / name)
    full = (tmp_path / "good.png").read_bytes()
    Image.new("RGB", (W, H)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])  # truncated
    images = [{"id": 1, "file_name": "good.png", "width": W, "height": H},
              {"id": 2, "file_name": "../outside.png", "width": W, "height": H},
              {"id": 3, "file_name": "other.png", "height": H},
              {"id": 4, "file_name": "cut.png", "width": W, "height": H}]
    annotations = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": SQUARE},
                   {"id": 11, "image_id": 1, "category_id": 9, "bbox": [10, 5, 20, 10], "segmentation": SQUARE},
                   {"id": 12, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10],
                    "segmentation": [[1, 1, 5, 5]]},
                   {"id": 13, "image_id": 1, "category_id": 1, "bbox": [10, 5, 0, 10], "segmentation": SQUARE},
                   {"id": 14, "image_id": 4, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": SQUARE},
                   {"id": 15, "image_id": 2, "category_id": 1, "bbox": [10, 5, 20, 10], "segmentation": SQUARE}]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "cat"}]}))
    assert full  # the good image is whole
    return path


def test_validate_lists_every_problem_once(tmp_path, capsys):
    path = _mixed(tmp_path)
    assert main(["validate", "--data", f"coco:{path}"]) == 1
    lines = capsys.readouterr().out.splitlines()
    expected = [("error:", "image 2: file name '../outside.png' points outside the image folder"),
                ("error:", "image 3: missing 'width'"),
                ("error:", "annotation 11", "category_id 9 is not in 'categories'"),
                ("annotation 12", "polygon 0 (4 coordinates)"),
                ("annotation 12", "no valid polygon left"),
                ("annotation 13", "zero or negative width or height"),
                ("error:", "image 4: cannot load the image")]
    for pieces in expected:
        matching = [line for line in lines if all(piece in line for piece in pieces)]
        assert len(matching) == 1, (pieces, lines)
    assert not any("annotation 15" in line for line in lines)  # its image is already reported
    assert lines[-1] == "2 images checked, 7 problem(s), 4 of them fatal (training refuses the data set until " \
                        "they are fixed)"


def test_building_the_data_set_names_every_fatal_problem(tmp_path):
    with pytest.raises(DataError) as error:
        CocoDataset(_mixed(tmp_path), max_skip_fraction=1.0)
    text = str(error.value)
    assert "3 problem(s) make the data set unusable" in text
    for piece in ("outside.png", "image 3: missing 'width'", "annotation 11: category_id 9"):
        assert piece in text


def test_validate_lists_every_problem(tmp_path):
    dataset = Files(tmp_path, [(4, 4)] * 4)
    (tmp_path / "1.png").write_bytes(b"")
    Image.new("RGB", (5, 5)).save(tmp_path / "3.png")  # masks are made from the size, so they still agree
    original = dataset.load_mask

    def broken(index):
        masks, ids = original(index)
        if index == 2:
            masks[0] = False  # an empty mask
            masks = masks[:, :, :3]  # and a size mismatch
        return masks, ids

    dataset.load_mask = broken
    dataset.load_problems = []
    problems = validate_dataset(dataset)
    messages = [(p.image_id, p.message) for p in problems]
    assert any(i == 1 and "0 bytes" in m for i, m in messages)
    assert any(i == 2 and "empty mask" in m for i, m in messages)
    assert any(i == 2 and "4x3" in m for i, m in messages)
    assert not any(i in (0, 3) for i, _ in messages)
    assert all(p.path.endswith(f"{p.image_id}.png") for p in problems)


def test_validate_includes_load_time_skips(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    polygon = [1, 1, 9, 1, 9, 9, 1, 9]
    data = {"images": [{"id": 1, "width": 20, "height": 20, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 3], "segmentation": [polygon]},
                            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8],
                             "segmentation": [polygon]}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.warns(DataWarning):
        dataset = CocoDataset(tmp_path / "c.json", tmp_path, max_skip_fraction=0.5)
    problems = validate_dataset(dataset)
    assert [p.annotation_id for p in problems] == [5]
