"""`maskrcnn demo`: train from scratch on synthetic shapes, evaluate on held-out images, draw predictions.

Needs no data and no weights. The demo preset (`Config.demo()`: ResNet-18, 64-channel FPN and heads,
128x128 images) is chosen for a 2-core CPU; ResNet-50/101 stay the defaults for real data.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import Config
from .cpu import has_amx
from .data import HorizontalFlip, ShapesDataset
from .model import MaskRCNN
from .saving import save
from .train import Trainer, evaluate_map

TRAIN_IMAGES = 20000  # more than a budget uses: the time budget ends training and the schedule
VAL_IMAGES = 100
TRAIN_SECONDS = 270.0  # with data, evaluation and pictures: under 5 minutes in all
PICTURES = 12
FLIP_PROBABILITY = 0.5  # horizontal flips of the training images


def demo_trainer(model: MaskRCNN, train_set, out_dir, *, seed: int, progress: bool) -> Trainer:
    """The demo's Trainer (also benchmarks/demo_vs_torchvision.py's for ours): horizontal flips, one checkpoint
    kept, and bfloat16 autocast where the CPU has AMX (cpu.has_amx: a 0.71x step there, so more steps in the
    same time)."""
    return Trainer(model, train_set, out_dir=out_dir, seed=seed, transform=HorizontalFlip(FLIP_PROBABILITY),
                   progress=progress, keep_checkpoints=1, amp=has_amx())


def run_demo(out_dir="demo_out", *, seed: int = 0, train_seconds: float | None = None, progress: bool = True) -> dict:
    """Train, evaluate and draw; returns the metrics written to out_dir/metrics.json."""
    from .visualize import draw_instances, save_image

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = Config.demo()
    train_set = ShapesDataset(TRAIN_IMAGES, config.image_min_dim, config.image_min_dim, seed=seed)
    val_set = ShapesDataset(VAL_IMAGES, config.image_min_dim, config.image_min_dim, seed=seed + 1_000_003)
    model = MaskRCNN(config, class_names=train_set.class_names)
    print(f"maskrcnn demo: training a {config.backbone} Mask R-CNN from scratch on synthetic shapes "
          f"(squares, circles, triangles) for {train_seconds or TRAIN_SECONDS:.0f} s on the CPU")
    if has_amx():
        print("maskrcnn demo: this CPU has AMX: training in bfloat16 autocast (weights and losses stay float32)")
    trainer = demo_trainer(model, train_set, out, seed=seed, progress=progress)
    train_started = time.perf_counter()
    state = trainer.train(epochs=1, layers="all", time_budget=train_seconds or TRAIN_SECONDS)
    train_seconds_used = time.perf_counter() - train_started

    scores = evaluate_map(model, val_set, batch_size=config.images_per_batch, progress=progress)
    pictures = out / "predictions"
    pictures.mkdir(exist_ok=True)
    images = [val_set.load_image(i) for i in range(PICTURES)]
    for i, (image, found) in enumerate(zip(images, model.predict(images))):
        save_image(draw_instances(image, found, model.class_names, score_threshold=0.5), pictures / f"val_{i:03d}.png")
    save(model, out / "model.pt")
    metrics = {
        **scores,
        "train_seconds": round(train_seconds_used, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "steps": state.step,
        "images_seen": state.step * config.images_per_batch,
        "seed": seed,
        "val_images": VAL_IMAGES,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
