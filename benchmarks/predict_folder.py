"""`maskrcnn predict` over a folder: the pipelined loop (next images decoded, pictures written, while the model runs)
against the sequential loop (`workers=0`), on the same images and model, alternating.

    PYTHONPATH=src python benchmarks/predict_folder.py                    # 50 images, demo preset, 2 rounds
    PYTHONPATH=src python benchmarks/predict_folder.py --images 20 --preset torchvision --rounds 1

The folder: `--images` JPEG and PNG files (alternating) of mixed sizes (480x640, 800x1066, 375x500, 1024x768,
333x517, 640x427), each a ShapesDataset picture scaled up to that size with noise added, so decoding costs what
a photo's does. The model: `Config.demo()` (ResNet-18, 128 px) or `Config.torchvision()` (ResNet-50, 800 px),
random weights, saved to a .pt file and loaded by `runs.predict` as the command does. Each run writes its
pictures, results.json and images.json into a fresh folder; wall seconds of the whole `runs.predict` call.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import maskrcnn
from maskrcnn import Config, MaskRCNN
from maskrcnn.backends import cpu_description
from maskrcnn.data import ShapesDataset
from maskrcnn.runs import predict

SIZES = [(480, 640), (800, 1066), (375, 500), (1024, 768), (333, 517), (640, 427)]


def write_images(folder: Path, count: int) -> None:
    shapes = ShapesDataset(count=count, height=128, width=128, seed=0)
    generator = np.random.default_rng(0)
    for i in range(count):
        height, width = SIZES[i % len(SIZES)]
        picture = Image.fromarray(shapes.load_image(i)).resize((width, height), Image.BILINEAR)
        noisy = np.clip(np.asarray(picture, dtype=np.int16) + generator.integers(-12, 13, (height, width, 3)), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--preset", choices=["demo", "torchvision"], default="demo")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each loop, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="the pipelined loop's reader threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Config.demo() if args.preset == "demo" else Config.torchvision(num_classes=4)
    model = MaskRCNN(config, class_names=["BG", "square", "circle", "triangle"]).eval()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "images").mkdir()
        write_images(folder / "images", args.images)
        maskrcnn.save(model, folder / "model.pt")
        seconds = {"sequential": [], "pipelined": []}
        for round_ in range(args.rounds):
            for name, workers in (("sequential", 0), ("pipelined", args.workers)):
                started = time.perf_counter()
                predict([folder / "images"], weights=folder / "model.pt", out=folder / f"{name}{round_}", progress=False,
                        workers=workers, report=lambda line: None)
                seconds[name].append(time.perf_counter() - started)
    cpu, _ = cpu_description()
    print(f"{cpu}, {os.cpu_count()} logical CPUs, {args.threads} torch threads, preset {args.preset}, {args.images} images "
          f"of mixed sizes, {args.rounds} rounds alternating; load average {os.getloadavg()[0]:.1f}")
    print(f"{'loop':<11} {'median s':>9} {'images/s':>9}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<11} {median:>9.2f} {args.images / median:>9.2f}")
    print(f"pipelined / sequential time: {statistics.median(seconds['pipelined']) / statistics.median(seconds['sequential']):.3f}")


if __name__ == "__main__":
    main()
