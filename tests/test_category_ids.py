"""The data set's own category ids: carried by saved models and checkpoints, written by predict (scored with
pycocotools' COCOeval against the original file), matched by id in evaluate (torchvision's 91 COCO slots), and
used by train --keep-classes to keep a superset model's class rows."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import maskrcnn
from maskrcnn import Config, Detections, MaskRCNN, categories
from maskrcnn.categories import Category
from maskrcnn.checkpoint import CheckpointManager
from maskrcnn.runs import TrainOptions, _initial_weights, evaluate, predict

SMALL = dict(backbone="resnet18", image_min_dim=32, image_max_dim=48, fpn_channels=32, rpn_conv_channels=32,
             box_head_channels=64, mask_head_channels=32, detection_max_instances=10)
IDS = [3, 7, 12]  # non-contiguous source ids of "cat", "dog", "fox"


def small_model(names):
    torch.manual_seed(0)
    return MaskRCNN(Config.torchvision(num_classes=len(names) + 1, **SMALL), class_names=["BG"] + names).eval()


def rectangle(height, width, x1, y1, x2, y2):
    mask = np.zeros((height, width), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def detections(masks, labels, scores=None):
    """Detections whose boxes are their masks' tight boxes (x1 y1 x2 y2)."""
    masks = torch.from_numpy(np.stack(masks))
    boxes = []
    for mask in masks.numpy():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    scores = scores or [0.9 - 0.1 * k for k in range(len(labels))]
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64),
                      torch.tensor(scores, dtype=torch.float32), masks)


def coco_annotation(ann_id, image_id, category_id, mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "area": float(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


# ---------------------------------------------------------------------------------------------- saving
def test_save_and_load_keep_the_categories(tmp_path):
    model = small_model(["cat", "dog", "fox"])
    categories.attach(model, [Category(i, n) for i, n in zip(IDS, ["cat", "dog", "fox"])])
    maskrcnn.save(model, tmp_path / "model.pt")
    loaded = maskrcnn.load(tmp_path / "model.pt")
    assert loaded.categories == [Category(3, "cat"), Category(7, "dog"), Category(12, "fox")]
    assert categories.id_of_label(loaded) == {1: 3, 2: 7, 3: 12}


def test_a_file_without_categories_loads_with_ids_equal_to_class_indices(tmp_path):
    model = small_model(["cat", "dog"])
    maskrcnn.save(model, tmp_path / "old.pt")
    data = torch.load(tmp_path / "old.pt", weights_only=True)
    assert "categories" not in data  # as files written before categories were kept
    loaded = maskrcnn.load(tmp_path / "old.pt")
    assert not categories.has_categories(loaded)
    assert categories.id_of_label(loaded) == {1: 1, 2: 2}


def test_checkpoints_carry_the_categories(tmp_path):
    model = small_model(["cat", "dog", "fox"])
    categories.attach(model, [{"id": i, "name": n} for i, n in zip(IDS, ["cat", "dog", "fox"])])
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.extra["categories"] = categories.to_plain(model)
    path = manager.save({"model": model.state_dict(), "config": model.config.to_dict(),
                         "class_names": model.class_names}, 1)
    assert [c.id for c in maskrcnn.load(path).categories] == IDS


def test_attach_refuses_duplicate_ids_and_wrong_counts():
    model = small_model(["cat", "dog"])
    with pytest.raises(maskrcnn.errors.DataError, match="unique"):
        categories.attach(model, [Category(4, "cat"), Category(4, "dog")])
    with pytest.raises(maskrcnn.errors.DataError, match="2 classes"):
        categories.attach(model, [Category(4, "cat")])


def test_dataset_categories_are_the_source_ids(tmp_path):
    height, width = 20, 30
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "height": height, "width": width}],
            "categories": [{"id": 12, "name": "fox"}, {"id": 3, "name": "cat"}],
            "annotations": [coco_annotation(1, 1, 12, rectangle(height, width, 2, 2, 9, 9))]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    dataset = maskrcnn.data.CocoDataset(tmp_path / "gt.json", tmp_path)
    assert categories.of_dataset(dataset) == [Category(3, "cat"), Category(12, "fox")]  # internal order: by id


# ---------------------------------------------------------------------------------------------- predict
def test_predict_writes_source_ids_that_score_with_cocoeval(tmp_path, monkeypatch):
    """A stub predictor finds the ground truth exactly; results.json has to carry ids 3, 7, 12 for COCOeval to
    match them (with the internal ids 1, 2, 3 it finds no category 1 or 2 and scores nothing for 7 and 12)."""
    height, width = 40, 60
    names = ["cat", "dog", "fox"]
    model = small_model(names)
    categories.attach(model, [Category(i, n) for i, n in zip(IDS, names)])
    maskrcnn.save(model, tmp_path / "model.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    truth = {  # file -> [(internal label, mask)]
        "a.png": [(1, rectangle(height, width, 2, 3, 20, 25)), (3, rectangle(height, width, 30, 5, 55, 30))],
        "b.png": [(2, rectangle(height, width, 10, 10, 40, 35))],
    }
    gt = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in zip(IDS, names)]}
    for image_id, (name, objects) in enumerate(sorted(truth.items()), start=1):
        Image.fromarray(np.full((height, width, 3), 40 * image_id, np.uint8)).save(photos / name)
        gt["images"].append({"id": image_id, "file_name": name, "height": height, "width": width})
        for label, mask in objects:
            gt["annotations"].append(coco_annotation(len(gt["annotations"]) + 1, image_id, IDS[label - 1], mask))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    by_shade = {40 * (k + 1): objects for k, (_, objects) in enumerate(sorted(truth.items()))}

    def stub_predict(self, images, score_threshold=None):
        return [detections([m for _, m in by_shade[int(image[0, 0, 0])]], [l for l, _ in by_shade[int(image[0, 0, 0])]])
                for image in images]

    monkeypatch.setattr(MaskRCNN, "predict", stub_predict)
    predict([photos], weights=tmp_path / "model.pt", out=tmp_path / "out", progress=False, report=lambda line: None)

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(r["category_id"] for r in results) == [3, 7, 12]
    listed = json.loads((tmp_path / "out" / "images.json").read_text())["categories"]
    assert listed == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "fox"}]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / "out" / "results.json"))
        for iou_type in ("bbox", "segm"):
            evaluation = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert evaluation.stats[1] == pytest.approx(1.0)  # AP50 over the three categories
            assert evaluation.stats[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- evaluate
COCO_IDS = {1: "person", 18: "dog", 44: "bottle", 90: "toothbrush"}


@pytest.fixture(scope="module")
def torchvision_state_dict():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def test_evaluate_torchvision_coco_maps_by_category_id(tmp_path, monkeypatch, torchvision_state_dict):
    """torchvision's 91-slot model on a 4-category COCO file: class k of the model is COCO category k. The stub
    detects each ground-truth object with its COCO id as label (and a car, id 3, that the file lacks)."""
    import maskrcnn.interop.torchvision as tv_interop

    monkeypatch.setattr(tv_interop, "load_coco_state_dict", lambda: torchvision_state_dict)
    height, width = 48, 64
    objects = {1: [(1, rectangle(height, width, 2, 2, 20, 40)), (44, rectangle(height, width, 30, 10, 40, 30))],
               2: [(18, rectangle(height, width, 5, 5, 50, 30)), (90, rectangle(height, width, 52, 8, 60, 44))]}
    gt = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in COCO_IDS.items()]}
    for image_id, found in objects.items():
        Image.fromarray(np.full((height, width, 3), 50 * image_id, np.uint8)).save(tmp_path / f"{image_id}.png")
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": height, "width": width})
        for category_id, mask in found:
            gt["annotations"].append(coco_annotation(len(gt["annotations"]) + 1, image_id, category_id, mask))
    (tmp_path / "instances.json").write_text(json.dumps(gt))

    def stub_predict(self, images, score_threshold=None):
        assert self.config.num_classes == 91  # the torchvision layout itself runs, not a rebuilt model
        out = []
        for image in images:
            found = objects[int(image[0, 0, 0]) // 50]
            extra = rectangle(height, width, 0, 44, 10, 48)
            out.append(detections([m for _, m in found] + [extra], [c for c, _ in found] + [3]))
        return out

    monkeypatch.setattr(MaskRCNN, "predict", stub_predict)
    lines = []
    summary = evaluate("torchvision-coco", f"coco:{tmp_path / 'instances.json'}:{tmp_path}", out=tmp_path / "metrics.json",
                       results=tmp_path / "results.json", progress=False, report=lines.append)
    assert any("matched by category id: 4 of the data set's 4" in line for line in lines)
    for iou_type in ("bbox", "segm"):
        assert summary[iou_type]["per_class"] == {name: pytest.approx(1.0) for name in COCO_IDS.values()}
        assert summary[iou_type]["AP"] == pytest.approx(1.0)
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["category_id"] for r in results) == [1, 18, 44, 90]  # the car (3) dropped


def test_torchvision_coco_weights_are_named_with_coco_categories(monkeypatch, torchvision_state_dict):
    import maskrcnn.interop.torchvision as tv_interop
    from maskrcnn.saving import load_weights

    monkeypatch.setattr(tv_interop, "load_coco_state_dict", lambda: torchvision_state_dict)
    model = load_weights("torchvision-coco")
    assert model.config.num_classes == 91
    assert categories.id_of_label(model)[18] == 18 and model.class_names[18] == "dog"
    assert model.class_names[90] == "toothbrush" and model.class_names[12] == "N/A"


def test_for_dataset_keeps_a_model_of_the_same_classes_as_it_is(tmp_path):
    model = small_model(["a", "b"])

    class TwoClasses:
        class_info = [{"id": 0, "name": "BG"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert categories.for_dataset(model, TwoClasses(), report=lambda line: None) is model


def test_for_dataset_refuses_a_model_sharing_no_class(tmp_path):
    model = small_model(["a", "b", "c"])

    class Other:
        class_info = [{"id": 0, "name": "BG"}, {"id": 7, "name": "x"}]
        num_classes, class_names = 2, ["BG", "x"]
    with pytest.raises(maskrcnn.errors.DataError, match="share no category id or name"):
        categories.for_dataset(model, Other(), report=lambda line: None)


# ---------------------------------------------------------------------------------------------- keep classes
def test_keep_classes_copies_the_rows_of_the_shared_classes(tmp_path):
    source = small_model(["person", "cat", "car", "dog", "bird"])
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_()  # biases too, so every row differs from a fresh one
    maskrcnn.save(source, tmp_path / "big.pt")
    torch.manual_seed(1)
    model = MaskRCNN(Config.torchvision(num_classes=3, **SMALL), class_names=["BG", "dog", "cat"])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    _initial_weights(model, TrainOptions(weights=str(tmp_path / "big.pt"), keep_classes=True), lines.append,
                     maskrcnn.saving.load_weights)
    ours, theirs = model.state_dict(), source.state_dict()
    pairs = {0: 0, 1: 4, 2: 2}  # BG, dog (source class 4), cat (source class 2)
    for new, old in pairs.items():
        for name, rows in (("box_head.class_logits", 1), ("box_head.deltas", 4), ("mask_head.mask_logits", 1)):
            for suffix in ("weight", "bias"):
                key = f"{name}.{suffix}"
                assert torch.equal(ours[key][new * rows:(new + 1) * rows], theirs[key][old * rows:(old + 1) * rows]), key
                assert not torch.equal(ours[key][new * rows:(new + 1) * rows], fresh[key][new * rows:(new + 1) * rows])
    assert any("class rows kept for dog (was dog), cat (was cat)" in line for line in lines)


def test_without_keep_classes_the_class_rows_stay_fresh(tmp_path):
    source = small_model(["person", "cat", "car", "dog", "bird"])
    maskrcnn.save(source, tmp_path / "big.pt")
    torch.manual_seed(1)
    model = MaskRCNN(Config.torchvision(num_classes=3, **SMALL), class_names=["BG", "dog", "cat"])
    fresh = model.state_dict()["box_head.class_logits.weight"].clone()
    _initial_weights(model, TrainOptions(weights=str(tmp_path / "big.pt")), lambda line: None,
                     maskrcnn.saving.load_weights)
    assert torch.equal(model.state_dict()["box_head.class_logits.weight"], fresh)


def test_keep_classes_matches_by_id_where_names_differ():
    source, model = small_model(["a", "b", "c"]), small_model(["x", "y"])
    categories.attach(source, [Category(5, "a"), Category(9, "b"), Category(11, "c")])
    categories.attach(model, [Category(11, "x"), Category(5, "y")])
    from maskrcnn.keep_classes import class_pairs

    assert class_pairs(model, source) == {0: 0, 1: 3, 2: 1}


def test_for_dataset_prefers_names_when_ids_agree_only_by_chance():
    """A model of COCO ids 2, 5, 9 (red, green, blue) on the same data read with ids 1..3 (sorted names)."""
    model = small_model(["red", "green", "blue"])
    categories.attach(model, [Category(2, "red"), Category(5, "green"), Category(9, "blue")])

    class Converted:
        class_info = [{"id": 0, "name": "BG"}, {"id": 1, "name": "blue"}, {"id": 2, "name": "green"},
                      {"id": 3, "name": "red"}]
        num_classes, class_names = 4, ["BG", "blue", "green", "red"]
    lines = []
    relabeled = categories.for_dataset(model, Converted(), report=lines.append)
    assert relabeled.lookup.tolist() == [0, 3, 2, 1]  # model red -> data red (3), green -> 2, blue -> 1
    assert "by category name: 3 of the data set's 3" in lines[0]
