"""The evaluation report (report.py): its numbers against pycocotools and against counts worked out by hand, the
`maskrcnn evaluate --report` command, and the page in a real browser (Debian's Chromium driven by Playwright)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import maskrcnn
from maskrcnn.data import CocoDataset, ShapesDataset
from maskrcnn.evaluation import CocoEvaluator, ground_truth_detections
from maskrcnn.report import HTML_NAME, JSON_NAME, write_report
from maskrcnn.structures import Detections

SIZE = 64


# ---------------------------------------------------------------------------------------------- per-class AP
def _three_class_file(tmp_path):
    """A COCO file with three categories (ids 3, 7, 9, not contiguous) on four images, and jittered results."""
    rng = np.random.default_rng(0)
    images = [{"id": 10 + i, "file_name": f"im{i}.png", "height": 60, "width": 80} for i in range(4)]
    annotations, results = [], []
    for image in images:
        for k in range(5):
            x, y, w, h = (float(v) for v in rng.integers(0, 40, 2).tolist() + rng.integers(8, 30, 2).tolist())
            category = [3, 7, 9][int(rng.integers(3))]
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
            for _ in range(int(rng.integers(0, 3))):  # 0-2 detections each, jittered, some of another class
                jitter = rng.normal(0, 4, 4)
                results.append({"image_id": image["id"], "score": float(rng.random()),
                                "category_id": category if rng.random() < 0.8 else [3, 7, 9][int(rng.integers(3))],
                                "bbox": [x + jitter[0], y + jitter[1], max(2.0, w + jitter[2]), max(2.0, h + jitter[3])]})
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [
        {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "kite"}]}))
    return annotation_file, results


def test_per_class_ap50_and_curves_are_pycocotools_per_category_values(tmp_path):
    annotation_file, results = _three_class_file(tmp_path)
    dataset = CocoDataset(annotation_file, tmp_path)
    evaluator = CocoEvaluator(dataset, iou_types=("bbox",))
    source_to_ours = {dataset.get_source_class_id(c, "coco"): c for c in range(1, dataset.num_classes)}
    for index, info in enumerate(dataset.image_info):
        rows = [r for r in results if r["image_id"] == info["id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)]).reshape(-1, 4)
        evaluator.add(index, Detections(boxes=boxes.float(), labels=torch.tensor([source_to_ours[r["category_id"]] for r in rows]),
                                        scores=torch.tensor([r["score"] for r in rows]),
                                        masks=torch.zeros(len(rows), 60, 80, dtype=torch.bool)))
    summary = evaluator.summarize()["bbox"]
    curves = evaluator.precision_recall("bbox", 0.5)
    coco = COCO(str(annotation_file))
    detections = coco.loadRes(results)
    for category_id, name in ((3, "cat"), (7, "dog"), (9, "kite")):
        alone = COCOeval(coco, detections, iouType="bbox")  # pycocotools on this one category alone
        alone.params.catIds = [category_id]
        alone.evaluate(), alone.accumulate(), alone.summarize()
        assert summary["per_class"][name] == pytest.approx(alone.stats[0], abs=1e-12)
        assert summary["per_class_AP50"][name] == pytest.approx(alone.stats[1], abs=1e-12)
        recall, precision = curves[name]
        assert len(recall) == 101 and np.nanmean(precision) == pytest.approx(alone.stats[1], abs=1e-12)
    assert len({round(v, 6) for v in summary["per_class_AP50"].values()}) == 3  # three different classes, three values


# ---------------------------------------------------------------------------------------------- by hand
class Oracle:
    """Detections made from a data set's ground truth, with chosen errors: image 0 misses its first instance,
    image 1 calls its first instance the next class, image 2 gets a spurious detection in a free corner."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.config = maskrcnn.Config.demo(num_classes=dataset.num_classes)
        self.class_names = dataset.class_names
        self.index = {dataset.load_image(i).tobytes(): i for i in range(len(dataset))}

    def predict(self, images, *, score_threshold=None):
        found = []
        for image in images:
            i = self.index[np.asarray(image).tobytes()]
            truth = ground_truth_detections(self.dataset, i)
            boxes, labels, masks = truth.boxes, truth.labels.clone(), truth.masks
            scores = torch.linspace(0.9, 0.8, len(labels))
            if i == 0:
                boxes, labels, scores, masks = boxes[1:], labels[1:], scores[1:], masks[1:]
            if i == 1:
                labels[0] = labels[0] % (self.dataset.num_classes - 1) + 1
            if i == 2:
                corner = torch.zeros(1, *masks.shape[1:], dtype=torch.bool)
                corner[0, :3, :3] = True
                boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, 3.0, 3.0]])])
                labels, scores = torch.cat([labels, torch.tensor([1])]), torch.cat([scores, torch.tensor([0.3])])
                masks = torch.cat([masks, corner])
            found.append(Detections(boxes=boxes.float(), labels=labels, scores=scores.float(), masks=masks))
        return found


@pytest.fixture(scope="module")
def shapes():
    dataset = ShapesDataset(5, SIZE, SIZE, seed=11)
    for i in range(3):  # the corner of image 2 must be free, and the images must have instances
        masks, _ = dataset.load_mask(i)
        assert len(masks) >= 1
    assert not np.asarray(dataset.load_mask(2)[0])[:, :3, :3].any()
    return dataset


@pytest.fixture(scope="module")
def oracle_report(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report(Oracle(shapes), shapes, out, score_threshold=0.0, iou_threshold=0.5), shapes


def test_confusion_precision_recall_and_gallery_by_hand(oracle_report):
    report, dataset = oracle_report
    labels = {i: np.asarray(dataset.load_mask(i)[1]) for i in range(len(dataset))}
    expected = np.zeros((4, 4), dtype=np.int64)
    for i, classes in labels.items():
        for k, c in enumerate(classes):
            if i == 0 and k == 0:
                expected[c, 0] += 1  # missed
            elif i == 1 and k == 0:
                expected[c, c % 3 + 1] += 1  # called the next class
            else:
                expected[c, c] += 1
    expected[0, 1] += 1  # the spurious class-1 detection of image 2
    data = json.loads((report.json).read_text())
    assert data["confusion_matrix"]["counts"] == expected.tolist()
    assert data["confusion_matrix"]["labels"] == ["background", "square", "circle", "triangle"]
    for k, row in enumerate(data["classes"], start=1):
        tp, fp, fn = expected[k, k], expected[:, k].sum() - expected[k, k], expected[k, :].sum() - expected[k, k]
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
        if tp + fp:
            assert row["precision"] == pytest.approx(tp / (tp + fp))
        if tp + fn:
            assert row["recall"] == pytest.approx(tp / (tp + fn))
    assert [entry["index"] for entry in data["gallery"]] == [0, 1, 2]  # one error each, in image order
    assert [(e["missed"], e["spurious"], e["confused"]) for e in data["gallery"]] == [(1, 0, 0), (0, 0, 1), (0, 1, 0)]
    assert data["score_threshold"] == 0.0 and data["iou_threshold"] == 0.5
    assert set(data["coco"]["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
    # The per-class AP in the report is the summary's (pycocotools' per category, tested above).
    for row in data["classes"]:
        for short, iou_type in (("box", "bbox"), ("mask", "segm")):
            value = report.summary[iou_type]["per_class"][row["name"]]
            assert row[f"{short}_AP"] == (None if math.isnan(value) else pytest.approx(value))


def test_a_score_threshold_above_the_spurious_detection_removes_it(shapes, tmp_path):
    data = write_report(Oracle(shapes), shapes, tmp_path, score_threshold=0.5, gallery_size=1).data
    assert data["confusion_matrix"]["counts"][0][1] == 0  # the 0.3 detection is below 0.5
    assert len(data["gallery"]) == 1


# ---------------------------------------------------------------------------------------------- command
def test_maskrcnn_evaluate_report_writes_the_page_its_json_and_the_metrics(tmp_path, capsys):
    from maskrcnn.cli import main

    torch.manual_seed(0)
    model = maskrcnn.MaskRCNN(maskrcnn.Config.demo(image_min_dim=SIZE, image_max_dim=SIZE),
                              class_names=["BG", "square", "circle", "triangle"])
    maskrcnn.save(model, tmp_path / "model.pt")
    code = main(["evaluate", "--weights", str(tmp_path / "model.pt"), "--data", f"shapes:2:{SIZE}:5", "--no-progress",
                 "--out", str(tmp_path / "metrics.json"), "--report", str(tmp_path / "report"), "--iou", "0.6"])
    assert code == 0
    data = json.loads((tmp_path / "report" / JSON_NAME).read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert data["iou_threshold"] == 0.6 and data["score_threshold"] == 0.0 and data["images"] == 2
    assert data["coco"]["bbox"]["AP"] == metrics["bbox"]["AP"]
    page = (tmp_path / "report" / HTML_NAME).read_text()
    assert page.count("data:image/png;base64,") >= 3 and 'src="http' not in page  # one file, nothing fetched
    assert f"{tmp_path / 'report'}/report.html" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- browser
def test_the_page_opens_in_a_browser_with_its_tables_and_pictures(browser, oracle_report):
    report, dataset = oracle_report
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(report.html.resolve().as_uri())
    coco_rows = page.eval_on_selector_all("#coco-table tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
    assert coco_rows == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    class_rows = page.eval_on_selector_all("#class-table tbody tr", "rows => rows.map(r => r.cells.length + ' ' + r.cells[0].textContent)")
    assert class_rows == ["11 square", "11 circle", "11 triangle"]
    page.wait_for_load_state("load")
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.id || i.className, i.complete, i.naturalWidth])")
    assert [s[0] for s in sizes] == ["confusion", "pr-bbox", "pr-segm", "gallery", "gallery", "gallery"]
    assert all(complete and width > 0 for _, complete, width in sizes), sizes
    assert not errors
    page.close()
