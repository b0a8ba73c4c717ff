"""YoloDataset: data.yaml (names as list or dict), splits, normalised polygons, boxes, broken labels."""
import pytest
from PIL import Image

from maskrcnn.data import YoloDataset, load_dataset_spec
from maskrcnn.errors import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 40, 50


def _dataset(root, labels: dict, names="[cat, dog]"):
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for name, text in labels.items():
        Image.new("RGB", (W, H)).save(root / "images" / f"{name}.png")
        if text is not None:
            (root / "labels" / f"{name}.txt").write_text(text)
    yaml_file = root / "data.yaml"
    yaml_file.write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return yaml_file


def test_polygons_boxes_and_splits(tmp_path):
    yaml_file = _dataset(tmp_path, {
        "train/a": "0 0.2 0.125 0.6 0.125 0.6 0.375 0.2 0.375\n1 0.1 0.625 0.2 0.25\n\n",
        "train/b": None,  # no label file: no instances
        "val/c": "1 0 0 0.2 0 0.2 0.5\n",
    }, names="{0: cat, 1: dog}")
    dataset = YoloDataset(yaml_file)
    assert dataset.class_names == ["BG", "cat", "dog"]
    assert [c["id"] for c in dataset.class_info[1:]] == [1, 2]  # YOLO class c is category c + 1
    assert [info["id"] for info in dataset.image_info] == ["images/train/a.png", "images/train/b.png"]
    masks, class_ids = dataset.load_mask(0)
    assert class_ids.tolist() == [1, 2]
    assert masks[0].sum() == 200 and masks[0][5:15, 10:30].all()
    assert masks[1].sum() == 100 and masks[1][20:30, 0:10].all()  # box centre (5, 25), 10 x 10 px
    assert dataset.load_mask(1)[0].shape == (0, H, W)
    val = load_dataset_spec(f"yolo:{yaml_file}:val")
    assert len(val) == 1 and val.load_mask(0)[1].tolist() == [2]


def test_broken_labels(tmp_path):
    good = "0 0.2 0.125 0.6 0.125 0.6 0.375 0.2 0.375\n"
    yaml_file = _dataset(tmp_path, {"train/a": good * 20 + "5 0.1 0.1 0.2 0.1 0.2 0.2\n"
                                    "0 0.1 0.1 0.2 0.2\n" "cat 0.1 0.1\n" "0 0.1 0.1 0.2\n"
                                    "0 1.5 1.5 1.9 1.5 1.9 1.9\n"})
    with pytest.raises(DataError, match=r"a.txt line 21': class 5 is outside 0..1 of 'names'"):
        YoloDataset(yaml_file)
    with pytest.warns(DataWarning) as caught:
        dataset = YoloDataset(yaml_file, collect_errors=True)
    text = "\n".join(str(w.message) for w in caught)
    assert "line 22': box has zero or negative size" not in text  # 0.2 x 0.2 is a real box
    assert "line 23': line 'cat 0.1 0.1' is not `class x1 y1 x2 y2 ...`" in text
    assert "line 24': polygon has 3 coordinates" in text
    assert "line 25': coordinates outside [0, 1]" in text and "line 25': its mask has no pixel" in text
    assert dataset.num_instances(0) == 21


def test_bad_yaml(tmp_path):
    yaml_file = _dataset(tmp_path, {"train/a": ""}, names="{1: cat}")
    with pytest.raises(DataError, match="'names' keys must be the class numbers 0..0"):
        YoloDataset(yaml_file)
    yaml_file.write_text("path: .\ntrain: images/train\nnames: [cat]\n")
    with pytest.raises(DataError, match=r"no 'val' split \(splits here: \['train'\]\)"):
        YoloDataset(yaml_file, "val")
    yaml_file.write_text("path: .\ntrain: nowhere\nnames: [cat]\n")
    with pytest.raises(DataError, match="'nowhere' is not a folder"):
        YoloDataset(yaml_file)
