"""Training step on the CPU: ours against torchvision's Mask R-CNN, same weights, same batch (issue 6).

    PYTHONPATH=src python benchmarks/train_step.py                 # 5 rounds, 2 threads, then the demo line
    PYTHONPATH=src python benchmarks/train_step.py --rounds 3 --demo-steps 10
    PYTHONPATH=src python benchmarks/train_step.py --no-demo

What it does:
  - torchvision's model is built as `maskrcnn_resnet50_fpn` builds it for fine-tuning (frozen batch norm,
    trunk trainable from layer2 on: trainable_backbone_layers=3), with random weights (seed 0, no
    download); ours is `from_torchvision(that model)` (`Config.torchvision()`), with the same parameters
    trainable (our layer choice "3+", the same set);
  - one batch of two random 800x1066 images (seed 1) with the same targets for both (four boxes per image
    with elliptical masks, random classes);
  - one step = forward (the loss dict), sum of the losses, backward, SGD step (lr 1e-4, momentum 0.9),
    `zero_grad(set_to_none=True)`; one warm-up step each, then `--rounds` rounds of torchvision, ours,
    torchvision, ... each step timed by wall clock and process CPU time (time.process_time: all threads of
    this process; much less disturbed than the wall clock on a busy shared machine);
  - denormal floats are flushed to zero for the whole process, so for both models alike, before any
    parallel op (`maskrcnn.cpu.flush_denormals`, as the `maskrcnn` command does). Without it
    (`--keep-denormals`), on an Intel Xeon both models' steps slowed from about 20 s to 90-220 s from the
    third step on, as denormals appeared in the random-weight network: the timings then measure the
    floating-point unit's slow path, not the model;
  - demo line: `Config.demo()` (ResNet-18, 128x128 ShapesDataset images, batch 8), the same step with the
    demo's optimiser (AdamW at the time of writing), over pre-rendered batches (drawing the shapes is not
    timed): steps/s and images/s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn import Config, MaskRCNN
from maskrcnn.cpu import flush_denormals, has_avx512
from maskrcnn.data import ShapesDataset
from maskrcnn.interop import from_torchvision
from maskrcnn.train import select_trainable

IMAGE_SIZE = (800, 1066)
BOXES_PER_IMAGE = 4


def torchvision_model() -> torch.nn.Module:
    """maskrcnn_resnet50_fpn as built for fine-tuning: FrozenBatchNorm2d, trunk trainable from layer2."""
    torch.manual_seed(0)
    trunk = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    return TorchvisionMaskRCNN(_resnet_fpn_extractor(trunk, 3), num_classes=91)


def make_batch(size: tuple[int, int], count: int = 2):
    """`count` random (3, H, W) images and targets: boxes (G, 4) x1 y1 x2 y2, labels (G,), masks (G, H, W) bool."""
    generator = torch.Generator().manual_seed(1)
    height, width = size
    images, targets = [], []
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    for _ in range(count):
        images.append(torch.rand(3, height, width, generator=generator))
        corner = torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
        extent = 40 + torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * torch.tensor([width * 0.35, height * 0.35])
        boxes = torch.cat((corner, corner + extent), dim=1)  # (G, 4)
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, extent / 2
        masks = ((xs - centre[:, 0, None, None]) / half[:, 0, None, None]) ** 2 + \
            ((ys - centre[:, 1, None, None]) / half[:, 1, None, None]) ** 2 <= 1  # (G, H, W) ellipses
        labels = torch.randint(1, 91, (BOXES_PER_IMAGE,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return images, targets


def train_step(model, optimizer, images, targets) -> float:
    losses = model(images, targets)
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return float(total.detach())


def timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(rounds: int) -> None:
    reference = torchvision_model().train()
    ours = from_torchvision(reference).train()
    select_trainable(ours, "3+")  # trunk layer2..layer4, FPN, RPN and heads: torchvision's trainable set
    trainable = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (reference, ours)]
    if trainable[0] != trainable[1]:
        raise RuntimeError(f"the trainable sets differ: torchvision {trainable[0]} parameters, ours {trainable[1]}")
    images, targets = make_batch(IMAGE_SIZE)
    steps = {}
    for name, model in (("torchvision", reference), ("ours", ours)):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        steps[name] = lambda model=model, optimizer=optimizer: train_step(model, optimizer, images, targets)
    times = {name: {"wall": [], "cpu": []} for name in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(rounds):
        for name, step in steps.items():  # A B A B ...
            wall, cpu = timed(step)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    print(f"training step, batch of 2 x {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, {rounds} rounds alternating")
    print(f"{'model':>11} {'median s':>9} {'median CPU s':>12}")
    medians = {}
    for name in steps:
        medians[name] = (statistics.median(times[name]["wall"]), statistics.median(times[name]["cpu"]))
        print(f"{name:>11} {medians[name][0]:>9.2f} {medians[name][1]:>12.2f}")
    print(f"{'ours/tv':>11} {medians['ours'][0] / medians['torchvision'][0]:>9.3f} {medians['ours'][1] / medians['torchvision'][1]:>12.3f}")


def demo_line(steps: int) -> None:
    config = Config.demo()
    torch.manual_seed(0)
    model = MaskRCNN(config).train()
    batch_size = config.images_per_batch
    dataset = ShapesDataset(batch_size * 4, config.image_min_dim, config.image_min_dim, seed=0)
    samples = [dataset[i] for i in range(len(dataset))]
    batches = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    if config.optimizer == "adamw":  # the demo's own optimiser, as the Trainer builds it
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.learning_momentum)
    run = lambda i: train_step(model, optimizer, [s[0] for s in batches[i % len(batches)]], [s[1] for s in batches[i % len(batches)]])  # noqa: E731
    run(0)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        run(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"demo preset (Config.demo(), batch {batch_size} of {config.image_min_dim}x{config.image_min_dim} shapes): "
          f"{steps / wall:.2f} steps/s, {steps * batch_size / wall:.1f} images/s wall; "
          f"{steps / cpu:.2f} steps/CPU-s, {steps * batch_size / cpu:.1f} images/CPU-s ({steps} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--demo-steps", type=int, default=20)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--keep-denormals", action="store_true", help="do not flush denormal floats to zero (see the docstring)")
    args = parser.parse_args()
    flushed = False if args.keep_denormals else flush_denormals()  # first: every thread started later inherits it
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
          f"denormals flushed to zero in every thread (both models): {'yes' if flushed else 'no'}, "
          f"{'AVX-512' if has_avx512() else 'no AVX-512'}, load average at start {os.getloadavg()[0]:.1f}")
    if not args.no_compare:
        compare(args.rounds)
    if not args.no_demo:
        demo_line(args.demo_steps)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
