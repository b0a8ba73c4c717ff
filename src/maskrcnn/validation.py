"""Validation during training: the five losses and the COCO box and mask AP on a held-out set, measured without
touching what training depends on, and the choice of the best model (best.pt) and of when to stop early.

Measuring must leave the run exactly as it was: no gradient, no batch-norm running statistic updated (a
forward in train mode would move them towards the validation images), and the same random streams afterwards
(the training forward samples anchors and ROIs, and augmentation draws from torch, numpy and Python), so a run
with validation trains the same steps as one without.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import capture_rng_state, restore_rng_state
from .config import LOSS_NAMES
from .errors import ConfigError
from .evaluation import METRIC_NAMES, IOU_TYPES, CocoEvaluator, ground_truth_detections, map50_scores

DRAW_SCORE_THRESHOLD = 0.5  # detections drawn on the validation pictures (TensorBoard)
# The metrics `validate` returns: the losses (lower is better), then COCO's (higher is better).
LOSS_METRICS = ("loss",) + LOSS_NAMES
METRICS = LOSS_METRICS + tuple(f"{t}_{m}" for t in IOU_TYPES for m in METRIC_NAMES) + ("box_map50", "mask_map50")


@contextlib.contextmanager
def untouched(model: torch.nn.Module):
    """Every module in eval mode (batch norm uses and keeps its running statistics, dropout is off), no
    gradient, and afterwards each module's own mode and the torch, CUDA, numpy and Python random states back."""
    modes = [(module, module.training) for module in model.modules()]
    rng = capture_rng_state()
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode
        restore_rng_state(rng)


def validation_losses(model, dataset, *, batch_size: int) -> dict[str, float]:
    """The mean over batches of the five losses and their sum "loss" (model(images, targets) always returns
    the losses, whatever the mode). Call inside `untouched`."""
    from .data import make_loader

    loader = make_loader(dataset, batch_size, shuffle=False, seed=0)
    sums, batches = dict.fromkeys(LOSS_NAMES, 0.0), 0
    for images, targets in loader:
        if not images:
            continue
        images = [image.to(model.device) for image in images]
        targets = [{k: v.to(model.device) for k, v in target.items()} for target in targets]
        losses = model(images, targets)
        for name in LOSS_NAMES:
            sums[name] += float(losses[name])
        batches += 1
    if not batches:
        return dict.fromkeys(LOSS_METRICS, math.nan)
    means = {name: value / batches for name, value in sums.items()}
    return {"loss": sum(means.values()), **means}


def validate(model, dataset, *, batch_size: int, pictures: int = 0):
    """(metrics, pictures): `METRICS` of the model on the data set, and the first `pictures` images with the
    detections scoring >= DRAW_SCORE_THRESHOLD drawn ((H, W, 3) uint8 each).

    The COCO AP counts every detection (score threshold 0, up to the config's detection_max_instances); the
    seed's mAP@0.5 (box_map50, mask_map50) those above the config's detection_min_confidence, as before.
    """
    from .visualize import draw_instances

    with untouched(model):
        metrics = validation_losses(model, dataset, batch_size=batch_size)
        evaluator = CocoEvaluator(dataset)
        truths, kept, drawn = [], [], []
        threshold = model.config.detection_min_confidence
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(len(dataset), start + batch_size))
            images = [dataset.load_image(i) for i in indices]
            for i, image, found in zip(indices, images, model.predict(images, score_threshold=0.0)):
                found = found.to("cpu")
                evaluator.add(i, found)
                truths.append(ground_truth_detections(dataset, i))
                kept.append(found[found.scores >= threshold])
                if i < pictures:
                    drawn.append(draw_instances(image, found, model.class_names, score_threshold=DRAW_SCORE_THRESHOLD))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no detections" early in a run: the zeros are the answer
            summary = evaluator.summarize()
        for iou_type in IOU_TYPES:
            metrics.update({f"{iou_type}_{name}": summary[iou_type][name] for name in METRIC_NAMES})
        metrics.update(map50_scores(truths, kept))
    return metrics, drawn


@dataclass
class Monitor:
    """The best value so far of one validation metric, and how many evaluations since it last improved.

    metric: one of METRICS; losses are better lower, the rest higher. patience: stop once this many
    evaluations in a row have not improved on the best (None: never stop early). A NaN never improves.
    """

    metric: str = "segm_AP"
    patience: int | None = None
    best: float | None = None
    best_step: int | None = None
    stale: int = 0  # evaluations since the best
    history: list = field(default_factory=list)

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ConfigError(f"best metric (--best-metric) {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.patience is not None and (isinstance(self.patience, bool) or self.patience < 1):
            raise ConfigError(f"patience (--patience) must be a number of evaluations >= 1, got {self.patience}")

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOSS_METRICS

    def update(self, value: float, step: int) -> bool:
        """Record an evaluation's value; True when it is the new best."""
        value = float(value)
        improved = not math.isnan(value) and (
            self.best is None or (value < self.best if self.lower_is_better else value > self.best))
        if improved:
            self.best, self.best_step, self.stale = value, step, 0
        else:
            self.stale += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def stop_reason(self) -> str:
        best = "never a number" if self.best is None else f"best {self.best:.4f} at step {self.best_step}"
        return f"early stop: {self.metric} has not improved for {self.stale} evaluations ({best}; --patience {self.patience})"

    def state_dict(self) -> dict:
        return {"metric": self.metric, "best": self.best, "best_step": self.best_step, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        """Go on from a checkpoint's state, if it watched the same metric (another metric starts afresh)."""
        if state and state.get("metric") == self.metric:
            self.best, self.best_step, self.stale = state["best"], state["best_step"], int(state["stale"])


def finite_or_none(metrics: dict) -> dict:
    """The metrics for the JSON log: NaN (no ground truth of a size) as None, numpy numbers as floats."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else float(v) if isinstance(v, (float, np.floating)) else v)
            for k, v in metrics.items()}


def save_best(model, out_dir, monitor: Monitor, *, epoch: int) -> None:
    """out_dir/best.pt (saving.save: loads with maskrcnn.load, evaluates with `maskrcnn evaluate`) and
    out_dir/best.json saying which metric, value, step and epoch it is; both written atomically."""
    from pathlib import Path

    from .files import atomic_write_json
    from .saving import save

    out_dir = Path(out_dir)
    save(model, out_dir / "best.pt")
    atomic_write_json(out_dir / "best.json", {"metric": monitor.metric, "value": monitor.best, "step": monitor.best_step,
                                              "epoch": epoch}, indent=1)
