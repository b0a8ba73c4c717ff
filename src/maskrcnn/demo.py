"""`maskrcnn demo`: train from scratch on synthetic shapes, evaluate on held-out images, draw predictions.

Needs no data and no weights. The demo preset (`Config.demo()`: ResNet-18, 64-channel FPN and heads,
128x128 images) is chosen for a 2-core CPU; ResNet-50/101 stay the defaults for real data. Training is a fixed
number of steps, so a busy or slow machine gives the same model, only later; the time per step is measured
after the first steps and the projected total printed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .config import Config
from .cpu import has_amx
from .data import HorizontalFlip, ShapesDataset
from .evaluation import evaluate_map
from .files import atomic_write_json
from .model import MaskRCNN
from .saving import save
from .train import Trainer

# Steps of 8 images. Measured with the schedule ending where training ends (warm-up, then cosine to 0), on
# 2-core CPUs: 340-360 steps gave mask mAP@0.5 0.930-0.944 (AMD EPYC, AVX2), 483-591 steps 0.948-0.965
# (Intel Xeon, float32; two of three seeds at 544-591 steps just short of 0.95), 713-843 steps 0.960-0.969
# (the same Xeon in bfloat16). 700 steps sit where every seed measured met the goal of 0.95, and take about
# the demo's usual training time on a quiet 2-core CPU (TRAIN_SECONDS).
TRAIN_STEPS = 700
# One epoch of fresh images, so that the Trainer's schedule runs over exactly TRAIN_STEPS steps.
TRAIN_IMAGES = TRAIN_STEPS * Config.demo().images_per_batch
# About what TRAIN_STEPS take on a 2-core CPU: a step took 0.40 s on the Intel Xeon above in float32 (0.29 s in
# bfloat16 with AMX) and 0.37 s on an AMD EPYC (AVX2, float32, 2 threads), after a first step of about 6 s;
# with evaluation and pictures, under five minutes in all.
TRAIN_SECONDS = 280.0
SLOW_FACTOR = 1.5  # a projected training time above SLOW_FACTOR x TRAIN_SECONDS is reported as busy or slow
MEASURED_STEPS = 8  # steps timed for the estimate, after the first (which also builds oneDNN's kernels)
VAL_IMAGES = 100
VAL_SEED_OFFSET = 1_000_003  # held-out images: the run's seed plus this, apart from the training images
PICTURES = 12
PICTURE_SCALE = 3  # 128 px shapes drawn at 384 px (nearest neighbour), so that the captions are readable
SCORE_THRESHOLD = 0.5  # the pictures draw detections scoring this or more (mAP counts those above 0.05)
BEST_BELOW = 3  # a picture with nothing above SCORE_THRESHOLD draws its best this many, marked as below it
SHEET_PAIRS_PER_ROW = 3  # contact sheet: prediction and ground truth side by side, three pairs a row
FLIP_PROBABILITY = 0.5  # horizontal flips of the training images


def demo_trainer(model: MaskRCNN, train_set, out_dir, *, seed: int, progress: bool,
                 pace: Pace | None = None) -> Trainer:
    """The demo's Trainer (also benchmarks/demo_vs_torchvision.py's for ours): horizontal flips, one checkpoint
    kept, and bfloat16 autocast where the CPU has AMX (cpu.has_amx: a 0.71x step there). With `pace`, the
    first steps are timed and the projected total printed (Pace)."""
    return _PacedTrainer(model, train_set, out_dir=out_dir, seed=seed, transform=HorizontalFlip(FLIP_PROBABILITY),
                         progress=progress, keep_checkpoints=1, amp=has_amx(), pace=pace)


class _PacedTrainer(Trainer):
    """A Trainer that tells a Pace when each step begins and ends."""

    def __init__(self, *args, pace: Pace | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pace = pace

    def step(self, images, targets, lr: float) -> dict:
        if self.pace is not None:
            self.pace.step_started()
        record = super().step(images, targets, lr)
        if self.pace is not None:
            self.pace.step_done(self.state.step)
        return record


class Pace:
    """Times the first steps of a run of `steps` and prints, once, the time a step takes and the projected
    total; and, when that is well over `usual_seconds`, that the machine is busy or slow and only the time
    changes."""

    def __init__(self, steps: int, *, usual_seconds: float = TRAIN_SECONDS, measured_steps: int = MEASURED_STEPS):
        self.steps = steps
        self.usual_seconds = usual_seconds
        # The estimate comes after step 1 + measured_steps, or after the last step of a shorter run.
        self.report_at = min(1 + measured_steps, steps)
        self.began = None  # clock when step 1 began
        self.after_first = None  # clock when step 1 ended
        self.lines: list[str] = []

    def step_started(self) -> None:
        if self.began is None:
            self.began = time.perf_counter()

    def step_done(self, step: int) -> None:
        now = time.perf_counter()
        if step == 1:
            self.after_first = now
        if step != self.report_at or self.report_at < 2:
            return
        per_step = (now - self.after_first) / (step - 1)
        projected = (now - self.began) + per_step * (self.steps - step)
        self.lines = pace_lines(per_step, self.steps, projected, self.usual_seconds, load=_load())
        for line in self.lines:
            tqdm.write(f"maskrcnn demo: {line}")


def _load() -> tuple[float, int] | None:
    """(1-minute load average, CPUs), or None where the system has no load average (Windows)."""
    try:
        return os.getloadavg()[0], os.cpu_count() or 1
    except (AttributeError, OSError):
        return None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"


def pace_lines(seconds_per_step: float, steps: int, projected_seconds: float, usual_seconds: float, *,
               load: tuple[float, int] | None = None) -> list[str]:
    """What to print once the first steps are timed: the step time and the projected training time, and, when
    that exceeds SLOW_FACTOR x usual_seconds, a line saying the machine is busy (load average above its CPUs)
    or slower, and that the result is the same, only later. load: (1-minute load average, CPUs) or None."""
    lines = [f"about {seconds_per_step:.2f} s per step: training takes about {_duration(projected_seconds)} in all "
             f"({steps} steps; evaluation and pictures then take seconds)"]
    if projected_seconds > SLOW_FACTOR * usual_seconds:
        if load is None:
            why = "this machine is busy or slower than"
        elif load[0] > load[1]:
            why = f"this machine is busy (load average {load[0]:.1f} on {load[1]} CPUs), or slower than"
        else:
            why = f"this CPU is slower than (load average {load[0]:.1f} on {load[1]} CPUs: not busy)"
        lines.append(f"that is well over the usual {_duration(usual_seconds)}: {why} the quiet 2-core CPU the "
                     f"demo is timed on. The result will be the same, only later: the demo trains a fixed "
                     f"{steps} steps, whatever the time.")
    return lines


def run_demo(out_dir="demo_out", *, seed: int = 0, steps: int | None = None, config: Config | None = None,
             val_images: int = VAL_IMAGES, pictures: int = PICTURES, progress: bool = True) -> dict:
    """Train `steps` steps, evaluate on `val_images` held-out images, draw `pictures` of them; returns the metrics
    written to out_dir/metrics.json. Also writes loss.png, model.pt, predictions/val_NNN.png and
    contact_sheet.png (each prediction beside its ground truth). steps: TRAIN_STEPS unless given; config:
    Config.demo() unless given."""
    from .visualize import contact_sheet, draw_ground_truth, draw_instances, save_image

    steps = TRAIN_STEPS if steps is None else steps
    if steps < 1 or val_images < 1 or pictures < 0:
        raise ValueError(f"the demo needs steps >= 1, val_images >= 1 and pictures >= 0; got steps={steps}, "
                         f"val_images={val_images}, pictures={pictures}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = config or Config.demo()
    side = config.image_min_dim
    # steps x batch images: one epoch is `steps` steps, and the schedule (warm-up, cosine) runs over them.
    train_set = ShapesDataset(steps * config.images_per_batch, side, side, seed=seed)
    val_set = ShapesDataset(val_images, side, side, seed=seed + VAL_SEED_OFFSET)
    model = MaskRCNN(config, class_names=train_set.class_names)
    print(f"maskrcnn demo: training a {config.backbone} Mask R-CNN from scratch on synthetic shapes "
          f"(squares, circles, triangles): {steps} steps of {config.images_per_batch} images on the CPU "
          f"(about {_duration(TRAIN_SECONDS * steps / TRAIN_STEPS)} on a quiet 2-core CPU; the measured time "
          f"follows after {min(1 + MEASURED_STEPS, steps)} steps)", flush=True)
    if has_amx():
        print("maskrcnn demo: this CPU has AMX: training in bfloat16 autocast (weights and losses stay float32)")
    pace = Pace(steps)
    trainer = demo_trainer(model, train_set, out, seed=seed, progress=progress, pace=pace)
    train_started = time.perf_counter()
    state = trainer.train(epochs=1, layers="all")
    train_seconds_used = time.perf_counter() - train_started

    scores = evaluate_map(model, val_set, batch_size=config.images_per_batch, progress=progress)
    folder = out / "predictions"
    folder.mkdir(exist_ok=True)
    indices = range(min(pictures, val_images))
    found = model.predict([val_set.load_image(i) for i in indices]) if indices else []
    tiles, labels, unclear = [], [], []
    for i, detections in zip(indices, found):
        name = f"val_{i:03d}.png"
        picture = draw_instances(val_set.load_image(i), detections, model.class_names, score_threshold=SCORE_THRESHOLD,
                                 scale=PICTURE_SCALE, best_below=BEST_BELOW)
        save_image(picture, folder / name)
        if not bool((detections.scores >= SCORE_THRESHOLD).any()):
            unclear.append(f"{name} (best {float(detections.scores.max()):.2f})" if len(detections) else
                           f"{name} (no detection at all)")
        tiles += [picture, draw_ground_truth(val_set, i, scale=PICTURE_SCALE)]
        labels += [f"{name}: prediction", f"{name}: ground truth"]
    if tiles:
        save_image(contact_sheet(tiles, columns=2 * SHEET_PAIRS_PER_ROW, labels=labels), out / "contact_sheet.png")
    if unclear:
        one = len(unclear) == 1
        print(f"maskrcnn demo: {len(unclear)} of {len(tiles) // 2} pictures {'has' if one else 'have'} no detection "
              f"scoring {SCORE_THRESHOLD} or more; {'it shows' if one else 'each shows'} the best {BEST_BELOW} below "
              f"it, captioned '(< {SCORE_THRESHOLD:.2f})': " + ", ".join(unclear)
              + ("; the model has not learnt the shapes yet" if len(unclear) == len(tiles) // 2 else ""))
    save(model, out / "model.pt")
    metrics = {
        **scores,
        "train_seconds": round(train_seconds_used, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "steps": state.step,
        "images_seen": state.step * config.images_per_batch,
        "seconds_per_step": round(train_seconds_used / max(1, state.step), 3),
        "seed": seed,
        "val_images": val_images,
        "pictures_below_threshold": len(unclear),
    }
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    return metrics
