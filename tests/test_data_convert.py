"""convert-data: any data set -> one COCO file that pycocotools loads and `coco:` reads back to the same masks."""
import base64
import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn.cli import main
from maskrcnn.data import CocoDataset, MaskFolderDataset, load_dataset_spec
from maskrcnn.data.convert import to_coco

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools"),
              pytest.mark.filterwarnings("ignore::maskrcnn.errors.DataWarning")]

H, W = 40, 50


def _labelme_folder(folder):
    (folder / "imgs").mkdir(parents=True)
    Image.new("RGB", (W, H)).save(folder / "imgs" / "a.png")
    part = np.zeros((4, 5), dtype=np.uint8)
    part[1:3, 1:4] = 255
    buffer = io.BytesIO()
    Image.fromarray(part).save(buffer, format="PNG")
    shapes = [{"label": "zebra", "points": [[10, 5], [30, 5], [30, 15], [10, 15]], "shape_type": "polygon"},
              {"label": "ant", "points": [[20, 20], [24, 23]], "shape_type": "mask",
               "mask": base64.b64encode(buffer.getvalue()).decode()}]
    (folder / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "imgs/a.png", "imageHeight": H,
                                               "imageWidth": W}))


def _same_masks(first, second):
    for index in range(len(first)):
        masks_a, ids_a = first.load_mask(index)
        masks_b, ids_b = second.load_mask(index)
        assert np.array_equal(masks_a, masks_b)
        assert [first.class_names[i] for i in ids_a] == [second.class_names[i] for i in ids_b]


def test_labelme_to_coco_round_trip(tmp_path):
    _labelme_folder(tmp_path / "data")
    out = tmp_path / "out" / "coco.json"
    assert main(["convert-data", "--data", f"labelme:{tmp_path / 'data'}", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["categories"] == [{"id": 1, "name": "ant"}, {"id": 2, "name": "zebra"}]
    assert data["images"][0]["file_name"] == "imgs/a.png"
    polygon, mask = data["annotations"]
    assert polygon["segmentation"] == [[10.0, 5.0, 30.0, 5.0, 30.0, 15.0, 10.0, 15.0]]  # polygons stay polygons
    assert polygon["bbox"] == [10.0, 5.0, 20.0, 10.0] and polygon["area"] == 200.0
    assert isinstance(mask["segmentation"], dict) and mask["area"] == 6.0  # masks become RLE
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))
    assert coco.annToMask(coco.loadAnns([2])[0])[21:23, 21:24].all()
    _same_masks(load_dataset_spec(f"labelme:{tmp_path / 'data'}"),
                load_dataset_spec(f"coco:{out}:{tmp_path / 'data'}"))


def test_coco_ids_and_crowd_kept(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    rle_mask = np.zeros((H, W), dtype=np.uint8)
    rle_mask[0:4, 0:10] = 1
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    source = {"images": [{"id": 17, "file_name": "a.png", "width": W, "height": H}],
              "categories": [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}],
              "annotations": [{"id": 5, "image_id": 17, "category_id": 90, "bbox": [10, 5, 20, 10],
                               "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
                              {"id": 6, "image_id": 17, "category_id": 3, "bbox": [0, 0, 10, 4], "iscrowd": 1,
                               "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}}]}
    (tmp_path / "src.json").write_text(json.dumps(source))
    data = to_coco(CocoDataset(tmp_path / "src.json"))
    assert sorted((c["id"], c["name"]) for c in data["categories"]) == [(3, "car"), (90, "toothbrush")]
    assert [(a["image_id"], a["category_id"], a["iscrowd"]) for a in data["annotations"]] == [(17, 90, 0), (17, 3, 1)]
    assert data["annotations"][1]["segmentation"]["counts"] == rle["counts"].decode()


def test_mask_folder_to_rle(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "images" / "p.png")
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[2:6, 3:9] = 1
    labels[20:30, 20:25] = 2
    Image.fromarray(labels).save(tmp_path / "masks" / "p_mask.png")
    dataset = MaskFolderDataset(tmp_path / "images", tmp_path / "masks")
    out = tmp_path / "coco.json"
    (out).write_text(json.dumps(to_coco(dataset)))
    back = CocoDataset(out, tmp_path / "images")
    assert [a["area"] for a in back.coco.dataset["annotations"]] == [24.0, 50.0]
    _same_masks(dataset, back)
