"""onnxruntime against our PyTorch path: per-image time on the same images and weights, and a parity line.

    PYTHONPATH=src python benchmarks/onnx.py                      # torchvision preset, ResNet-50, 800 px
    PYTHONPATH=src python benchmarks/onnx.py --preset demo --images 8

Both run with 2 threads (torch.set_num_threads, onnxruntime's intra-op threads), one image at a time,
alternating (PyTorch, onnxruntime, PyTorch, ...) so that a change in the machine's load hits both alike.
Two rows: "predict" is the whole call (pre-processing, network, post-processing: the last two shared);
"network" is the graph alone on the same preprocessed tensor (eager `InferenceGraph` against
`InferenceSession.run`). Weights are randomly initialised (no downloads); the score threshold is the
config's, so the detection layer and the mask pasting do their usual amount of work.
"""
from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path and this file would shadow the `onnx` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from maskrcnn import Config, MaskRCNN  # noqa: E402
from maskrcnn.export import InferenceGraph, OnnxPredictor, to_onnx  # noqa: E402

SIZES = [(480, 640), (640, 427), (375, 500), (427, 640), (512, 512), (333, 517)]


def build(preset: str) -> MaskRCNN:
    torch.manual_seed(0)
    if preset == "demo":
        return MaskRCNN(Config.demo()).eval()
    return MaskRCNN(Config.torchvision(num_classes=91)).eval()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["torchvision", "demo"], default="torchvision")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the images; the first pass is also timed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = build(args.preset)
    generator = torch.Generator().manual_seed(1)
    sizes = [SIZES[i % len(SIZES)] for i in range(args.images)]
    if args.preset == "demo":
        sizes = [(h // 4, w // 4) for h, w in sizes]
    images = [torch.rand(3, h, w, generator=generator) for h, w in sizes]

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = to_onnx(model, Path(folder) / "model.onnx")
        export_seconds = time.perf_counter() - started
        predictor = OnnxPredictor(path, threads=args.threads)
        graph = InferenceGraph(model)
        threshold = model.config.detection_min_confidence

        times = {("predict", "ours"): [], ("predict", "ort"): [], ("network", "ours"): [], ("network", "ort"): []}
        worst = dict(count=0, labels=0, box=0.0, score=0.0, iou=1.0, detections=0)
        predictor.predict(images[:1])  # warm-up: first-run allocations on both sides
        model.predict(images[:1])
        for round_ in range(args.rounds):
            for image in images:
                t0 = time.perf_counter()
                ours = model.predict([image])[0]
                t1 = time.perf_counter()
                theirs = predictor.predict([image])[0]
                t2 = time.perf_counter()
                times["predict", "ours"].append(t1 - t0)
                times["predict", "ort"].append(t2 - t1)

                batch = model.preprocessor([image])
                window = torch.tensor(batch.windows[0], dtype=torch.int64)
                feed = {"image": batch.tensor[0].numpy(), "window": window.numpy(),
                        "min_confidence": np.asarray(threshold, dtype=np.float32)}
                t0 = time.perf_counter()
                with torch.no_grad():
                    graph(batch.tensor[0], window, torch.tensor(threshold))
                t1 = time.perf_counter()
                predictor.session.run(None, feed)
                t2 = time.perf_counter()
                times["network", "ours"].append(t1 - t0)
                times["network", "ort"].append(t2 - t1)

                if round_ == 0:
                    worst["detections"] += len(ours)
                    if len(ours) != len(theirs):
                        worst["count"] += 1
                    elif len(ours):
                        worst["labels"] += int(not torch.equal(ours.labels, theirs.labels))
                        worst["box"] = max(worst["box"], (ours.boxes - theirs.boxes).abs().max().item())
                        worst["score"] = max(worst["score"], (ours.scores - theirs.scores).abs().max().item())
                        worst["iou"] = min(worst["iou"], mask_iou(ours.masks, theirs.masks).min().item())

    c = model.config
    print(f"preset {args.preset} ({c.backbone}, image_min_dim {c.image_min_dim}, max {c.image_max_dim}), {args.images} images x "
          f"{args.rounds} rounds, {args.threads} threads, torch {torch.__version__}, onnxruntime {predictor.session.get_providers()[0]}; "
          f"export took {export_seconds:.1f} s")
    print(f"{'per image':<10} {'ours (s)':>10} {'ort (s)':>10} {'ort/ours':>9}")
    for row in ("predict", "network"):
        ours_s = statistics.median(times[row, "ours"])
        ort_s = statistics.median(times[row, "ort"])
        print(f"{row:<10} {ours_s:>10.3f} {ort_s:>10.3f} {ort_s / ours_s:>9.2f}")
    print(f"parity: {worst['detections']} detections over {args.images} images; images with a different count {worst['count']}, "
          f"with different labels {worst['labels']}; max box diff {worst['box']:.2e} px, max score diff {worst['score']:.2e}, "
          f"min mask IoU {worst['iou']:.4f}")


if __name__ == "__main__":
    main()
