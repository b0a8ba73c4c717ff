"""The evaluation report: one self-contained HTML page (pictures embedded as base64 PNG) and its data as JSON.

What it holds, for a model on a data set:
- the twelve COCO numbers for boxes and masks (pycocotools' COCOeval, through `CocoEvaluator`);
- per class: box and mask AP and AP50 (COCOeval's per-category precision), and precision, recall and F1 at one
  score and IoU threshold (`confusion.precision_recall_f1`);
- the confusion matrix over the classes plus background at that threshold, as a picture;
- precision-recall curves per class (COCOeval's interpolated precision at its 101 recall points);
- a gallery of the images with the most errors (missed, spurious, confused), ground truth beside predictions.

The AP uses every detection scoring at least `score_threshold`, 0 by default: COCO's standard (up to the
config's detection_max_instances, 100, an image), not a display threshold such as the matterport preset's 0.7.

Shape letters:
    C: classes including background     H, W: an image's height and width
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from string import Template

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm

from .confusion import BACKGROUND, errors, image_confusion, precision_recall_f1
from .errors import DataError
from .evaluation import IOU_TYPES, METRIC_NAMES, CocoEvaluator, ground_truth_detections, nan_to_none
from .files import atomic_write_json, atomic_write_text
from .visualize import contact_sheet, draw_ground_truth, draw_instances

HTML_NAME = "report.html"
JSON_NAME = "report.json"
GALLERY_SIZE = 6  # images shown with the most errors


@dataclass
class Report:
    """What `write_report` made: the COCO summary (CocoEvaluator.summarize()), the evaluator, the two files."""

    summary: dict
    evaluator: CocoEvaluator
    html: Path
    json: Path
    data: dict  # what report.json holds (NaN as None)


def write_report(model, dataset, out_dir, *, score_threshold: float = 0.0, iou_threshold: float = 0.5,
                 use_masks: bool = True, gallery_size: int = GALLERY_SIZE, progress: bool = False) -> Report:
    """Evaluate `model` on every image of `dataset` and write out_dir/report.html and out_dir/report.json.

    score_threshold: detections kept for the AP and counted in precision, recall, F1 and the confusion matrix;
    iou_threshold: where a detection counts as its ground truth's (of masks when use_masks, else of boxes),
    also the IoU of the precision-recall curves (COCOeval's threshold nearest to it).
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"the score threshold (--score-threshold) must be in [0, 1], got {score_threshold}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"the IoU threshold (--iou) must be in (0, 1], got {iou_threshold}")
    if model.config.num_classes != dataset.num_classes:
        raise DataError(f"the model predicts {model.config.num_classes - 1} classes but the data set has "
                        f"{dataset.num_classes - 1} ({', '.join(dataset.class_names[1:])})")
    if len(dataset) == 0:
        raise DataError("the data set has no images to evaluate")
    class_names = list(dataset.class_names)
    evaluator = CocoEvaluator(dataset)
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)  # (C, C) ground truth x detection
    per_image = []  # (errors, missed, spurious, index)
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, dynamic_ncols=True):
        found = model.predict([dataset.load_image(i)], score_threshold=score_threshold)[0]
        evaluator.add(i, found)
        image_matrix = image_confusion(ground_truth_detections(dataset, i, include_crowd=True), found, len(class_names),
                                       iou_threshold=iou_threshold, score_threshold=score_threshold, use_masks=use_masks)
        matrix += image_matrix
        per_image.append((errors(image_matrix), int(image_matrix[1:, BACKGROUND].sum()),
                          int(image_matrix[BACKGROUND, 1:].sum()), i))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no detections": the report shows the zeros
        summary = evaluator.summarize()
    counts = precision_recall_f1(matrix)
    classes = []
    for k, name in enumerate(class_names[1:]):
        row = {"name": name}
        for iou_type, short in (("bbox", "box"), ("segm", "mask")):
            row[f"{short}_AP"] = summary[iou_type]["per_class"].get(name, math.nan)
            row[f"{short}_AP50"] = summary[iou_type]["per_class_AP50"].get(name, math.nan)
        row.update({key: (int(values[k]) if key in ("tp", "fp", "fn") else float(values[k]))
                    for key, values in counts.items()})
        classes.append(row)
    curves = {iou_type: evaluator.precision_recall(iou_type, iou_threshold) for iou_type in IOU_TYPES}
    worst = sorted((entry for entry in per_image if entry[0] > 0), key=lambda e: (-e[0], e[3]))[:gallery_size]
    gallery = [_gallery_entry(model, dataset, class_names, entry, score_threshold) for entry in worst]
    labels = ["background"] + class_names[1:]
    data = nan_to_none({
        "images": len(dataset),
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "iou_of": "masks" if use_masks else "boxes",
        "coco": {iou_type: {name: summary[iou_type][name] for name in METRIC_NAMES} for iou_type in IOU_TYPES},
        "classes": classes,
        "confusion_matrix": {"labels": labels, "rows": "ground truth", "columns": "detection",
                             "counts": matrix.tolist()},
        "precision_recall": {iou_type: {name: {"recall": r.tolist(), "precision": p.tolist()}
                                        for name, (r, p) in curves[iou_type].items()} for iou_type in IOU_TYPES},
        "gallery": [{k: v for k, v in entry.items() if k != "picture"} for entry in gallery],
    })
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_json(out_dir / JSON_NAME, data, indent=1)
    pictures = {
        "confusion": _figure_png(confusion_figure(matrix, labels, iou_threshold, score_threshold)),
        **{f"pr_{iou_type}": _figure_png(precision_recall_figure(curves[iou_type], iou_type, iou_threshold))
           for iou_type in IOU_TYPES},
    }
    page = render_html(data, pictures, [_png(entry["picture"]) for entry in gallery])
    html_path = atomic_write_text(out_dir / HTML_NAME, page)
    return Report(summary=summary, evaluator=evaluator, html=html_path, json=json_path, data=data)


def _gallery_entry(model, dataset, class_names, entry, score_threshold: float) -> dict:
    """One image of the gallery: ground truth and predictions side by side, and its counts."""
    count, missed, spurious, index = entry
    image = dataset.load_image(index)
    found = model.predict([image], score_threshold=score_threshold)[0]
    scale = max(1, 256 // max(image.shape[:2]))  # small images enlarged so that the captions can be read
    truth = draw_ground_truth(dataset, index, scale=scale)
    predicted = draw_instances(image, found, class_names, score_threshold=score_threshold, scale=scale)
    picture = contact_sheet([truth, predicted], columns=2,
                            labels=["ground truth", f"predictions (score >= {score_threshold:g})"])
    return {"image": dataset.image_reference(index), "index": index, "errors": count, "missed": missed,
            "spurious": spurious, "confused": count - missed - spurious, "picture": picture}


# ---------------------------------------------------------------------------------------------- pictures
def confusion_figure(matrix: np.ndarray, labels, iou_threshold: float, score_threshold: float) -> Figure:
    """The (C, C) counts as a grid, each cell written out, coloured by its share of its ground-truth row."""
    size = 2.5 + 0.6 * len(labels)
    figure = Figure(figsize=(size, size * 0.9), dpi=100)
    axes = figure.add_subplot()
    totals = matrix.sum(1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, str(value), ha="center", va="center", color="white" if shares[row, column] > 0.6 else "black")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("detected as")
    axes.set_ylabel("ground truth")
    axes.set_title(f"IoU >= {iou_threshold:g}, score >= {score_threshold:g}")
    figure.tight_layout()
    return figure


def precision_recall_figure(curves: dict, iou_type: str, iou_threshold: float) -> Figure:
    """One precision-recall curve per class, with its AP at that IoU (the mean of the curve) in the legend."""
    figure = Figure(figsize=(5, 4), dpi=100)
    axes = figure.add_subplot()
    for name, (recall, precision) in curves.items():
        valid = ~np.isnan(precision)
        ap = float(precision[valid].mean()) if valid.any() else math.nan
        axes.plot(recall[valid], precision[valid], label=f"{name} ({ap:.3f})")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"{'box' if iou_type == 'bbox' else 'mask'} precision-recall, IoU {iou_threshold:g}")
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return figure


def _figure_png(figure: Figure) -> bytes:
    # FigureCanvasAgg: no pyplot state, no window.
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the page
PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Mask R-CNN evaluation report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
.note { color: #555; }
</style>
</head>
<body>
<h1>Evaluation report</h1>
<p class="note">$images images. AP over detections with score &ge; $score_threshold (COCOeval, at most the model's
detections per image). Precision, recall, F1 and the confusion matrix at score &ge; $score_threshold and IoU of
$iou_of &ge; $iou_threshold.</p>
<h2>COCO metrics</h2>
<table id="coco-table"><thead><tr><th>metric</th><th>box</th><th>mask</th></tr></thead>
<tbody>
$coco_rows
</tbody></table>
<h2>Per class</h2>
<table id="class-table"><thead><tr><th>class</th><th>box AP</th><th>mask AP</th><th>box AP50</th><th>mask AP50</th>
<th>TP</th><th>FP</th><th>FN</th><th>precision</th><th>recall</th><th>F1</th></tr></thead>
<tbody>
$class_rows
</tbody></table>
<h2>Confusion matrix</h2>
<p class="note">Rows: the ground truth's class; columns: the detection's. The background row holds spurious
detections, the background column missed objects; detections on crowd regions are not counted.</p>
<figure><img id="confusion" alt="confusion matrix" src="data:image/png;base64,$confusion"></figure>
<h2>Precision-recall curves</h2>
<figure><img id="pr-bbox" alt="box precision-recall curves" src="data:image/png;base64,$pr_bbox"></figure>
<figure><img id="pr-segm" alt="mask precision-recall curves" src="data:image/png;base64,$pr_segm"></figure>
<h2>Images with the most errors</h2>
$gallery
</body>
</html>
""")


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def render_html(data: dict, pictures: dict[str, bytes], gallery_pngs: list[bytes]) -> str:
    """The page for `data` (report.json's content), with the PNG pictures embedded."""
    def encoded(png: bytes) -> str:
        return base64.b64encode(png).decode("ascii")

    coco_rows = "\n".join(
        f"<tr><td>{name}</td><td>{_number(data['coco']['bbox'][name])}</td><td>{_number(data['coco']['segm'][name])}</td></tr>"
        for name in METRIC_NAMES)
    keys = ("box_AP", "mask_AP", "box_AP50", "mask_AP50", "tp", "fp", "fn", "precision", "recall", "f1")
    class_rows = "\n".join(
        f"<tr><td>{html.escape(row['name'])}</td>" + "".join(f"<td>{_number(row[key])}</td>" for key in keys) + "</tr>"
        for row in data["classes"])
    if data["gallery"]:
        gallery = "\n".join(
            f'<figure><img class="gallery" alt="{html.escape(entry["image"])}" src="data:image/png;base64,{encoded(png)}">'
            f'<figcaption>{html.escape(entry["image"])}: {entry["missed"]} missed, {entry["spurious"]} spurious, '
            f'{entry["confused"]} of another class</figcaption></figure>'
            for entry, png in zip(data["gallery"], gallery_pngs))
    else:
        gallery = '<p class="note">No errors at this threshold.</p>'
    return PAGE.substitute(
        images=data["images"], score_threshold=f"{data['score_threshold']:g}", iou_threshold=f"{data['iou_threshold']:g}",
        iou_of=data["iou_of"], coco_rows=coco_rows, class_rows=class_rows, gallery=gallery,
        confusion=encoded(pictures["confusion"]), pr_bbox=encoded(pictures["pr_bbox"]), pr_segm=encoded(pictures["pr_segm"]))


def read_report(out_dir) -> dict:
    """report.json of a report folder, as written."""
    return json.loads((Path(out_dir) / JSON_NAME).read_text())
