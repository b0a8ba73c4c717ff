"""COCO metrics against pycocotools' own COCOeval, and VOC mAP against values worked out by hand."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn.data.dataset import Dataset
from maskrcnn.errors import DataError
from maskrcnn.evaluation import (METRIC_NAMES, CocoEvaluator, compute_ap, format_table,
                                 ground_truth_detections, mask_overlaps, voc_map)
from maskrcnn.structures import Detections

H, W = 120, 160


def rect(x1, y1, x2, y2, height=H, width=W):
    mask = np.zeros((height, width), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def ellipse(cx, cy, rx, ry):
    yy, xx = np.mgrid[:H, :W]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


# COCO category ids are gapped (3, 7, 12) and registered out of order, so internal ids differ from them.
CATEGORIES = {3: "cat", 7: "dog", 12: "kite"}
REGISTRATION_ORDER = (12, 3, 7)  # internal ids 1, 2, 3
SOURCE_IMAGE_IDS = (101, 205, 309, 412)

# Per image: (COCO category id, mask, iscrowd). Objects are small (< 32^2), medium and large.
SCENES = [
    [(3, rect(5, 5, 25, 25), 0), (7, ellipse(80, 60, 30, 25), 0), (12, rect(100, 10, 150, 50), 0),
     (3, rect(0, 80, 60, 120), 1)],
    [(7, rect(2, 2, 150, 110), 0), (12, ellipse(40, 40, 8, 8), 0), (12, ellipse(120, 90, 20, 15), 0)],
    [(3, rect(50, 50, 90, 100), 0), (7, rect(10, 10, 30, 40), 0)],  # an image the model finds nothing in
    [],  # an image without ground truth
]

# Per image: (COCO category id, mask, score, box jitter in half pixels).
DETECTIONS = [
    [(3, np.roll(SCENES[0][0][1], (1, 2), (0, 1)), 0.91, (1, -1, 0, 2)),
     (7, np.roll(SCENES[0][1][1], (3, 5), (0, 1)), 0.85, (0, 1, -2, 1)),
     (7, SCENES[0][1][1], 0.40, (0, 0, 0, 0)),  # a duplicate
     (3, SCENES[0][2][1], 0.70, (1, 1, -1, -1)),  # right place, wrong class
     (3, rect(5, 85, 55, 118), 0.60, (0, 0, 0, 0)),  # on the crowd region
     (12, rect(130, 70, 155, 110), 0.30, (-1, 0, 0, 1))],  # a false positive
    [(7, np.roll(SCENES[1][0][1], (4, 4), (0, 1)), 0.95, (2, 2, -2, -2)),
     (12, np.roll(SCENES[1][1][1], 3, 1), 0.50, (0, -1, 1, 0)),
     (12, np.roll(SCENES[1][2][1], (2, 1), (0, 1)), 0.80, (1, 0, 0, 1)),
     (3, rect(60, 60, 70, 70), 0.20, (0, 0, 0, 0))],
    [],
    [(7, rect(10, 10, 60, 60), 0.75, (0, 0, 1, 1)), (12, ellipse(100, 50, 12, 9), 0.33, (0, 0, 0, 0))],
]


def mask_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def make_detections(image_index, internal_id):
    """Detections of one image with internal labels; boxes are mask extents moved by half pixels."""
    entries = DETECTIONS[image_index]
    if not entries:
        return Detections.empty(H, W)
    boxes = np.stack([mask_box(mask) + 0.5 * np.array(jitter, dtype=np.float32) for _, mask, _, jitter in entries])
    return Detections(
        boxes=torch.from_numpy(boxes),
        labels=torch.tensor([internal_id[c] for c, _, _, _ in entries], dtype=torch.int64),
        scores=torch.tensor([s for _, _, s, _ in entries], dtype=torch.float32),
        masks=torch.from_numpy(np.stack([mask for _, mask, _, _ in entries])),
    )


def reference_results(image_ids, internal_id, iou_type, images=range(len(SCENES)), file_category_ids=None):
    """COCO results written independently of the evaluator, from the same detections.

    `file_category_ids` maps internal labels to the annotation file's category ids (default: COCO's)."""
    category_of = file_category_ids or {v: k for k, v in internal_id.items()}
    results = []
    for index in images:
        dets = make_detections(index, internal_id)
        columns = (dets.boxes.tolist(), dets.labels.tolist(), dets.scores.tolist(), dets.masks.numpy())
        for box, label, score, mask in zip(*columns):
            result = {"image_id": image_ids[index], "category_id": category_of[label], "score": score}
            if iou_type == "bbox":
                result["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                result["segmentation"] = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            results.append(result)
    return results


def reference_eval(gt_path, results, iou_type, image_ids=None, category_ids=None):
    coco_gt = COCO(str(gt_path))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iouType=iou_type)
    if image_ids is not None:
        coco_eval.params.imgIds = image_ids
    if category_ids is not None:
        coco_eval.params.catIds = category_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return np.where(coco_eval.stats == -1, np.nan, coco_eval.stats)


def write_coco_json(path, image_ids, category_ids, polygons):
    """The scenes as a COCO annotation file; non-crowd rectangles as polygons when `polygons`, crowds as
    uncompressed RLE (as in COCO), everything else as compressed RLE."""
    annotations = []
    for index, scene in enumerate(SCENES):
        for category, mask, iscrowd in scene:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            if iscrowd:
                # Uncompressed RLE: column-major run lengths, starting with a run of zeros.
                runs, current, length = [], 0, 0
                for value in mask.T.reshape(-1):
                    if value != current:
                        runs.append(length)
                        current, length = value, 0
                    length += 1
                runs.append(length)
                segmentation = {"size": [H, W], "counts": runs}
            elif polygons and mask.sum() == w * h:
                segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            else:
                segmentation = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_ids[index], "category_id": category_ids[category],
                "segmentation": segmentation, "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h],
                "iscrowd": iscrowd,
            })
    data = {
        "images": [{"id": image_ids[i], "height": H, "width": W, "file_name": f"{i}.png"} for i in range(len(SCENES))],
        "categories": [{"id": category_ids[c], "name": name} for c, name in CATEGORIES.items()],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


class CocoBacked(Dataset):
    """What CocoDataset offers the evaluator: a `coco` attribute and source ids."""

    def __init__(self, annotation_file):
        super().__init__()
        self.coco = COCO(str(annotation_file))
        for category in REGISTRATION_ORDER:
            self.add_class("coco", category, self.coco.cats[category]["name"])
        for image_id in sorted(self.coco.imgs):
            self.add_image("coco", image_id, None)
        self.prepare()


class InMemory(Dataset):
    """A data set without `coco`: ground truth only through `load_mask`."""

    def __init__(self):
        super().__init__()
        for category in REGISTRATION_ORDER:
            self.add_class("shapes", category, CATEGORIES[category])
        for index in range(len(SCENES)):
            self.add_image("shapes", index, None)
        self.prepare()

    def load_mask(self, image_index):
        scene = SCENES[image_index]
        if not scene:
            return np.zeros((0, H, W), dtype=bool), np.zeros((0,), dtype=np.int64)
        internal = {c: REGISTRATION_ORDER.index(c) + 1 for c in CATEGORIES}
        return (np.stack([mask for _, mask, _ in scene]),
                np.array([-internal[c] if crowd else internal[c] for c, _, crowd in scene], dtype=np.int64))


def as_array(metrics):
    return np.array([metrics[name] for name in METRIC_NAMES])


@pytest.fixture(scope="module")
def coco_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    gt_path = write_coco_json(folder / "gt.json", SOURCE_IMAGE_IDS, {c: c for c in CATEGORIES}, polygons=True)
    dataset = CocoBacked(gt_path)
    internal_id = {c: dataset.map_source_class_id(f"coco.{c}") for c in CATEGORIES}
    return dataset, gt_path, internal_id


# ---------------------------------------------------------------------------------------------- COCO
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_backed_dataset_matches_cocoeval(coco_case, iou_type, capsys):
    dataset, gt_path, internal_id = coco_case
    assert internal_id == {12: 1, 3: 2, 7: 3}
    evaluator = CocoEvaluator(dataset)
    for index in dataset.image_ids:
        evaluator.add(index, make_detections(index, internal_id))
    summary = evaluator.summarize()
    assert capsys.readouterr().out == ""  # quiet unless asked
    expected = reference_eval(gt_path, reference_results(SOURCE_IMAGE_IDS, internal_id, iou_type), iou_type)
    np.testing.assert_array_equal(as_array(summary[iou_type]), expected)
    # The case is not trivial: partial AP, and every area range has ground truth.
    assert 0.1 < summary[iou_type]["AP"] < 0.9
    assert not np.isnan(as_array(summary[iou_type])).any()
    # Per-class AP equals COCOeval's AP with that category alone.
    for category, name in CATEGORIES.items():
        alone = reference_eval(gt_path, reference_results(SOURCE_IMAGE_IDS, internal_id, iou_type), iou_type,
                               category_ids=[category])
        assert summary[iou_type]["per_class"][name] == pytest.approx(alone[0], rel=1e-12, abs=1e-12)


def test_coco_backed_subset_of_images(coco_case):
    dataset, gt_path, internal_id = coco_case
    evaluator = CocoEvaluator(dataset, iou_types=("bbox",))
    for index in (0, 3):
        evaluator.add(index, make_detections(index, internal_id))
    summary = evaluator.summarize()
    assert set(summary) == {"bbox"}
    image_ids = [SOURCE_IMAGE_IDS[0], SOURCE_IMAGE_IDS[3]]
    expected = reference_eval(gt_path, reference_results(SOURCE_IMAGE_IDS, internal_id, "bbox", images=(0, 3)),
                              "bbox", image_ids=image_ids)
    np.testing.assert_array_equal(as_array(summary["bbox"]), expected)
    assert math.isnan(summary["bbox"]["APl"])  # image 0 has no large object: COCOeval's -1 becomes NaN


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_in_memory_ground_truth_matches_cocoeval(tmp_path, iou_type):
    dataset = InMemory()
    internal_id = {c: REGISTRATION_ORDER.index(c) + 1 for c in CATEGORIES}
    # The equivalent file: internal indices as image ids, internal class ids as category ids, RLE masks.
    gt_path = write_coco_json(tmp_path / "gt.json", list(range(len(SCENES))), internal_id, polygons=False)
    evaluator = CocoEvaluator(dataset)
    for index in dataset.image_ids:
        evaluator.add(index, make_detections(index, internal_id))
    summary = evaluator.summarize()
    identity = {label: label for label in internal_id.values()}
    results = reference_results(list(range(len(SCENES))), internal_id, iou_type, file_category_ids=identity)
    expected = reference_eval(gt_path, results, iou_type)
    np.testing.assert_array_equal(as_array(summary[iou_type]), expected)
    assert 0.1 < summary[iou_type]["AP"] < 0.9
    assert set(summary[iou_type]["per_class"]) == {"cat", "dog", "kite"}


def test_write_results_is_loadable_and_scores_the_same(coco_case, tmp_path):
    dataset, gt_path, internal_id = coco_case
    evaluator = CocoEvaluator(dataset)
    for index in dataset.image_ids:
        evaluator.add(index, make_detections(index, internal_id))
    path = evaluator.write_results(tmp_path / "out" / "results.json")
    results = json.loads(path.read_text())
    assert len(results) == sum(len(d) for d in DETECTIONS)
    first = results[0]
    assert first["image_id"] == SOURCE_IMAGE_IDS[0] and first["category_id"] == 3
    box = mask_box(DETECTIONS[0][0][1]) + 0.5 * np.array(DETECTIONS[0][0][3])
    assert first["bbox"] == [box[0], box[1], box[2] - box[0], box[3] - box[1]]  # x, y, w, h
    assert isinstance(first["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode(first["segmentation"]).astype(bool), DETECTIONS[0][0][1])
    expected = reference_eval(gt_path, str(path), "bbox")
    np.testing.assert_array_equal(as_array(evaluator.summarize()["bbox"]), expected)


def test_no_detections_warns_and_reports_zero(coco_case):
    dataset, _, _ = coco_case
    evaluator = CocoEvaluator(dataset)
    for index in dataset.image_ids:
        evaluator.add(index, Detections.empty(H, W))
    with pytest.warns(UserWarning, match="no detections"):
        summary = evaluator.summarize()
    for iou_type in ("bbox", "segm"):
        assert as_array(summary[iou_type]).tolist() == [0.0] * 12
        assert summary[iou_type]["per_class"] == {"kite": 0.0, "cat": 0.0, "dog": 0.0}


def test_bad_input_is_a_data_error(coco_case):
    dataset, _, internal_id = coco_case
    evaluator = CocoEvaluator(dataset)
    with pytest.raises(DataError, match="60x80"):
        evaluator.add(0, Detections(torch.zeros(1, 4), torch.ones(1, dtype=torch.int64), torch.ones(1),
                                    torch.zeros(1, 60, 80, dtype=torch.bool)))
    with pytest.raises(DataError, match="labels"):
        evaluator.add(0, Detections(torch.zeros(1, 4), torch.tensor([4]), torch.ones(1),
                                    torch.zeros(1, H, W, dtype=torch.bool)))
    evaluator.add(1, make_detections(1, internal_id))
    with pytest.raises(DataError, match="twice"):
        evaluator.add(1, make_detections(1, internal_id))
    with pytest.raises(DataError, match="no images"):
        CocoEvaluator(dataset).summarize()


def test_format_table_lists_both_types():
    summary = {t: {name: i / 100 for i, name in enumerate(METRIC_NAMES)} for t in ("bbox", "segm")}
    summary["segm"]["AP"] = 0.5
    lines = format_table(summary).splitlines()
    assert lines[0].split() == ["metric", "bbox", "segm"]
    assert lines[1].split() == ["AP", "0.0000", "0.5000"]
    assert lines[12].split() == ["ARl", "0.1100", "0.1100"]


# ---------------------------------------------------------------------------------------------- VOC
def dets(boxes, labels, scores=None, size=20):
    """Detections with rectangular masks filling integer boxes (so box IoU = mask IoU)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes), size, size), dtype=bool)
    for mask, box in zip(masks, boxes):
        mask[:] = rect(*map(int, box), height=size, width=size)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores)
    return Detections(torch.from_numpy(boxes), torch.tensor(labels, dtype=torch.int64).reshape(-1),
                      torch.tensor(scores, dtype=torch.float32).reshape(-1), torch.from_numpy(masks))


A, B = [0, 0, 10, 10], [10, 10, 20, 20]  # two disjoint 10x10 objects
FP = [12, 0, 20, 8]  # overlaps neither


@pytest.mark.parametrize("use_masks", [True, False])
def test_voc_hand_values(use_masks):
    gt = dets([A, B], [1, 2])
    # Perfect.
    assert voc_map([gt], [dets([A, B], [1, 2], [0.9, 0.8])], use_masks=use_masks) == 1.0
    # One of two missed: precision 1 up to recall 0.5, then 0 -> 0.5.
    assert voc_map([gt], [dets([A], [1], [0.9])], use_masks=use_masks) == 0.5
    # A false positive ranked first: precisions 0, 1/2 at recalls 0, 1 (one object) -> 1 x 0.5.
    one = dets([A], [1])
    assert voc_map([one], [dets([FP, A], [1, 1], [0.9, 0.8])], use_masks=use_masks) == 0.5
    # ... ranked last: recall 1 reached at precision 1 -> 1.0.
    assert voc_map([one], [dets([A, FP], [1, 1], [0.9, 0.8])], use_masks=use_masks) == 1.0
    # A duplicate between two hits: precisions 1, 1/2, 2/3 at recalls 1/2, 1/2, 1 -> 0.5 x 1 + 0.5 x 2/3 = 5/6.
    ap = voc_map([gt], [dets([A, A, B], [1, 1, 2], [0.9, 0.8, 0.7])], use_masks=use_masks)
    assert ap == pytest.approx(5 / 6, abs=1e-12)
    # Wrong class on the right place: no match -> 0.
    assert voc_map([one], [dets([A], [2])], use_masks=use_masks) == 0.0
    # Mean over images: 1.0 and 0.5.
    assert voc_map([gt, gt], [dets([A, B], [1, 2]), dets([B], [2])], use_masks=use_masks) == 0.75


def test_wrong_class_ground_truth_is_passed_over():
    # The detection's best IoU is with a class-1 object; the class-2 object it overlaps at IoU 0.6 matches.
    gt = dets([[0, 0, 10, 10], [0, 0, 10, 6]], [1, 2])
    detections = dets([[0, 0, 10, 10]], [2])
    ap, precisions, recalls = compute_ap(gt, detections, 0.5)
    assert ap == 0.5  # one of two found, at precision 1
    np.testing.assert_allclose(recalls, [0, 0.5, 1])
    np.testing.assert_allclose(precisions, [1, 1, 0])
    assert compute_ap(gt, detections, 0.65)[0] == 0.0  # 0.6 is below: the search stops there


def test_mask_iou_differs_from_box_iou():
    gt = dets([A], [1])
    thin = dets([A], [1])
    thin.masks[0] = torch.from_numpy(rect(0, 0, 3, 10, 20, 20))  # same box, mask IoU 30 / 100
    assert mask_overlaps(thin.masks.numpy(), gt.masks.numpy())[0, 0] == pytest.approx(0.3)
    assert voc_map([gt], [thin], use_masks=False) == 1.0
    assert voc_map([gt], [thin], use_masks=True) == 0.0


@pytest.mark.parametrize("use_masks", [True, False])
def test_sequence_of_thresholds(use_masks):
    gt = dets([A], [1])
    detection = dets([[0, 0, 9, 8]], [1])  # IoU 72 / 100: a hit at 0.50 .. 0.70, a miss at 0.75 .. 0.95
    assert voc_map([gt], [detection], iou_threshold=np.arange(0.5, 1.0, 0.05), use_masks=use_masks) == 0.5
    assert voc_map([gt], [detection], iou_threshold=[0.5, 0.72], use_masks=use_masks) == 1.0


def test_empty_images():
    gt = dets([A], [1])
    nothing = dets([], [])
    # Ground truth, no detections: 0.0 (matterport's value).
    assert compute_ap(gt, nothing)[0] == 0.0
    # No ground truth: matterport's per-image values are 0.0 without detections and NaN with some.
    assert compute_ap(nothing, nothing)[0] == 0.0
    assert math.isnan(compute_ap(nothing, dets([A], [1]))[0])
    # voc_map leaves such images out of the mean.
    assert voc_map([gt, nothing], [dets([A], [1]), dets([B], [1])]) == 1.0
    with pytest.warns(UserWarning, match="no image has ground truth"):
        assert math.isnan(voc_map([nothing], [nothing]))
    with pytest.raises(ValueError):
        voc_map([gt], [])


def test_ground_truth_detections_drops_crowds():
    dataset = InMemory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gt = ground_truth_detections(dataset, 0)
    assert gt.labels.tolist() == [2, 3, 1]  # cat, dog, kite; the crowd cat is left out
    assert gt.boxes[0].tolist() == [5, 5, 25, 25]
    assert ground_truth_detections(dataset, 0, include_crowd=True).labels.tolist() == [2, 3, 1, -2]
    assert len(ground_truth_detections(dataset, 3)) == 0
