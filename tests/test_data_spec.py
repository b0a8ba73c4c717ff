"""load_dataset_spec (data/spec.py): each spec form gives its reader; a bad spec lists the accepted forms."""
import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import CocoDataset, MaskFolderDataset, ShapesDataset, ViaDataset, load_dataset_spec
from maskrcnn.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def test_specs(tmp_path):
    shapes = load_dataset_spec("shapes:3:64x80:9")
    assert isinstance(shapes, ShapesDataset) and len(shapes) == 3 and shapes.load_image(0).shape == (64, 80, 3)
    assert np.array_equal(shapes.load_image(1), ShapesDataset(3, 64, 80, seed=9).load_image(1))
    assert load_dataset_spec("shapes:2").load_image(0).shape == (128, 128, 3)

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "width": 8, "height": 8, "file_name": "a.png"}], "categories": [], "annotations": []}
    (tmp_path / "c.json").write_text(json.dumps(data))
    coco = load_dataset_spec(f"coco:{tmp_path / 'c.json'}", allow_empty=True)  # image folder = the JSON's folder
    assert isinstance(coco, CocoDataset) and coco.image_info[0]["path"] == str(tmp_path / "a.png")

    (tmp_path / "v.json").write_text(json.dumps({"k": {"filename": "a.png", "size": 1, "regions": []}}))
    assert isinstance(load_dataset_spec(f"via:{tmp_path / 'v.json'}:{tmp_path}", allow_empty=True), ViaDataset)

    (tmp_path / "m").mkdir()
    Image.fromarray(np.ones((8, 8), dtype=np.uint8)).save(tmp_path / "m" / "a_mask.png")
    assert isinstance(load_dataset_spec(f"masks:{tmp_path}:{tmp_path / 'm'}"), MaskFolderDataset)


@pytest.mark.parametrize("spec", ["", "pascalvoc:x", "coco", "shapes:many", "shapes:3:big", "masks:onlyone", "coco::x"])
def test_bad_spec_lists_the_accepted_forms(spec):
    with pytest.raises(DataError, match="shapes:COUNT|must be"):
        load_dataset_spec(spec)
