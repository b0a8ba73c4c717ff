"""Tiled prediction on large scenes of the demo's shapes: `maskrcnn predict --tile` against SAHI's sliced prediction.

    maskrcnn demo --out /tmp/demo_model                      # the model (about 5 minutes on a quiet 2-core CPU)
    pip install -e .[benchmark]                               # sahi
    python benchmarks/tiled.py --weights /tmp/demo_model/model.pt --out /tmp/tiled_bench

Scenes: one background colour, squares, circles and triangles of the demo's sizes (24..64 px across), never
overlapping, placed at random so that many cross tile edges: 1024x1024 with 80 shapes and 3072x3072 with 900 (and, with
`--scenes 6144`, 6144x6144 with 3600).
Both sides cut the scene into tiles of 256 with an overlap of 64 (SAHI: overlap ratio 0.25), predict them with
the same model and merge: ours with `maskrcnn predict --tile 256 --overlap 64` (tiling.py), SAHI with its
default merging (GREEDYNMM, IOS 0.5, per class) through a DetectionModel wrapping our model; SAHI's extra
full-image pass (perform_standard_pred) is off, so that both see the same tiles.

Reported per scene and method: mask AP@0.5 (pycocotools), objects found twice (two detections scoring >= 0.5 at
mask IoU >= 0.5 with it), objects split in two (two or more detections scoring >= 0.5 lying mostly (>= 50% of their
pixels) on it, at least one of them with IoU < 0.5), wall time and peak memory (maximum resident set size of the
whole command, from /usr/bin/time's ru_maxrss: model, image, tiles, merging and writing results).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

TILE, OVERLAP = 256, 64
SCENES = {"1024": (1024, 80, 0), "3072": (3072, 900, 1), "6144": (6144, 3600, 2)}  # name: (side, shapes, seed)
HALF_SIZES = (12, 32)  # the demo's shapes at 128 px (data/shapes.py)
GAP = 2  # px between shapes' boxes
SCORE = 0.5  # detections counted as found (twice, split) from this score


def make_scene(side: int, count: int, seed: int):
    """(H, W, 3) uint8 scene and its ground truth: COCO annotations with RLE masks."""
    from pycocotools import mask as mask_utils

    from maskrcnn.data.shapes import CLASS_NAMES, _distinct_colour, _draw_shape

    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(0, 256, size=3))
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = background
    taken = np.zeros((side, side), dtype=bool)
    annotations = []
    while len(annotations) < count:
        half = int(rng.integers(HALF_SIZES[0], HALF_SIZES[1] + 1))
        x0, y0 = int(rng.integers(0, side - 2 * half)), int(rng.integers(0, side - 2 * half))
        if taken[max(0, y0 - GAP):y0 + 2 * half + GAP, max(0, x0 - GAP):x0 + 2 * half + GAP].any():
            continue
        name = CLASS_NAMES[int(rng.integers(0, len(CLASS_NAMES)))]
        colour = _distinct_colour(rng, background)
        local = _draw_shape((name, colour, half, half, half), 2 * half, 2 * half)  # (2h, 2h) bool
        taken[y0:y0 + 2 * half, x0:x0 + 2 * half] = True
        image[y0:y0 + 2 * half, x0:x0 + 2 * half][local] = colour
        full = np.zeros((side, side), dtype=np.uint8, order="F")
        full[y0:y0 + 2 * half, x0:x0 + 2 * half] = local
        rle = mask_utils.encode(full)
        rle["counts"] = rle["counts"].decode("ascii")
        ys, xs = np.nonzero(local)
        annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": CLASS_NAMES.index(name) + 1,
                            "segmentation": rle, "area": int(local.sum()), "iscrowd": 0,
                            "bbox": [x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min() + 1),
                                     int(ys.max() - ys.min() + 1)]})
    ground_truth = {"images": [{"id": 1, "width": side, "height": side, "file_name": "scene.png"}],
                    "annotations": annotations,
                    "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)]}
    return image, ground_truth


def crossing_edges(ground_truth: dict, side: int) -> int:
    """Shapes whose box crosses an interior tile edge."""
    from maskrcnn.tiling import tile_positions

    starts = tile_positions(side, TILE, OVERLAP)
    edges = sorted({s for s in starts if s > 0} | {s + TILE for s in starts if s + TILE < side})
    count = 0
    for a in ground_truth["annotations"]:
        x, y, w, h = a["bbox"]
        count += any(x < e < x + w or y < e < y + h for e in edges)
    return count


def measured(command: list[str]) -> tuple[float, float]:
    """Run a command; (wall seconds, peak resident memory in GiB) of it and its children."""
    wrapper = [sys.executable, "-c", "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"]
    start = time.perf_counter()
    done = subprocess.run(wrapper + command, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 2**20


def sahi_predict(weights: str, image_path: str, out: str) -> None:
    """Run in its own process: SAHI's get_sliced_prediction with our model; COCO results to `out`."""
    import torch
    from pycocotools import mask as mask_utils
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    import maskrcnn

    torch.set_grad_enabled(False)

    class OurModel(DetectionModel):
        """SAHI's interface to a maskrcnn model (as sahi.models.torchvision wraps torchvision's)."""

        def load_model(self):
            self.set_model(maskrcnn.load(self.model_path))

        def set_model(self, model, **kwargs):
            self.model = model
            self.category_mapping = {str(i): n for i, n in enumerate(model.class_names) if i > 0}

        def perform_inference(self, image: np.ndarray):
            self._original_predictions = self.model.predict([np.ascontiguousarray(image)])

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=[[0, 0]],
                                                                     full_shape_list=None):
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            shape = None if full_shape_list is None else full_shape_list[0]
            found = self._original_predictions[0]
            predictions = []
            for box, label, score, mask in zip(found.boxes.tolist(), found.labels.tolist(), found.scores.tolist(),
                                               found.masks.numpy()):
                if score < self.confidence_threshold:
                    continue
                segmentation = get_coco_segmentation_from_bool_mask(mask)
                if not segmentation:
                    continue
                predictions.append(ObjectPrediction(bbox=box, segmentation=segmentation, category_id=int(label),
                                                    category_name=self.category_mapping[str(label)], score=score,
                                                    shift_amount=shift, full_shape=shape))
            self._object_prediction_list_per_image = [predictions]

    image = np.asarray(Image.open(image_path).convert("RGB"))
    model = OurModel(model_path=weights, confidence_threshold=0.05, device="cpu")
    result = get_sliced_prediction(image, model, slice_height=TILE, slice_width=TILE,
                                   overlap_height_ratio=OVERLAP / TILE, overlap_width_ratio=OVERLAP / TILE,
                                   perform_standard_pred=False, verbose=0)
    height, width = image.shape[:2]
    rows = []
    for p in result.object_prediction_list:
        polygons = [poly for poly in p.mask.segmentation if len(poly) >= 6]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        rle["counts"] = rle["counts"].decode("ascii")
        x1, y1, x2, y2 = p.bbox.to_xyxy()
        rows.append({"image_id": 1, "category_id": int(p.category.id), "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "score": float(p.score.value), "segmentation": rle})
    Path(out).write_text(json.dumps(rows))


def scores_of(results: list[dict], ground_truth: dict) -> dict:
    """AP@0.5 (masks), objects found twice and objects split in two."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        found = coco.loadRes(results) if results else None
        ap50 = 0.0
        if found is not None:
            evaluation = COCOeval(coco, found, "segm")
            evaluation.params.maxDets = [1, 10, 100000]  # every detection counts, however many objects
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            ap50 = float(evaluation.stats[1])
    confident = [r["segmentation"] for r in results if r["score"] >= SCORE]
    objects = [a["segmentation"] for a in ground_truth["annotations"]]
    twice = split = 0
    if confident:
        iou = mask_utils.iou(confident, objects, [0] * len(objects))  # (D, G)
        on_object = mask_utils.iou(confident, objects, [1] * len(objects))  # (D, G): intersection / detection area
        for g in range(len(objects)):
            matched = int((iou[:, g] >= 0.5).sum())
            mostly_on = on_object[:, g] >= 0.5
            twice += matched >= 2
            split += int(mostly_on.sum()) >= 2 and bool((iou[mostly_on, g] < 0.5).any())
    return {"ap50": ap50, "found_twice": twice, "split": split, "detections": len(results),
            "confident": len(confident), "objects": len(objects)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="the model maskrcnn demo wrote (model.pt)")
    parser.add_argument("--out", default="tiled_bench", help="folder for scenes and results")
    parser.add_argument("--scenes", default="1024,3072", help="which scenes (1024, 3072, 6144)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per batch for ours (default: 1, as SAHI predicts them)")
    parser.add_argument("--no-sahi", action="store_true", help="ours only")
    parser.add_argument("--sahi-run", nargs=2, metavar=("IMAGE", "RESULTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sahi_run:
        return sahi_predict(args.weights, *args.sahi_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.scenes.split(","):
        side, count, seed = SCENES[name]
        image, ground_truth = make_scene(side, count, seed)
        scene = out / f"scene_{name}.png"
        Image.fromarray(image).save(scene)
        print(f"scene {name}: {side}x{side}, {count} shapes, {crossing_edges(ground_truth, side)} crossing a tile edge",
              flush=True)
        ours_dir = out / f"ours_{name}"
        seconds, peak = measured(["maskrcnn", "predict", "--weights", args.weights, str(scene), "--out", str(ours_dir),
                                  "--tile", str(TILE), "--overlap", str(OVERLAP), "--batch-size", str(args.batch_size),
                                  "--no-progress"])
        results = json.loads((ours_dir / "results.json").read_text())
        rows.append({"scene": name, "method": "maskrcnn --tile", "seconds": seconds, "peak_gib": peak,
                     **scores_of(results, ground_truth)})
        print(json.dumps(rows[-1]), flush=True)
        if not args.no_sahi:
            sahi_results = out / f"sahi_{name}.json"
            seconds, peak = measured([sys.executable, __file__, "--weights", args.weights, "--sahi-run", str(scene),
                                      str(sahi_results)])
            rows.append({"scene": name, "method": "SAHI", "seconds": seconds, "peak_gib": peak,
                         **scores_of(json.loads(sahi_results.read_text()), ground_truth)})
            print(json.dumps(rows[-1]), flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print("| scene | method | mask AP@0.5 | found twice | split in two | wall time | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scene']}x{r['scene']}, {r['objects']} shapes | {r['method']} | {r['ap50']:.4f} | {r['found_twice']} | "
              f"{r['split']} | {r['seconds']:.0f} s | {r['peak_gib']:.2f} GiB |")


if __name__ == "__main__":
    main()
