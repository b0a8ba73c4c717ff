"""Trainer: layer selection, optimiser, schedule, logging, checkpoints and resume (seed section 2).

One step: the model's five losses on a batch, their sum, a check that every loss is finite (before any
optimiser step), backward, gradient clipping, optimiser step. After every epoch (or every N steps): a
checkpoint written atomically (model, optimiser, step, position in the epoch, RNG states, config, class
names), the loss curve, and the validation score when a validation set is given. A run ends after its
epochs, after `max_steps` steps or when its time budget is spent, whichever comes first.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from .config import LOSS_NAMES, Config
from .errors import CheckpointError, ConfigError, DataError, TrainingError
from .evaluation import evaluate_map  # noqa: F401  (re-exported: the demo imports it from here)
from .model import MaskRCNN
from .tensorboard_log import TensorBoardLog
from .validation import Monitor, finite_or_none, save_best, validate

VALIDATION_PICTURES = 4  # validation images drawn with their detections into TensorBoard

# The seed repository's layer choices, as regular expressions over our parameter names. The heads are
# everything but the ResNet trunk: FPN, RPN, box and mask heads. "3+" adds the trunk from C3 on (our
# layer2), "4+" from C4 (layer3), "5+" from C5 (layer4).
HEADS = r"(backbone\.fpn|rpn|box_head|mask_head)\..*"
LAYER_CHOICES = {
    "heads": HEADS,
    "3+": r"(backbone\.trunk\.(layer2|layer3|layer4|stage3|stage4|stage5)|" + HEADS[1:],
    "4+": r"(backbone\.trunk\.(layer3|layer4|stage4|stage5)|" + HEADS[1:],
    "5+": r"(backbone\.trunk\.(layer4|stage5)|" + HEADS[1:],
    "all": r".*",
}


def trainable_pattern(layers: str) -> re.Pattern:
    """The compiled pattern of a layer choice ("heads", "3+", "4+", "5+", "all") or a user's regular expression."""
    try:
        return re.compile(LAYER_CHOICES.get(layers, layers))
    except re.error as error:
        raise ValueError(f"layers={layers!r} is neither one of {', '.join(LAYER_CHOICES)} nor a valid regular expression: {error}") from None


def select_trainable(model: torch.nn.Module, layers: str) -> list[str]:
    """Set requires_grad on the parameters whose names match the layer choice; return their names."""
    pattern = trainable_pattern(layers)
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(bool(pattern.fullmatch(name)) or bool(pattern.match(name)))
        if parameter.requires_grad:
            chosen.append(name)
    if not chosen:
        raise ValueError(f"layers={layers!r} matches no parameter")
    return chosen


def freeze_unselected_norms(model: torch.nn.Module) -> None:
    """Put batch norms whose parameters are all frozen in eval mode, so that training only the heads
    leaves the trunk's running statistics as they were too."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def learning_rate_at(step: int, total_steps: int, *, base: float, warmup_steps: int, schedule: str, drops=(),
                     time_fraction: float = 0.0) -> float:
    """Linear warm-up from base/10 to base over the first warmup_steps steps, then constant, step drops or
    cosine to 0. The schedule's progress is the larger of step / total_steps and time_fraction (the share
    of a time budget used), so that a time-budgeted run ends its decay when the budget ends."""
    if warmup_steps and step < warmup_steps:
        return base * (0.1 + 0.9 * step / warmup_steps)
    progress = max(step / max(1, total_steps), time_fraction)
    if schedule == "cosine":
        warmup_share = warmup_steps / max(1, total_steps) if time_fraction == 0.0 else 0.0
        after_warmup = (progress - warmup_share) / max(1e-9, 1.0 - warmup_share)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, after_warmup))))
    if schedule == "step":
        return base * 0.1 ** sum(progress >= fraction for fraction in drops)
    return base


MAX_UNREADABLE_FRACTION = 0.05  # share of the images that may fail to load before training stops


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimiser steps
    history: list = field(default_factory=list)  # one record per step (also in the JSON-lines log)
    position: int = 0  # batches of epoch + 1 already used (a run stopped mid-epoch resumes after them)


class Trainer:
    """Trains a MaskRCNN on a data set; `train(epochs, layers=...)` can be called again to go on."""

    def __init__(self, model: MaskRCNN, dataset, *, out_dir, val_dataset=None, seed: int = 0, transform=None,
                 num_workers: int = 0, progress: bool = True, keep_checkpoints: int | None = 3,
                 distributed=None, amp: bool = False, checkpoint_every: int | None = None,
                 max_unreadable_fraction: float = MAX_UNREADABLE_FRACTION, report=None, eval_every: int | None = None,
                 best_metric: str = "segm_AP", patience: int | None = None, tensorboard: bool = False):
        """distributed: a distributed.Distributed from distributed.setup() (None: one process); the model
        must already be on its device (distributed.prepare_model). amp: mixed precision, off by default:
        on CUDA float16 autocast with a gradient scaler; on a CPU with AMX (cpu.has_amx) bfloat16 autocast,
        which needs no scaler (float32's exponent range). Weights, optimiser and losses stay float32.
        checkpoint_every: a checkpoint every this many steps (and at the end of the run) instead of one per
        epoch. max_unreadable_fraction: training stops with a DataError listing them once more than this
        share of the images could not be read. eval_every: validate every this many steps instead of after each
        epoch; best_metric: the validation metric (validation.METRICS) whose best value is kept as best.pt;
        patience: stop once it has not improved for this many evaluations; tensorboard: also write TensorBoard
        event files into out_dir (tensorboard_log.py). report: called with one line per epoch (its checkpoint and
        validation score) and at a stop, e.g. `print`; None says nothing."""
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every (--checkpoint-every) must be a number of steps >= 1, got {checkpoint_every}")
        if not 0.0 <= max_unreadable_fraction <= 1.0:
            raise ConfigError(f"max_unreadable_fraction (--max-unreadable-fraction) must be in [0, 1], got {max_unreadable_fraction}")
        self.checkpoint_every = checkpoint_every
        self.max_unreadable_fraction = max_unreadable_fraction
        self.report = report if report is not None else (lambda line: None)
        self.unreadable: dict[str, str] = {}  # image reference -> why it could not be read, in order seen
        self._saved_step = None  # the step of the newest checkpoint this trainer wrote or resumed from
        from .cpu import has_amx
        from .data import make_loader
        from .data.worker_log import WorkerLog
        from .distributed import single_process

        self.dist = distributed if distributed is not None else single_process()
        on_cuda = self.dist.device.type == "cuda" or model.device.type == "cuda"
        if amp and not on_cuda and not has_amx():
            raise ValueError("amp=True (--amp) is mixed precision for CUDA, or for CPUs with AMX (bfloat16); this CPU has "
                             "no AMX, where bfloat16 would be slower: training stays float32")
        self.amp = amp
        self.amp_dtype = torch.float16 if on_cuda else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and on_cuda)
        self.model = model
        self.network = model  # what the training step calls: the model, or its DistributedDataParallel wrapper
        self.config: Config = model.config
        self.dataset = dataset
        self.val_dataset = val_dataset
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.progress = progress and self.dist.is_main  # one progress bar, rank 0's
        # With worker processes, each records the images it is given, so that a worker killed by the OOM killer
        # can be named with the image it was loading (torch only says "DataLoader worker (pid N) is killed").
        self.worker_log = WorkerLog(dataset, num_workers) if num_workers > 0 else None
        self.loader = make_loader(self.worker_log or dataset, self.config.images_per_batch, shuffle=True, seed=seed,
                                  num_workers=num_workers, transform=transform,
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", keep=keep_checkpoints)
        self.log_path = self.out_dir / "train_log.jsonl"
        if eval_every is not None and eval_every < 1:
            raise ConfigError(f"eval_every (--eval-every) must be a number of steps >= 1, got {eval_every}")
        self.eval_every = eval_every
        self.monitor = Monitor(best_metric, patience)
        self.early_stop: str | None = None  # why the run stops early, once the monitor says so
        self.tensorboard = TensorBoardLog(self.out_dir, report=self.report) if tensorboard and self.dist.is_main else None
        self.state = TrainState()
        self.optimizer = None
        self.layers = None

    # ------------------------------------------------------------------------------------ set-up
    def _build_optimizer(self, layers: str) -> None:
        if self.optimizer is not None and layers == self.layers:
            return
        select_trainable(self.model, layers)
        c = self.config
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                # No weight decay on biases and norm layers: it only fights their scale.
                (no_decay if parameter.ndim <= 1 else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # One fused kernel over all tensors (torch.optim's `fused=True`): measured 4x faster on the CPU than
        # the per-tensor loop for AdamW's step.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay)
        if c.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=c.learning_rate, fused=fused)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=c.learning_rate, momentum=c.learning_momentum, fused=fused)
        self.layers = layers
        self.network = self.dist.wrap(self.model)  # after select_trainable: DDP syncs what requires grad then

    def resume(self) -> bool:
        """Load the latest checkpoint of out_dir, if there is one; return whether one was loaded."""
        with self.dist.agree("reading the latest checkpoint"):  # every rank reads the same file
            data = self.checkpoints.load_latest()
        self.dist.same(None if data is None else (int(data["epoch"]), int(data["step"])),
                       f"the latest checkpoint in {self.checkpoints.directory} (epoch, step)")
        if data is None:
            return False
        saved = Config.from_dict(data["config"])
        if saved != self.config:
            different = {k: (v, getattr(self.config, k)) for k, v in vars(saved).items() if getattr(self.config, k) != v}
            raise CheckpointError(
                f"{self.checkpoints.latest()}: cannot resume, the config differs from the checkpoint's: "
                + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in different.items())
            )
        self.model.load_state_dict(data["model"])
        self._build_optimizer(data["layers"])
        self.optimizer.load_state_dict(data["optimizer"])
        if data.get("scaler"):  # a disabled scaler (no CUDA amp) saves an empty state and has none to load
            self.scaler.load_state_dict(data["scaler"])
        self.state = TrainState(epoch=int(data["epoch"]), step=int(data["step"]), history=list(data.get("history", [])),
                                position=int(data.get("position", 0)))
        self._saved_step = self.state.step
        restore_rng_state(data["rng"])
        self.monitor.load_state_dict(data.get("monitor"))
        return True

    # ------------------------------------------------------------------------------------ training
    def train(self, epochs: int, layers: str = "all", *, time_budget: float | None = None,
              max_steps: int | None = None) -> TrainState:
        """Train until `epochs` epochs are complete in all (a resumed run goes on from its epoch and position).

        time_budget: stop after the step during which this many seconds have passed; max_steps: stop once this
        many steps are done in all (a resumed run counts its earlier steps). A run that stops mid-epoch
        writes a checkpoint there (epoch_NNNN_step_NNNNNNNN.pt) and resumes from that point of the epoch.
        Raises DataError before any step when no image has an instance to learn from, and during training
        when more than max_unreadable_fraction of the images cannot be read or no batch could be made;
        TrainingError when a loss is not finite or a data-loader worker dies (naming the worker and the
        images it was given).
        """
        if max_steps is not None and max_steps < 1:
            raise ConfigError(f"max_steps (--max-steps) must be at least 1, got {max_steps}")
        if time_budget is not None and not time_budget > 0:
            raise ConfigError(f"time_budget (--time-budget) must be positive seconds, got {time_budget}")
        check_has_instances(self.dataset)
        try:
            return self._train(epochs, layers, time_budget, max_steps)
        except RuntimeError as error:
            # torch raises a bare RuntimeError ("DataLoader worker (pid 123) is killed by signal") from wherever
            # the main process is when a worker dies, so it is caught around the whole loop.
            if self.worker_log is None or "DataLoader worker" not in str(error):
                raise
            latest = self.checkpoints.latest()
            raise TrainingError(
                f"{self.worker_log.describe(str(error))}; the run stopped at step {self.state.step}. "
                + (f"The last checkpoint is {latest}: resume from it (Trainer.resume(), or `maskrcnn train ... --resume`)."
                   if latest else "No checkpoint was written yet.")
            ) from error

    def _train(self, epochs: int, layers: str, time_budget: float | None, max_steps: int | None) -> TrainState:
        self._build_optimizer(layers)
        c = self.config
        steps_per_epoch = len(self.loader)
        total_steps = epochs * steps_per_epoch
        if max_steps is not None:
            total_steps = min(total_steps, max_steps)  # the schedule ends where the run does
        started = time.perf_counter()
        self.model.train()
        freeze_unselected_norms(self.model)
        stop = None
        base_lr, why = c.training_learning_rate(c.images_per_batch * self.dist.world_size)
        if self.dist.is_main:
            self.report(f"learning rate {base_lr:g} ({why}); schedule {c.lr_schedule}")
        if self.dist.enabled and self.dist.is_main:
            from .distributed import describe

            print(describe(self.dist, c.images_per_batch, base_lr, scaled=bool(c.lr_reference_batch)), flush=True)
        for epoch in range(self.state.epoch, epochs):
            if max_steps is not None and self.state.step >= max_steps:
                stop = f"max_steps={max_steps}"
                break
            self.loader.sampler.set_epoch(epoch)
            # Resuming mid-epoch: the same order (it depends on seed and epoch only), after the batches done.
            self.loader.sampler.skip_next(self.state.position * c.images_per_batch)
            steps_before = self.state.step
            bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not self.progress, leave=False, dynamic_ncols=True)
            for batch in self.dist.batches(bar):  # in step on every rank (distributed.py)
                images, targets = batch
                self.state.position += 1
                self._count_unreadable(getattr(batch, "skipped", ()))
                if images:
                    # With a time budget the schedule runs on the larger of step and time progress, so that
                    # a cosine decay ends when the budget does on any machine.
                    time_fraction = 0.0
                    if time_budget is not None:
                        time_fraction = self.dist.from_main(time.perf_counter() - started) / time_budget  # rank 0's clock for all
                    lr = learning_rate_at(self.state.step, total_steps, time_fraction=time_fraction, base=base_lr,
                                          warmup_steps=c.lr_warmup_steps, schedule=c.lr_schedule, drops=c.lr_steps)
                    record = self.step(images, targets, lr)
                    record.update(epoch=epoch + 1, seconds=round(time.perf_counter() - started, 3))
                    self._log(record)
                    bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss",) + LOSS_NAMES})
                    if self.val_dataset is not None and self.eval_every and self.state.step % self.eval_every == 0:
                        self._validate()
                        stop = stop or self.early_stop
                if time_budget is not None and self.dist.any(time.perf_counter() - started > time_budget):
                    stop = f"time budget of {time_budget:g} s"
                elif max_steps is not None and self.state.step >= max_steps:
                    stop = f"max_steps={max_steps}"
                if stop or self.state.position == steps_per_epoch:
                    break
                if self.checkpoint_every and images and self.state.step % self.checkpoint_every == 0:
                    self._checkpoint()
            bar.close()
            if self.state.step == steps_before and self.unreadable:
                self._raise_unreadable("no batch of this epoch could be made: none of its images could be read")
            if self.state.position >= steps_per_epoch:
                self.state.epoch, self.state.position = epoch + 1, 0
                self.end_of_epoch()
                stop = stop or self.early_stop
            if stop:
                break
        if self.state.step and self._saved_step != self.state.step:  # the end of a run is always in a checkpoint
            self.end_of_epoch(stopped=stop or "the end of the run")
        elif self.early_stop and self.dist.is_main:
            self.report(f"stopped at step {self.state.step} ({self.early_stop})")
        return self.state

    def _count_unreadable(self, skipped) -> None:
        """Record a batch's unreadable images; DataError once they are more than the allowed share."""
        for reference, reason in skipped:
            self.unreadable.setdefault(reference, reason)
        allowed = self.max_unreadable_fraction * len(self.loader.sampler)  # this process's images per epoch
        if self.dist.any(len(self.unreadable) > allowed):
            self._raise_unreadable(f"more than max_unreadable_fraction={self.max_unreadable_fraction:g} of the "
                                   f"{len(self.loader.sampler)} images could not be read")

    def _raise_unreadable(self, what: str):
        listed = "; ".join(f"{reference}: {reason}" for reference, reason in list(self.unreadable.items())[:5])
        more = f" and {len(self.unreadable) - 5} more" if len(self.unreadable) > 5 else ""
        raise DataError(f"training stopped at step {self.state.step}: {what} ({len(self.unreadable)} unreadable: "
                        f"{listed}{more}). Fix or remove them (`maskrcnn validate` lists them all), or allow "
                        f"more with --max-unreadable-fraction (Trainer(max_unreadable_fraction=...)).")

    def step(self, images, targets, lr: float) -> dict:
        """One optimiser step; raises TrainingError before the step when a loss is not finite."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Distributed: a failure on any rank stops every rank here, before backward exchanges gradients.
        with self.dist.agree(f"step {self.state.step + 1}"):
            with torch.autocast(self.model.device.type, dtype=self.amp_dtype, enabled=self.amp):
                losses = self.network(images, targets)
            values = {name: float(value.detach()) for name, value in losses.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise TrainingError(
                    f"step {self.state.step + 1}: a loss is not finite ("
                    + ", ".join(f"{k}={v}" for k, v in values.items())
                    + "); no optimiser step was applied, and the last checkpoint in "
                    f"{self.checkpoints.directory} is from before this step. Lower the learning rate or check the data."
                )
        values = self.dist.mean(values)  # the global batch's losses, for the log
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()  # without amp the scaler passes everything through unchanged
        if self.config.gradient_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.config.gradient_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        return {"step": self.state.step, "lr": lr, "loss": sum(values.values()), **values}

    def _log(self, record: dict) -> None:
        self.state.history.append(record)
        if self.dist.is_main:
            with open(self.log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.add_record(record)

    def end_of_epoch(self, *, stopped: str | None = None) -> None:
        """After an epoch (or when the run stops mid-epoch, saying why): validation score, checkpoint (every
        epoch, or every checkpoint_every steps and at the end of the run), loss curve, one reported line."""
        score = None
        if self.val_dataset is not None and not self.eval_every:
            score = self._validate()
        due = stopped or self.checkpoint_every is None or self.state.step % self.checkpoint_every == 0
        path = self._checkpoint() if due else None
        if not self.dist.is_main:
            return
        try:
            from .visualize import plot_losses

            plot_losses([r for r in self.state.history if "loss" in r], self.out_dir / "loss.png")
        except (ImportError, ValueError):
            pass  # a picture is a convenience; never lose a run over it
        line = f"stopped at step {self.state.step} ({stopped})" if stopped else f"epoch {self.state.epoch}"
        line += f": checkpoint {path}" if path else f" (step {self.state.step})"
        if score is not None:
            line += f"; validation box mAP@0.5 {score['box_map50']:.4f}, mask mAP@0.5 {score['mask_map50']:.4f}"
            if "segm_AP" in score:
                line += f", loss {score['loss']:.4f}, box AP {score['bbox_AP']:.4f}, mask AP {score['segm_AP']:.4f}"
        self.report(line)

    def _checkpoint(self) -> Path | None:
        """save_checkpoint on rank 0, the other ranks waiting; the path written (None on the other ranks)."""
        path = None
        with self.dist.agree("writing the checkpoint"):  # rank 0 writes; a failure there stops the others too
            if self.dist.is_main:
                path = self.save_checkpoint()
        self._saved_step = self.state.step
        return path

    def save_checkpoint(self) -> Path:
        """Write the training state; mid-epoch (position > 0) under the in-progress epoch and the step."""
        state = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),  # float16 loss scale and its growth count ({} when disabled)
            "layers": self.layers,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "history": [{k: v for k, v in r.items()} for r in self.state.history],
            "rng": capture_rng_state(),
            "config": self.config.to_dict(),
            "class_names": list(self.model.class_names),
            "position": self.state.position,
            "monitor": self.monitor.state_dict(),  # the best validation value so far, for best.pt and --patience
        }
        if self.state.position:
            return self.checkpoints.save(state, self.state.epoch + 1, step=self.state.step)
        return self.checkpoints.save(state, self.state.epoch)

    def evaluate(self, dataset) -> dict:
        """Box and mask mAP@0.5 (the seed's compute_ap) on a data set."""
        if self.dist.enabled:  # shared among the ranks, same numbers (distributed.evaluate_sharded)
            from .distributed import evaluate_sharded

            return evaluate_sharded(self.model, dataset, batch_size=self.config.images_per_batch, context=self.dist)
        return evaluate_map(self.model, dataset, batch_size=self.config.images_per_batch)

    def _validate(self) -> dict:
        """Validation (validation.validate: losses, COCO AP, mAP@0.5) logged as "val_*" at this step; best.pt
        when the monitored metric improves; self.early_stop set once it has not for `patience` evaluations."""
        if self.dist.enabled:  # the sharded mAP@0.5 only
            score, pictures = self.evaluate(self.val_dataset), []
        else:
            score, pictures = validate(self.model, self.val_dataset, batch_size=self.config.images_per_batch,
                                       pictures=VALIDATION_PICTURES if self.tensorboard is not None else 0)
        self._log({"step": self.state.step, "epoch": self.state.epoch,
                   **{f"val_{k}": v for k, v in finite_or_none(score).items()}})
        if self.tensorboard is not None:
            self.tensorboard.add_pictures(self.state.step, pictures)
        if self.monitor.metric in score:
            value = self.dist.from_main(score[self.monitor.metric]) if self.dist.enabled else score[self.monitor.metric]
            if self.monitor.update(value, self.state.step) and self.dist.is_main:
                save_best(self.model, self.out_dir, self.monitor, epoch=self.state.epoch)
            if self.monitor.should_stop:
                self.early_stop = self.monitor.stop_reason()
        return score


def check_has_instances(dataset) -> None:
    """DataError unless some image has an instance: a run on negatives only would log losses and learn nothing."""
    if not hasattr(dataset, "num_instances"):
        return  # a plain map-style data set: counting would load every sample
    for index in range(len(dataset)):
        try:
            if dataset.num_instances(index) > 0:
                return
        except DataError:
            continue  # an unreadable image is skipped (with a warning) by the loader too
    where = getattr(dataset, "annotation_file", None) or getattr(dataset, "json_file", None) or "the training data set"
    raise DataError(f"{where}: none of its {len(dataset)} images has a usable (non-crowd) instance after filtering; "
                    f"training would only see background. Check the annotations (`maskrcnn validate`).")
