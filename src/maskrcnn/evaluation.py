"""Evaluation: COCO metrics through pycocotools, and the seed repository's per-image VOC-style mAP.

Two measures live here because both are asked for by the people who use this library:
- `CocoEvaluator` gives the twelve standard COCO numbers for boxes and masks, computed by pycocotools'
  own `COCOeval`, so they are the numbers published for COCO models.
- `voc_map` / `compute_ap` give the mAP the seed repository (matterport's `utils.compute_ap`) reports in its
  samples: an AP per image at one IoU threshold, averaged over images.

Shape letters:
    N: ground-truth instances of one image        D: detections of one image
    H, W: the image's height and width
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou
from tqdm import tqdm

from .data.dataset import masks_to_boxes
from .errors import DataError
from .files import atomic_write_json
from .structures import Detections

# The order of COCOeval.stats for detection and segmentation (cocoeval.py, `_summarizeDets`).
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


# ---------------------------------------------------------------------------------------------- COCO
def _encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> N compressed COCO RLEs with `counts` as str, so they go into JSON."""
    if masks.shape[0] == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order.
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _boxes_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x1 y1 x2 y2 -> (N, 4) COCO x y w h: the edge where boxes leave the library."""
    boxes_xywh = boxes_xyxy.astype(np.float64).copy()
    boxes_xywh[:, 2:] -= boxes_xywh[:, :2]
    return boxes_xywh


def coco_results(detections: Detections, image_id, category_id=int) -> list[dict]:
    """One image's detections as COCO result rows: image_id, category_id (`category_id(label)`: the data
    set's own id), bbox [x, y, w, h], score, segmentation (compressed RLE with str counts)."""
    detections = detections.to("cpu")
    boxes_xywh = _boxes_xywh(detections.boxes.numpy())
    # Compact masks (MaskCrops, from predict_tiled) are encoded from their crops, never as full-image arrays.
    rles = detections.masks.to_rle() if detections.is_compact else _encode_masks(detections.masks.numpy().astype(bool))
    labels, scores = detections.labels.tolist(), detections.scores.tolist()
    return [{"image_id": image_id, "category_id": category_id(int(labels[k])), "bbox": [float(v) for v in boxes_xywh[k]],
             "score": float(scores[k]), "segmentation": rles[k]} for k in range(len(labels))]


class CocoEvaluator:
    """COCO box and mask metrics of detections on (some of) a data set's images.

        evaluator = CocoEvaluator(dataset)
        for i in dataset.image_ids:
            evaluator.add(i, model.predict([dataset.load_image(i)])[0])
        summary = evaluator.summarize()      # {"bbox": {"AP": ..., "per_class": {...}}, "segm": {...}}

    Ground truth: a data set with a `coco` attribute (CocoDataset) is evaluated against that pycocotools
    object as it is, with results mapped to the source's image and category ids, so the numbers are the
    ones COCOeval gives on the original annotation file. Any other data set gets a ground truth built in
    memory from `load_mask` (RLE masks, box of the mask, area = mask pixels, negative class id = crowd),
    with internal ids as COCO ids.

    Only images passed to `add` are evaluated. Metrics that COCOeval reports as -1 (no ground truth in that
    area range) are reported as NaN. With no detections at all, COCOeval still runs on an empty result set:
    every metric with ground truth behind it is 0.0, and a warning says that nothing was detected.
    """

    def __init__(self, dataset, *, iou_types: Sequence[str] = IOU_TYPES):
        for iou_type in iou_types:
            if iou_type not in IOU_TYPES:
                raise ValueError(f"iou_types: {iou_type!r} is not one of {IOU_TYPES}")
        self.dataset = dataset
        self.iou_types = tuple(iou_types)
        self.coco_gt: COCO | None = getattr(dataset, "coco", None)
        self._results: dict[int, list[dict]] = {}  # internal image index -> its COCO result dicts
        self._gt_images: dict[int, dict] = {}  # in-memory ground truth only
        self._gt_annotations: dict[int, list[dict]] = {}
        self.coco_evals: dict[str, COCOeval] = {}  # the last summarize()'s COCOeval per IoU type

    # ------------------------------------------------------------------ adding images
    def _coco_image_id(self, image_index: int):
        return self.dataset.image_info[image_index]["id"] if self.coco_gt is not None else int(image_index)

    def _coco_category_id(self, class_id: int) -> int:
        if self.coco_gt is None:
            return int(class_id)
        return self.dataset.get_source_class_id(class_id, self.dataset.class_info[class_id]["source"])

    def add(self, image_id: int, detections: Detections) -> None:
        """Record the detections of the image with internal index `image_id` (its own pixels)."""
        image_index = int(image_id)
        if not 0 <= image_index < len(self.dataset.image_info):
            raise DataError(f"image index {image_index} is not in the data set ({len(self.dataset.image_info)} images)")
        if image_index in self._results:
            raise DataError(f"image {self.dataset.image_reference(image_index)} was added twice")
        detections = detections.to("cpu")
        height, width = detections.image_size
        source_id = self._coco_image_id(image_index)
        if self.coco_gt is not None:
            if source_id not in self.coco_gt.imgs:
                raise DataError(f"image id {source_id!r} is not in the data set's COCO annotations")
            expected = self.coco_gt.imgs[source_id]
            expected_size = (expected.get("height", height), expected.get("width", width))
        else:
            expected_size = self._add_ground_truth(image_index)
        if len(detections) and (height, width) != tuple(expected_size):
            raise DataError(
                f"image {self.dataset.image_reference(image_index)}: detection masks are {height}x{width} but the "
                f"image is {expected_size[0]}x{expected_size[1]}; detections must be in the image's own pixels"
            )
        labels = detections.labels.numpy()
        if len(labels) and (labels.min() < 1 or labels.max() >= len(self.dataset.class_info)):
            raise DataError(
                f"image {self.dataset.image_reference(image_index)}: detection labels must be 1.."
                f"{len(self.dataset.class_info) - 1}, got {sorted(set(labels.tolist()))}"
            )
        self._results[image_index] = coco_results(detections, source_id, self._coco_category_id)

    def _add_ground_truth(self, image_index: int) -> tuple[int, int]:
        """Build the COCO ground truth of one image from `load_mask`; returns its (H, W)."""
        masks, class_ids = self.dataset.load_mask(image_index)  # (N, H, W) bool, (N,) int64
        masks = np.asarray(masks, dtype=bool)
        height, width = masks.shape[1:]
        boxes_xywh = _boxes_xywh(masks_to_boxes(masks))
        self._gt_images[image_index] = {"id": int(image_index), "height": int(height), "width": int(width)}
        self._gt_annotations[image_index] = [
            {
                "image_id": int(image_index),
                "category_id": abs(int(class_id)),
                "segmentation": rle,
                "area": float(masks[k].sum()),
                "bbox": [float(v) for v in boxes_xywh[k]],
                "iscrowd": int(class_id < 0),
            }
            for k, (class_id, rle) in enumerate(zip(class_ids, _encode_masks(masks)))
        ]
        return int(height), int(width)

    # ------------------------------------------------------------------ results
    def results(self) -> list[dict]:
        """All detections as COCO results: image_id, category_id, bbox [x, y, w, h], score, segmentation (RLE)."""
        return [result for index in sorted(self._results) for result in self._results[index]]

    def write_results(self, path: str | Path) -> Path:
        """Write `results()` as the COCO results JSON (a list of objects); the folder is created."""
        return atomic_write_json(path, self.results())

    def _ground_truth(self) -> COCO:
        if self.coco_gt is not None:
            return self.coco_gt
        categories = [
            {"id": class_id, "name": name} for class_id, name in enumerate(self.dataset.class_names) if class_id > 0
        ]
        annotations = [ann for index in sorted(self._gt_annotations) for ann in self._gt_annotations[index]]
        for ann_id, ann in enumerate(annotations, start=1):
            ann["id"] = ann_id
        coco = COCO()
        coco.dataset = {
            "images": [self._gt_images[index] for index in sorted(self._gt_images)],
            "categories": categories,
            "annotations": annotations,
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def _load_results(self, coco_gt: COCO, results: list[dict]) -> COCO:
        if results:
            return coco_gt.loadRes(results)
        # loadRes reads results[0] to tell the result kind, so an empty list needs an empty COCO by hand.
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt

    def _category_ids(self, coco_gt: COCO) -> list[int]:
        """The data set's categories that the ground truth knows, so a subset of classes is scored alone."""
        known = set(coco_gt.getCatIds())
        ids = {self._coco_category_id(c) for c in range(1, len(self.dataset.class_info))}
        return sorted(ids & known)

    def summarize(self, *, verbose: bool = False) -> dict[str, dict]:
        """COCOeval on the added images: {"bbox": {"AP": ..., ..., "ARl": ..., "per_class": {name: AP}}, "segm": ...}.

        Numbers are fractions in [0, 1] (not percent); NaN where COCOeval has no ground truth to score.
        `verbose=True` prints pycocotools' own report; otherwise it is kept quiet.
        """
        if not self._results:
            raise DataError("no images were added to the evaluator; call add(image_index, detections) first")
        results = self.results()
        if not results:
            warnings.warn("no detections on any of the evaluated images: every COCO metric is 0.0 "
                          "(NaN where there is no ground truth either)", stacklevel=2)
        coco_gt = self._ground_truth()
        image_ids = sorted({self._coco_image_id(index) for index in self._results})
        category_ids = self._category_ids(coco_gt)
        names = {self._coco_category_id(c): info["name"] for c, info in enumerate(self.dataset.class_info) if c > 0}
        summary = {}
        for iou_type in self.iou_types:
            # Mask AP uses the mask's area for small/medium/large only when the result has no box
            # (loadRes sets area = box area whenever 'bbox' is present), and box AP needs no masks.
            drop = "bbox" if iou_type == "segm" else "segmentation"
            typed = [{k: v for k, v in r.items() if k != drop} for r in copy.deepcopy(results)]
            report = io.StringIO()
            with contextlib.redirect_stdout(report):
                coco_dt = self._load_results(coco_gt, typed)
                coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
                coco_eval.params.imgIds = image_ids
                coco_eval.params.catIds = category_ids
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
            if verbose:
                print(f"COCO {iou_type}:\n{report.getvalue()}")
            metrics = {name: _nan_if_missing(value) for name, value in zip(METRIC_NAMES, coco_eval.stats)}
            # precision: (T IoUs, R recall points, K categories, A areas, M max-dets); area "all", 100 dets.
            precision = coco_eval.eval["precision"]
            per_class, per_class_50 = {}, {}
            at_50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
            for k, category_id in enumerate(coco_eval.params.catIds):
                values = precision[:, :, k, 0, -1]
                per_class[names[category_id]] = float(values[values > -1].mean()) if (values > -1).any() else math.nan
                values = precision[at_50, :, k, 0, -1]
                per_class_50[names[category_id]] = float(values[values > -1].mean()) if (values > -1).any() else math.nan
            metrics["per_class"] = per_class
            metrics["per_class_AP50"] = per_class_50
            summary[iou_type] = metrics
            self.coco_evals[iou_type] = coco_eval
        return summary

    def precision_recall(self, iou_type: str, iou_threshold: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{class name: (recall (R,), precision (R,))}: the last summarize()'s interpolated precision at COCOeval's
        101 recall points, area "all", 100 detections, at the IoU threshold nearest `iou_threshold`; NaN where
        COCOeval has none (a recall the detections never reach)."""
        if iou_type not in self.coco_evals:
            raise ValueError(f"precision_recall({iou_type!r}): call summarize() with that IoU type first")
        coco_eval = self.coco_evals[iou_type]
        t = int(np.argmin(np.abs(coco_eval.params.iouThrs - iou_threshold)))
        recall = np.asarray(coco_eval.params.recThrs, dtype=np.float64)
        names = {self._coco_category_id(c): info["name"] for c, info in enumerate(self.dataset.class_info) if c > 0}
        curves = {}
        for k, category_id in enumerate(coco_eval.params.catIds):
            precision = coco_eval.eval["precision"][t, :, k, 0, -1].astype(np.float64)  # (R,)
            curves[names[category_id]] = (recall, np.where(precision > -1, precision, np.nan))
        return curves


def _nan_if_missing(value: float) -> float:
    # COCOeval writes -1 where an area range or category has no ground truth at all.
    return math.nan if value == -1 else float(value)


def format_table(summary: dict[str, dict]) -> str:
    """The twelve COCO numbers of `CocoEvaluator.summarize()`, box and mask side by side, as text."""
    iou_types = [t for t in IOU_TYPES if t in summary]
    lines = [f"{'metric':<8}" + "".join(f"{t:>10}" for t in iou_types)]
    for name in METRIC_NAMES:
        lines.append(f"{name:<8}" + "".join(f"{summary[t][name]:>10.4f}" for t in iou_types))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- VOC
def box_overlaps(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> np.ndarray:
    """IoU of (D, 4) and (N, 4) x1 y1 x2 y2 boxes -> (D, N) float64."""
    return box_iou(boxes_a.double(), boxes_b.double()).numpy()


def mask_overlaps(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """IoU of (D, H, W) and (N, H, W) bool masks -> (D, N) float64; 0 where both masks are empty."""
    # (D, H, W) -> (D, H*W): intersections of every pair are one matrix product.
    if masks_a.shape[1:] != masks_b.shape[1:]:
        raise ValueError(f"mask IoU needs masks of one image size, got {masks_a.shape[1:]} and {masks_b.shape[1:]}")
    pixels = int(np.prod(masks_a.shape[1:]))
    flat_a = masks_a.reshape(masks_a.shape[0], pixels).astype(np.float64)
    flat_b = masks_b.reshape(masks_b.shape[0], pixels).astype(np.float64)
    intersections = flat_a @ flat_b.T  # (D, N)
    unions = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - intersections
    return np.divide(intersections, unions, out=np.zeros_like(intersections), where=unions > 0)


def match_detections(overlaps: np.ndarray, gt_labels: np.ndarray, pred_labels: np.ndarray,
                     iou_threshold: float) -> np.ndarray:
    """Greedy matching of detections (already in descending score order) to ground truth.

    overlaps: (D, N) IoU. Returns (D,) int64: the matched ground-truth index, or -1 (false positive).
    As matterport's `compute_matches`: for each detection, ground truths in descending IoU; matched ones are
    skipped; the first below the threshold ends the search; the first of the same class is the match.
    (matterport tests `gt_match[j] > 0`, so a ground truth taken by the top-ranked detection can be taken
    again; we skip every matched one, as its comment intends.)
    """
    pred_match = np.full(len(pred_labels), -1, dtype=np.int64)
    gt_taken = np.zeros(len(gt_labels), dtype=bool)
    for i in range(len(pred_labels)):
        for j in np.argsort(-overlaps[i], kind="stable"):
            if gt_taken[j]:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if gt_labels[j] == pred_labels[i]:
                gt_taken[j] = True
                pred_match[i] = j
                break
    return pred_match


def compute_ap(ground_truth: Detections, detections: Detections, iou_threshold: float = 0.5,
               use_masks: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one image at one IoU threshold, as matterport's `utils.compute_ap`.

    Returns (ap, precisions, recalls): precisions and recalls have D + 2 entries, one per detection in score
    order, padded as matterport does (recall 0 and 1 at the ends, precision 0 at both ends) and with the
    precision made monotone from the right; ap = sum over recall steps of step width x precision.
    Ground-truth scores are ignored; a negative ground-truth label (crowd) never matches.
    Empty cases give matterport's values: no detections -> 0.0; no ground truth and no detections -> 0.0;
    no ground truth with detections -> NaN (recall has nothing to divide by).
    """
    order = np.argsort(-detections.scores.cpu().numpy(), kind="stable")  # descending; ties keep input order
    if use_masks:
        overlaps = mask_overlaps(detections.masks.cpu().numpy().astype(bool)[order],
                                 ground_truth.masks.cpu().numpy().astype(bool))
    else:
        overlaps = box_overlaps(detections.boxes.cpu()[torch.from_numpy(order)], ground_truth.boxes.cpu())
    pred_match = match_detections(overlaps, ground_truth.labels.cpu().numpy(),
                                  detections.labels.cpu().numpy()[order], iou_threshold)
    true_positives = np.cumsum(pred_match > -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precisions = true_positives / np.arange(1, len(pred_match) + 1)
        recalls = true_positives / len(ground_truth)
    precisions = np.concatenate([[0.0], precisions, [0.0]])
    recalls = np.concatenate([[0.0], recalls, [1.0]])
    # VOC: the precision at a recall level is the best precision at that recall or beyond.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    steps = np.flatnonzero(recalls[:-1] != recalls[1:]) + 1
    ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return ap, precisions, recalls


def voc_map(ground_truths: Sequence[Detections], detections: Sequence[Detections],
            iou_threshold: float | Sequence[float] = 0.5, use_masks: bool = True) -> float:
    """Mean over images of `compute_ap` (the seed repository's mAP), one Detections per image in each list.

    `iou_threshold` may be a sequence (e.g. np.arange(0.5, 1.0, 0.05)): the result is the mean over the
    thresholds, as matterport's `compute_ap_range`. IoU is of masks when `use_masks`, else of boxes.
    Images without ground truth are left out of the mean: matterport's loop would count them as 0.0 (no
    detections) or NaN (some detections), punishing a correct empty answer or spoiling the whole mean.
    If no image has ground truth the result is NaN, with a warning.
    """
    if len(ground_truths) != len(detections):
        raise ValueError(f"voc_map: {len(ground_truths)} ground truths but {len(detections)} detection lists")
    thresholds = np.atleast_1d(np.asarray(iou_threshold, dtype=np.float64))
    pairs = [(gt, det) for gt, det in zip(ground_truths, detections) if len(gt) > 0]
    if not pairs:
        warnings.warn("voc_map: no image has ground truth; mAP is NaN", stacklevel=2)
        return math.nan
    per_threshold = [np.mean([compute_ap(gt, det, float(t), use_masks)[0] for gt, det in pairs]) for t in thresholds]
    return float(np.mean(per_threshold))


def map50_scores(ground_truths: Sequence[Detections], found: Sequence[Detections]) -> dict:
    """{"box_map50", "mask_map50"}: `voc_map` at IoU 0.5 of boxes and of masks, what training logs."""
    return {"box_map50": voc_map(ground_truths, found, 0.5, use_masks=False),
            "mask_map50": voc_map(ground_truths, found, 0.5, use_masks=True)}


def evaluate_map(model, dataset, *, batch_size: int = 8, progress: bool = False) -> dict:
    """{"box_map50", "mask_map50"} of the model on every image of a data set (matterport's compute_ap)."""
    ground_truths, found = [], []
    indices = list(range(len(dataset)))
    for start in tqdm(range(0, len(indices), batch_size), desc="evaluate", disable=not progress, leave=False):
        batch = indices[start:start + batch_size]
        found += model.predict([dataset.load_image(i) for i in batch])
        ground_truths += [ground_truth_detections(dataset, i) for i in batch]
    return map50_scores(ground_truths, found)


def evaluate_coco(model, dataset, *, out=None, results=None, progress: bool = False,
                  score_threshold: float | None = None) -> dict:
    """COCO metrics of `model` on every image of `dataset` (CocoEvaluator.summarize()); `out`: also write them
    as JSON (NaN as null: strict JSON has no NaN), `results`: also write the COCO results (detections).
    score_threshold: the detections kept (None: the config's detection_min_confidence; 0.0: every detection up
    to detection_max_instances an image, the COCO evaluation standard).

    Raises DataError when the model predicts another number of classes than the data set has; class names
    that differ (same count) are matched by position, with a warning.
    """
    if model.config.num_classes != dataset.num_classes:
        raise DataError(f"the model predicts {model.config.num_classes - 1} classes but the data set has "
                        f"{dataset.num_classes - 1} ({', '.join(dataset.class_names[1:])})")
    if list(model.class_names) != list(dataset.class_names):
        warnings.warn(f"class names differ: the model has {list(model.class_names)[1:]}, the data set "
                      f"{dataset.class_names[1:]}; classes are matched by position", stacklevel=2)
    evaluator = CocoEvaluator(dataset)
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, dynamic_ncols=True):
        evaluator.add(i, model.predict([dataset.load_image(i)], score_threshold=score_threshold)[0])
    summary = evaluator.summarize()
    if out is not None:
        atomic_write_json(out, nan_to_none(summary), indent=2)
    if results is not None:
        evaluator.write_results(results)
    return summary


def nan_to_none(value):
    """The same nested dicts and lists with every NaN float replaced by None (null in JSON)."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def ground_truth_detections(dataset, image_index: int, *, include_crowd: bool = False) -> Detections:
    """A data set image's ground truth as Detections (scores 1.0, boxes from the masks) for `voc_map`.

    Crowd regions (negative class ids) are left out unless `include_crowd`, which keeps them with their
    negative labels (they then never match, as in matterport's evaluation).
    """
    masks, class_ids = dataset.load_mask(image_index)  # (N, H, W) bool, (N,) int64
    masks = np.asarray(masks, dtype=bool)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    if not include_crowd:
        masks, class_ids = masks[class_ids > 0], class_ids[class_ids > 0]
    return Detections(
        boxes=torch.from_numpy(masks_to_boxes(masks)),
        labels=torch.from_numpy(class_ids),
        scores=torch.ones(len(class_ids), dtype=torch.float32),
        masks=torch.from_numpy(masks),
    )
