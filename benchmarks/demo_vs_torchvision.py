"""Ours against torchvision's own Mask R-CNN, from scratch on synthetic shapes, at equal wall-clock budgets.

Run (from the repository root, on a quiet machine; each budget trains two models, so the defaults take
about 2 x (120 + 180 + 300) s plus evaluation):

    python benchmarks/demo_vs_torchvision.py                      # budgets 120, 180, 300 s, 2 threads
    python benchmarks/demo_vs_torchvision.py --budgets 60 240 --seed 1 --json results.json
    python benchmarks/demo_vs_torchvision.py --quick              # 10 s budgets: checks the script runs

What it measures, for each budget:
  (a) torchvision's `MaskRCNN` class (benchmarks/_tv_recipe.py), sized like `Config.demo()`: ResNet-18 FPN
      with trainable batch norm and no pretrained weights, 64-channel FPN, RPN conv and mask head, two
      256-wide FC box layers, the demo's anchor sizes, ROI counts and detection thresholds, 128 px images not
      resized. Trained with its own step (loss dict, sum, backward) and the recipe of torchvision's detection
      references: SGD lr 0.02, momentum 0.9, weight decay 1e-4 on every parameter, no gradient clipping,
      linear warm-up (the demo's 50 steps), batch 8, horizontal flips, cosine decay over the budget.
  (b) ours: `Config.demo()` trained by `demo.demo_trainer(...).train(epochs=1, layers="all", time_budget=budget)`,
      as `maskrcnn.demo.run_demo` does: with bfloat16 autocast on a CPU with AMX (torchvision's side stays
      float32, its references' default on a CPU).
Both start from the same seed and read the same batches: the same ShapesDataset images (128x128, 1-4
shapes) in the same order with the same flips, from the same loader. Only training is timed, from the
start of the training loop to the end of the last optimiser step (model building is outside the timer for
both). The loader renders each image when it is needed, so drawing the shapes is inside the timer for both.
Each model stops after the step during which its budget runs out. Both are then scored on the same 100 held-out images (the demo's
validation set) with `maskrcnn.evaluation.voc_map`: the seed repository's `compute_ap`, mAP at IoU 0.5 of
masks and of boxes, each model's predictions converted to `maskrcnn.Detections`.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torchvision
from _tv_recipe import build_torchvision_maskrcnn, predict_torchvision, train_torchvision

from maskrcnn import Config, MaskRCNN, demo
from maskrcnn.cpu import flush_denormals
from maskrcnn.data import HorizontalFlip, ShapesDataset, make_loader
from maskrcnn.evaluation import ground_truth_detections, voc_map

DEFAULT_BUDGETS = (120.0, 180.0, 300.0)
QUICK_BUDGETS = (10.0,)
# run_demo's validation images: seed + this offset, so the scores here compare with `maskrcnn demo`'s.
VAL_SEED_OFFSET = 1_000_003
# Training images per second of budget: 20,000 fresh images over 270 s (about 74), the rate at which the
# figures in benchmarks/README.md were measured (the demo itself now trains a fixed step count). Our Trainer
# runs its schedule (warm-up and cosine) on the larger of step progress and time progress, with the epoch's
# length as the step total, so this rate makes our warm-up and decay run as in `maskrcnn demo`, scaled to
# the budget. A model faster than this sees every image before the budget ends: ours then stops, annealed,
# as the demo does, and torchvision's loop starts another pass; the output notes either.
# --images-per-second changes it.
IMAGES_PER_SECOND = 20_000 / 270
FLIP_PROBABILITY = demo.FLIP_PROBABILITY  # run_demo's flips, for torchvision's loader too


@dataclass
class Result:
    model: str
    budget: float
    steps: int
    train_seconds: float
    images_per_second: float
    box_map50: float
    mask_map50: float
    saw_every_image: bool  # steps x batch >= training images: ours stops there, torchvision starts a new pass


def train_ours(train_set: ShapesDataset, *, seed: int, budget: float):
    """`maskrcnn demo`'s training (run_demo: Config.demo(), demo.demo_trainer, layers "all", one epoch).

    Returns (predict: list of images -> list[Detections], steps, seconds from the start of the training loop
    to the end of the last step).
    """
    torch.manual_seed(seed)
    model = MaskRCNN(Config.demo(), class_names=train_set.class_names)
    with tempfile.TemporaryDirectory() as out_dir:  # the Trainer's checkpoint and log are not needed
        trainer = demo.demo_trainer(model, train_set, out_dir, seed=seed, progress=False)
        state = trainer.train(epochs=1, layers="all", time_budget=budget)
    # The step log's clock, so that the end-of-epoch checkpoint and loss plot are not counted.
    return model.predict, state.step, state.history[-1]["seconds"]


def train_theirs(train_set: ShapesDataset, *, seed: int, budget: float):
    """torchvision's MaskRCNN at the demo's widths, its own step and recipe; returns as `train_ours`."""
    config = Config.demo()
    torch.manual_seed(seed)
    model = build_torchvision_maskrcnn(config)
    loader = make_loader(train_set, config.images_per_batch, shuffle=True, seed=seed,
                         transform=HorizontalFlip(FLIP_PROBABILITY))
    steps, seconds = train_torchvision(model, loader, time_budget=budget, config=config)
    return partial(predict_torchvision, model, mask_threshold=config.mask_threshold), steps, seconds


def score(predict, val_set: ShapesDataset, batch_size: int) -> dict:
    """Box and mask mAP@0.5 (the seed's compute_ap) of `predict(list of images) -> list[Detections]`."""
    ground_truths, found = [], []
    for start in range(0, len(val_set), batch_size):
        indices = range(start, min(start + batch_size, len(val_set)))
        found += predict([val_set.load_image(i) for i in indices])
        ground_truths += [ground_truth_detections(val_set, i) for i in indices]
    return {"box_map50": voc_map(ground_truths, found, 0.5, use_masks=False),
            "mask_map50": voc_map(ground_truths, found, 0.5, use_masks=True)}


def run_budget(budget: float, *, seed: int, images_per_second: float, val_set: ShapesDataset,
               models=("torchvision", "ours")) -> list[Result]:
    """Train and score both models (or those named) at one budget, torchvision's first."""
    side, batch = Config.demo().image_min_dim, Config.demo().images_per_batch
    train_set = ShapesDataset(math.ceil(budget * images_per_second), side, side, seed=seed)
    results = []
    for name, train in (("torchvision", train_theirs), ("ours", train_ours)):
        if name not in models:
            continue
        print(f"  {budget:g} s: training {name} ...", flush=True)
        predict, steps, seconds = train(train_set, seed=seed, budget=budget)
        scores = score(predict, val_set, batch)
        results.append(Result(name, budget, steps, round(seconds, 1), round(steps * batch / seconds, 2),
                              scores["box_map50"], scores["mask_map50"], saw_every_image=steps * batch >= len(train_set)))
        print(f"  {budget:g} s: {name}: {steps} steps in {seconds:.1f} s, mask mAP@0.5 {scores['mask_map50']:.3f}, "
              f"box mAP@0.5 {scores['box_map50']:.3f}", flush=True)
    return results


def format_table(results: list[Result]) -> str:
    """One row per budget: both models' mask and box mAP@0.5, steps and training images per second."""
    header = ("| budget | torchvision mask mAP@0.5 | ours mask mAP@0.5 | torchvision box mAP@0.5 | ours box mAP@0.5 "
              "| steps (tv / ours) | images/s (tv / ours) |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    by_budget: dict[float, dict[str, Result]] = {}
    for result in results:
        by_budget.setdefault(result.budget, {})[result.model] = result
    for budget, pair in by_budget.items():
        cells = []
        for field in ("mask_map50", "box_map50"):
            cells += [f"{getattr(pair[m], field):.3f}" if m in pair else "not run" for m in ("torchvision", "ours")]
        steps = " / ".join(str(pair[m].steps) if m in pair else "-" for m in ("torchvision", "ours"))
        speed = " / ".join(f"{pair[m].images_per_second:.1f}" if m in pair else "-" for m in ("torchvision", "ours"))
        lines.append(f"| {budget:g} s | {' | '.join(cells)} | {steps} | {speed} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=list(DEFAULT_BUDGETS), help="training seconds per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the demo's 2-core CPU)")
    parser.add_argument("--quick", action="store_true", help=f"budgets {QUICK_BUDGETS} s: check the script end to end")
    parser.add_argument("--images-per-second", type=float, default=IMAGES_PER_SECOND,
                        help="training images per second of budget (default: the demo's, %(default).1f)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--models", nargs="+", choices=["torchvision", "ours"], default=["torchvision", "ours"],
                        help="train only these (default both)")
    args = parser.parse_args(argv)
    budgets = QUICK_BUDGETS if args.quick else tuple(args.budgets)
    if any(b <= 0 for b in budgets) or args.threads < 1 or args.images_per_second <= 0:
        parser.error("budgets and --images-per-second must be positive, --threads at least 1")

    flush_denormals()  # before any parallel op, for both models alike, as `maskrcnn demo` does (maskrcnn.cpu)
    torch.set_num_threads(args.threads)
    side = Config.demo().image_min_dim
    val_set = ShapesDataset(demo.VAL_IMAGES, side, side, seed=args.seed + VAL_SEED_OFFSET)
    print(f"demo vs torchvision: seed {args.seed}, {args.threads} threads, budgets {', '.join(f'{b:g}' for b in budgets)} s, "
          f"{len(val_set)} held-out images", flush=True)
    config = Config.demo()
    sizes = {name: sum(p.numel() for p in model.parameters()) for name, model in
             (("torchvision", build_torchvision_maskrcnn(config)), ("ours", MaskRCNN(config, class_names=val_set.class_names)))}
    print("parameters: " + ", ".join(f"{name} {count:,}" for name, count in sizes.items()), flush=True)
    started = time.perf_counter()
    results = [result for budget in budgets
               for result in run_budget(budget, seed=args.seed, images_per_second=args.images_per_second, val_set=val_set,
                                          models=args.models)]
    print()
    print(format_table(results))
    for result in results:
        if result.saw_every_image:
            print(f"note: {result.model} at {result.budget:g} s saw every training image "
                  + ("and stopped (one epoch, as `maskrcnn demo`)" if result.model == "ours" else "and started another pass"))
    print(f"\ncommand: python benchmarks/demo_vs_torchvision.py --budgets {' '.join(f'{b:g}' for b in budgets)} "
          f"--models {' '.join(args.models)} "
          f"--seed {args.seed} --threads {args.threads} --images-per-second {args.images_per_second:g}  "
          f"({time.perf_counter() - started:.0f} s in all, torch {torch.__version__}, torchvision {torchvision.__version__})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"seed": args.seed, "threads": args.threads, "images_per_second": args.images_per_second,
                       "torch": torch.__version__, "torchvision": torchvision.__version__,
                       "results": [asdict(r) for r in results]}, out, indent=2)


if __name__ == "__main__":
    main()
