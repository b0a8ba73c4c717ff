"""Accuracy and speed of each inference precision on the CPU: PyTorch, OpenVINO f32, bf16 and int8.

    PYTHONPATH=src python benchmarks/precision.py --weights demo_out/model.pt            # the demo's model
    PYTHONPATH=src python benchmarks/precision.py --weights demo_out/model.pt --resnet50 # and ResNet-50 speed

Part one, accuracy (--weights: a model from `maskrcnn demo`, seed --seed):
  - the held-out images are the demo's own (`ShapesDataset(demo.VAL_IMAGES, side, side, seed + demo.VAL_SEED_OFFSET)`)
    and the metric its own (`evaluation.map50_scores`: matterport's VOC-style mAP at IoU 0.5, of masks and of
    boxes), at the config's detection threshold, as `maskrcnn demo` reports them;
  - the model is exported with `export.to_onnx`; the int8 model is `quantize.quantize_int8` of that file,
    calibrated on --calibration-images of the demo's training images (the same ShapesDataset spec it trained
    on, `shapes:TRAIN_IMAGES:SIDE:SEED`), spread evenly over them, as `maskrcnn export --int8` does;
  - rows: torch (`MaskRCNN.predict`), torch bf16 (`bfloat16.Bfloat16Predictor`, `--precision bf16`, where the
    CPU has bfloat16 instructions), openvino f32, openvino bf16 (where OpenVINO lists BF16 for this CPU),
    openvino int8 (the int8 IR as `maskrcnn export --int8` writes it, its unquantised operations in f32),
    int8 + bf16 (those in bf16), and int8 heads f32 (`quantize.BACKBONE_SCOPE`: only the backbone, FPN and RPN
    in int8);
  - every image is predicted by every backend in turn (A B C D E, A B C D E, ...: a change in the machine's load
    hits all alike), one image a call after a warm-up call each, and the median seconds per image reported.

Part two, speed at full size (--resnet50): `Config.torchvision()` (ResNet-50 FPN) with random weights (seed 0) on
one random 800x1066 image (seed 1), score threshold 0 so that every backend returns 100 detections and runs the
mask head on all of them, as benchmarks/inference.py does; int8 calibrated on --resnet50-calibration-images
synthetic shapes images of 800x1066 (a few suffice for timing). With random weights the detections mean nothing and no accuracy is
reported: only the time is.
"""
from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path, and benchmarks/onnx.py would shadow the `onnx` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from maskrcnn import Config, MaskRCNN, demo, load  # noqa: E402
from maskrcnn.backends import cpu_description  # noqa: E402
from maskrcnn.bfloat16 import Bfloat16Predictor  # noqa: E402
from maskrcnn.cpu import flush_denormals, has_bf16_kernels  # noqa: E402
from maskrcnn.data import ShapesDataset  # noqa: E402
from maskrcnn.evaluation import ground_truth_detections, map50_scores  # noqa: E402
from maskrcnn.export import OpenVinoPredictor, to_onnx  # noqa: E402
from maskrcnn.openvino_backend import cpu_supports_bf16  # noqa: E402
from maskrcnn.quantize import BACKBONE_SCOPE, QUANTIZED_SCOPE, CalibrationImages, quantize_int8  # noqa: E402

RESNET50_SIZE = (800, 1066)


def predictors(model, folder: Path, calibration, threads: int) -> dict:
    """torch (f32 and bf16), and OpenVINO f32 / bf16 / int8 / int8 + bf16 / int8 with the heads in float32 of
    `model`'s exported file (bf16 rows only where the CPU has bfloat16 kernels)."""
    onnx_path = to_onnx(model, folder / "model.onnx")
    int8 = {}
    for name, scope in (("int8", QUANTIZED_SCOPE), ("int8 heads f32", BACKBONE_SCOPE)):
        started = time.perf_counter()
        int8[name] = quantize_int8(onnx_path, calibration, folder / f"model.{name.replace(' ', '_')}.xml", scope=scope,
                                   report=lambda line: None)
        print(f"{name} quantisation: {len(calibration)} calibration images, {time.perf_counter() - started:.0f} s")
    found = {"torch": model}
    if has_bf16_kernels():
        found["torch bf16"] = Bfloat16Predictor(model)
    else:
        print("torch bf16 row left out: this CPU has no bfloat16 instructions")
    found["openvino f32"] = OpenVinoPredictor(onnx_path, threads=threads)
    bf16 = cpu_supports_bf16()
    if bf16:
        found["openvino bf16"] = OpenVinoPredictor(onnx_path, threads=threads, precision="bf16")
    else:
        print("bf16 rows left out: OpenVINO lists no BF16 for this CPU")
    found["openvino int8"] = OpenVinoPredictor(int8["int8"], threads=threads)
    if bf16:
        found["openvino int8 + bf16"] = OpenVinoPredictor(int8["int8"], threads=threads, precision="bf16")
    found["openvino int8 heads f32"] = OpenVinoPredictor(int8["int8 heads f32"], threads=threads)
    return found


def alternate(calls: dict, images, score_threshold=None) -> tuple[dict, dict]:
    """(detections per backend for each image, seconds per call per backend): one warm-up call each, then
    every image through every backend in turn."""
    with torch.no_grad():
        for predictor in calls.values():
            predictor.predict([images[0]], score_threshold=score_threshold)
        found = {name: [] for name in calls}
        seconds = {name: [] for name in calls}
        for image in images:
            for name, predictor in calls.items():
                started = time.perf_counter()
                found[name].append(predictor.predict([image], score_threshold=score_threshold)[0])
                seconds[name].append(time.perf_counter() - started)
    return found, seconds


def accuracy_table(weights: str, seed: int, calibration_images: int, threads: int) -> None:
    model = load(weights).eval()
    side = model.config.image_min_dim
    val_set = ShapesDataset(demo.VAL_IMAGES, side, side, seed=seed + demo.VAL_SEED_OFFSET)
    spec = f"shapes:{demo.TRAIN_IMAGES}:{side}:{seed}"  # the demo's training images
    print(f"\n{weights}: {model.config.backbone}, {side}x{side}; held-out: the demo's {len(val_set)} images "
          f"(seed {seed + demo.VAL_SEED_OFFSET}); int8 calibrated on {spec}")
    with tempfile.TemporaryDirectory() as folder:
        calls = predictors(model, Path(folder), CalibrationImages(spec, calibration_images), threads)
        images = [val_set.load_image(i) for i in range(len(val_set))]
        found, seconds = alternate(calls, images)
    truths = [ground_truth_detections(val_set, i) for i in range(len(val_set))]
    scores = {name: map50_scores(truths, detections) for name, detections in found.items()}
    reference = scores["openvino f32"]
    print(f"{'backend / precision':<24} {'mask mAP@0.5':>12} {'box mAP@0.5':>11} {'mask - f32':>10} {'box - f32':>9} "
          f"{'median s/image':>14}")
    for name, score in scores.items():
        print(f"{name:<24} {score['mask_map50']:>12.4f} {score['box_map50']:>11.4f} "
              f"{score['mask_map50'] - reference['mask_map50']:>+10.4f} {score['box_map50'] - reference['box_map50']:>+9.4f} "
              f"{statistics.median(seconds[name]):>14.4f}", flush=True)


def resnet50_table(rounds: int, calibration_images: int, threads: int) -> None:
    torch.manual_seed(0)
    model = MaskRCNN(Config.torchvision()).eval()
    image = torch.rand(3, *RESNET50_SIZE, generator=torch.Generator().manual_seed(1))  # (3, H, W) in [0, 1]
    calibration = ShapesDataset(calibration_images, *RESNET50_SIZE, seed=2)
    print(f"\nResNet-50 FPN (torchvision preset), random weights, one {RESNET50_SIZE[0]}x{RESNET50_SIZE[1]} image, "
          f"score threshold 0 (100 detections); int8 calibrated on {calibration_images} synthetic shapes images of "
          f"that size. Random weights: speed only, the detections mean nothing.")
    with tempfile.TemporaryDirectory() as folder:
        calls = predictors(model, Path(folder), [calibration.load_image(i) for i in range(len(calibration))], threads)
        found, seconds = alternate(calls, [image] * rounds, score_threshold=0.0)
    reference = statistics.median(seconds["openvino f32"])
    print(f"{'backend / precision':<24} {'dets':>4} {'median s':>8} {'/ f32':>6}")
    for name, values in seconds.items():
        print(f"{name:<24} {len(found[name][0]):>4} {statistics.median(values):>8.2f} "
              f"{statistics.median(values) / reference:>6.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="a model from `maskrcnn demo` (its model.pt)")
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed: picks its held-out and training images (default: 0)")
    parser.add_argument("--calibration-images", type=int, default=300, help="int8 calibration images for the demo model (default: 300)")
    parser.add_argument("--resnet50", action="store_true", help="also time the ResNet-50 torchvision preset at 800x1066")
    parser.add_argument("--resnet50-calibration-images", type=int, default=10, help="its calibration images (default: 10)")
    parser.add_argument("--rounds", type=int, default=5, help="ResNet-50: timed calls per backend, alternating (default: 5)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every backend (default: 2)")
    args = parser.parse_args()
    if not args.weights and not args.resnet50:
        parser.error("give --weights (the demo model's accuracy table), --resnet50 (the speed table), or both")
    flushed = flush_denormals()  # first: every thread started later inherits it
    torch.set_num_threads(args.threads)
    cpu, flags = cpu_description()
    versions = [f"torch {torch.__version__}"]
    for module in ("openvino", "nncf"):
        versions.append(f"{module} {__import__(module).__version__}")
    print(f"CPU: {cpu}, {os.cpu_count()} logical CPUs; flags: {flags}")
    print(f"{args.threads} threads for every backend; {', '.join(versions)}; denormals flushed to zero: "
          f"{'yes' if flushed else 'no'}; load average at start {os.getloadavg()[0]:.1f}")
    if args.weights:
        accuracy_table(args.weights, args.seed, args.calibration_images, args.threads)
    if args.resnet50:
        resnet50_table(args.rounds, args.resnet50_calibration_images, args.threads)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
