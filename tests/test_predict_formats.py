"""maskrcnn predict --format: a stub predictor's known masks (circles, rectangles, an L shape) written as COCO,
LabelMe, CVAT and YOLO files, read back by our own readers with the same instances (mask IoU >= 0.9, same class)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn import Config, Detections, MaskRCNN, categories
from maskrcnn.categories import Category
from maskrcnn.data import load_dataset_spec
from maskrcnn.formats import _cvat_rle, mask_polygons
from maskrcnn.runs import predict

pytest.importorskip("skimage")

HEIGHT, WIDTH = 64, 80
NAMES = ["cat", "dog", "fox"]
IDS = [3, 7, 12]


def circle(cx, cy, r):
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    return (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r ** 2


def rectangle(x1, y1, x2, y2):
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def l_shape():
    return rectangle(45, 30, 53, 60) | rectangle(45, 52, 75, 60)


# file -> [(internal label, mask)]
TRUTH = {
    "a.png": [(1, circle(20, 20, 14)), (2, rectangle(40, 8, 72, 28)), (3, l_shape())],
    "b.png": [(3, circle(40, 35, 20)), (1, rectangle(3, 3, 15, 60))],
}


def stub_detections(objects) -> Detections:
    masks = np.stack([m for _, m in objects])
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor([l for l, _ in objects]),
                      torch.linspace(0.9, 0.6, len(objects)), torch.from_numpy(masks))


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """Run predict once per format with the stub; returns the output folder."""
    root = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    model = MaskRCNN(Config.torchvision(num_classes=4, backbone="resnet18", image_min_dim=32, image_max_dim=48,
                                        fpn_channels=32, rpn_conv_channels=32, box_head_channels=64,
                                        mask_head_channels=32), class_names=["BG"] + NAMES)
    categories.attach(model, [Category(i, n) for i, n in zip(IDS, NAMES)])
    maskrcnn.save(model, root / "model.pt")
    photos = root / "photos"
    photos.mkdir()
    shades = {}
    for k, name in enumerate(sorted(TRUTH)):
        shades[30 * (k + 1)] = TRUTH[name]
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 30 * (k + 1), np.uint8)).save(photos / name)

    def stub_predict(self, images, score_threshold=None):
        return [stub_detections(shades[int(image[0, 0, 0])]) for image in images]

    patch = pytest.MonkeyPatch()
    patch.setattr(MaskRCNN, "predict", stub_predict)
    try:
        for label_format in ("coco", "labelme", "cvat", "yolo"):
            predict([photos], weights=root / "model.pt", out=root / "out", progress=False, report=lambda line: None,
                    label_format=label_format)
    finally:
        patch.undo()
    return root / "out"


def mask_iou(a, b):
    return (a & b).sum() / (a | b).sum()


def check_read_back(dataset, expect_names=True):
    assert len(dataset) == len(TRUTH)
    for index, info in enumerate(dataset.image_info):
        truth = TRUTH[os.path.basename(info["path"])]
        masks, class_ids = dataset.load_mask(index)  # (N, H, W) bool, (N,) int64
        assert len(class_ids) == len(truth)
        for label, mask in truth:
            ious = [mask_iou(mask, found) for found in masks]
            best = int(np.argmax(ious))
            assert ious[best] >= 0.9, (info["path"], label, ious)
            if expect_names:
                assert dataset.class_names[class_ids[best]] == NAMES[label - 1]


def test_coco_reads_back_with_the_model_category_ids(predicted):
    dataset = load_dataset_spec(f"coco:{predicted / 'coco' / 'annotations.json'}")
    check_read_back(dataset)
    assert categories.of_dataset(dataset) == [Category(i, n) for i, n in zip(IDS, NAMES)]
    data = json.loads((predicted / "coco" / "annotations.json").read_text())
    assert {a["category_id"] for a in data["annotations"]} == set(IDS)
    assert all(0.6 - 1e-6 <= a["score"] <= 0.9 + 1e-6 for a in data["annotations"])


def test_labelme_reads_back(predicted):
    check_read_back(load_dataset_spec(f"labelme:{predicted / 'labelme'}"))
    document = json.loads((predicted / "labelme" / "a.json").read_text())
    assert document["imagePath"] == "a.png" and (predicted / "labelme" / "a.png").is_file()
    assert [s["shape_type"] for s in document["shapes"]] == ["polygon"] * 3


def test_cvat_reads_back(predicted):
    check_read_back(load_dataset_spec(f"cvat:{predicted / 'cvat' / 'annotations.xml'}"))


def test_yolo_reads_back_with_classes_in_the_model_order(predicted):
    dataset = load_dataset_spec(f"yolo:{predicted / 'yolo' / 'data.yaml'}")
    check_read_back(dataset)
    assert dataset.class_names == ["BG"] + NAMES
    lines = (predicted / "yolo" / "labels" / "a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2"]  # YOLO's class c is the model's class c + 1


def test_results_json_written_alongside(predicted):
    results = json.loads((predicted / "results.json").read_text())
    assert sorted({r["category_id"] for r in results}) == IDS


# ---------------------------------------------------------------------------------------------- tracing
def test_a_rectangle_traces_to_its_pixel_edges():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:6, 3:9] = True  # pixels x 3..8, y 2..5: edges x 3..9, y 2..6
    (polygon,) = mask_polygons(mask, tolerance=0.0)
    assert polygon[:, 0].min() == 3.0 and polygon[:, 0].max() == 9.0
    assert polygon[:, 1].min() == 2.0 and polygon[:, 1].max() == 6.0


def test_holes_are_left_out_and_pieces_come_largest_first():
    mask = np.zeros((20, 30), dtype=bool)
    mask[1:15, 1:15] = True
    mask[5:9, 5:9] = False  # a hole
    mask[2:5, 20:24] = True  # a second, smaller piece
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    assert polygons[0][:, 0].max() <= 15.0 and polygons[1][:, 0].min() >= 20.0


def test_cvat_mask_runs_start_with_background():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1:4] = True  # box x 1..3, y 1..1: 3 foreground pixels
    mask[3, 1] = True  # box grows to y 1..3: rows "111", "000", "100"
    attributes = _cvat_rle(mask)
    assert (attributes["left"], attributes["top"], attributes["width"], attributes["height"]) == ("1", "1", "3", "3")
    assert attributes["rle"] == "0, 3, 3, 1, 2"


def test_an_unknown_format_is_refused(tmp_path):
    from maskrcnn.errors import ConfigError
    from maskrcnn.formats import make_writer

    with pytest.raises(ConfigError, match="coco, labelme, cvat, yolo, geojson"):
        make_writer("shapefile", tmp_path, MaskRCNN(Config.demo()))


@pytest.mark.parametrize("label_format, spec", [("coco", "coco:{}/annotations.json"), ("labelme", "labelme:{}"),
                                                ("cvat", "cvat:{}/annotations.xml")])
def test_an_object_in_two_pieces_reads_back_whole(tmp_path, label_format, spec):
    """LabelMe: two shapes with one group_id; CVAT: a <mask>; COCO: two polygons of one annotation."""
    from pathlib import Path

    from maskrcnn.formats import make_writer

    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(tmp_path / "two.png")
    pieces = rectangle(5, 5, 20, 20) | circle(55, 40, 12)
    model = MaskRCNN(Config.demo(), class_names=["BG"] + NAMES)
    writer = make_writer(label_format, tmp_path / label_format, model)
    writer.add(Path(tmp_path / "two.png"), "two", (HEIGHT, WIDTH), stub_detections([(2, pieces)]))
    writer.close()
    dataset = load_dataset_spec(spec.format(tmp_path / label_format))
    masks, class_ids = dataset.load_mask(0)
    assert len(class_ids) == 1 and dataset.class_names[class_ids[0]] == "dog"
    assert mask_iou(masks[0], pieces) >= 0.9


# ---------------------------------------------------------------------------------------------- tiled
@pytest.fixture(scope="module")
def predicted_tiled(tmp_path_factory):
    """predict --tile 32 --overlap 8 once per format, on pictures holding TRUTH's objects, the model standing in
    for by an oracle that reads the objects off each tile (label_oracle.py). No object fits in the overlap, so
    every one is joined from the pieces of several tiles. No full-image mask is ever made (MaskCrops.full and
    Detections.full_masks refuse)."""
    from label_oracle import label_picture, oracle_predict, save_tiny_model

    from maskrcnn.mask_crops import MaskCrops

    root = tmp_path_factory.mktemp("tiled")
    save_tiny_model(root / "model.pt")
    photos = root / "photos"
    photos.mkdir()
    for name, objects in TRUTH.items():
        Image.fromarray(label_picture(objects, HEIGHT, WIDTH)).save(photos / name)

    def refuse(*args, **kwargs):
        raise AssertionError("a full-image mask was built from compact masks")

    patch = pytest.MonkeyPatch()
    patch.setattr(MaskRCNN, "predict", oracle_predict)
    patch.setattr(MaskCrops, "full", refuse)
    patch.setattr(Detections, "full_masks", refuse)
    try:
        for label_format in ("coco", "labelme", "cvat", "yolo", "geojson"):
            predict([photos], weights=root / "model.pt", out=root / "out", progress=False, report=lambda line: None,
                    tile=32, overlap=8, label_format=label_format, workers=0)
    finally:
        patch.undo()
    return root / "out"


@pytest.mark.parametrize("spec", ["coco:{}/coco/annotations.json", "labelme:{}/labelme", "cvat:{}/cvat/annotations.xml",
                                  "yolo:{}/yolo/data.yaml"])
def test_tiled_predictions_read_back_in_every_format(predicted_tiled, spec):
    check_read_back(load_dataset_spec(spec.format(predicted_tiled)))


def test_tiled_geojson_polygons_match_the_objects_in_pixels(predicted_tiled):
    from skimage import measure
    from skimage.draw import polygon2mask

    for name, truth in TRUTH.items():
        collection = json.loads((predicted_tiled / "geojson" / f"{os.path.splitext(name)[0]}.geojson").read_text())
        assert "crs" not in collection and collection["image"]["height"] == HEIGHT
        assert len(collection["features"]) == len(truth)
        for (label, mask), feature in zip(truth, collection["features"]):  # the oracle scores objects in order
            assert feature["properties"]["class_name"] == NAMES[label - 1]
            assert feature["properties"]["category_id"] == IDS[label - 1]
            assert feature["geometry"]["type"] == "Polygon"
            (ring,) = feature["geometry"]["coordinates"]
            assert ring[0] == ring[-1]
            points = np.array(ring[:-1])  # (K, 2) x y pixel edges -> row, col of pixel centres
            drawn = polygon2mask((HEIGHT, WIDTH), points[:, ::-1] - 0.5)
            assert mask_iou(drawn, mask) >= 0.9
            # every vertex is a point of the whole mask's exact boundary (simplifying keeps a subset of them)
            (boundary,) = measure.find_contours(np.pad(mask.astype(np.uint8), 1), 0.5)  # (K, 2) row, col padded
            on_boundary = {tuple(v) for v in (boundary[:, ::-1] - 0.5).tolist()}  # -> x y pixel edges
            assert {tuple(v) for v in points.tolist()} <= on_boundary


def test_cvat_mask_runs_of_a_crop_are_placed_by_its_offset():
    crop = np.zeros((3, 4), dtype=bool)
    crop[1, 1:3] = True  # in the image: row 11, columns 21..22
    attributes = _cvat_rle(crop, 20, 10)
    assert (attributes["left"], attributes["top"], attributes["width"], attributes["height"]) == ("21", "11", "2", "1")
    assert attributes["rle"] == "0, 2"
