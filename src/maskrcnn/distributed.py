"""Training on several processes, GPUs or machines with torch.distributed, launched by `torchrun`.

torchrun starts one process per GPU (or per CPU slot) and tells each who it is through environment
variables: RANK (0..WORLD_SIZE-1 over all machines), WORLD_SIZE, LOCAL_RANK (the process's index on its
machine, hence its GPU) and MASTER_ADDR / MASTER_PORT (where the processes meet). `setup()` reads them and
joins the process group: NCCL when CUDA is available (each process on cuda:LOCAL_RANK), gloo on CPU.

How the pieces fit (the Trainer calls them; nothing here runs on its own):

* **Data**: every process draws the same permutation from (seed, epoch) and takes every world_size-th
  image (`SeededSampler(rank=, world_size=)`), so an epoch is reshuffled for all processes at once and
  batch j of the processes together is the single-process batch j of `world_size x images_per_batch`.
* **Gradients**: `DistributedDataParallel` averages the gradients of the processes. The model's losses are
  means over sampled anchors and ROIs, so the average of W per-process losses is the loss of the global
  batch whenever every image contributes the same number of terms (tests/test_distributed.py builds such a
  case and gets the single-process weights back). `find_unused_parameters` stays False: every trainable
  parameter takes part in the losses even for a batch without objects (the empty-case losses are
  `x.sum() * 0`, which still reaches the head's weights), and a test runs a rank whose images are all
  negatives.
* **Failures**: a collective with a process that died or skipped it waits until the process group's
  timeout. So every step the processes exchange a status twice, after loading the batch and after the
  forward pass (before backward, before any gradient is exchanged): if any process failed, every process
  raises DistributedError naming the failing rank(s) and their errors, within one step. `timeout` is
  the bound for the failures this cannot see (a process killed outright or stuck).
* **Output**: only rank 0 writes logs, progress bars, pictures and checkpoints. Checkpoints hold the
  underlying module's state (no DDP `module.` prefix), so a run of N processes resumes with M.
* **Evaluation**: whole batches are dealt out to the processes, predictions are gathered
  (all_gather_object) into image order and scored on rank 0: the numbers are the single-process ones.
"""
from __future__ import annotations

import atexit
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError, DistributedError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT = 600.0  # seconds a collective may wait for a missing process before every process fails

# Per-step status, combined with an all-reduce MAX: the worst status of any rank decides for all.
OK, EMPTY, EXHAUSTED, FAILED = 0, 1, 2, 3


@dataclass(frozen=True)
class Distributed:
    """Who this process is among the training processes; `Distributed()` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # "gloo" or "nccl" once the process group is joined; None: single process

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process: gradients, statuses and evaluations are exchanged."""
        return self.world_size > 1

    # ------------------------------------------------------------------------------------ model
    def wrap(self, model: nn.Module) -> nn.Module:
        """`DistributedDataParallel(model)` when enabled, else the model itself.

        Call it after choosing the trainable parameters: DDP only synchronises those that require gradients
        when it is built. The wrapper's forward is the model's (a dict of losses); keep calling `predict`
        and `state_dict` on the model itself.
        """
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)

    # ------------------------------------------------------------------------------------ collectives
    def _reduce_max(self, status: int) -> int:
        flag = torch.tensor([status], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _settle(self, what: str, error: BaseException | None, status: int = OK) -> int:
        """Exchange this rank's status; raise DistributedError on every rank if any rank failed."""
        worst = self._reduce_max(FAILED if error is not None else status)
        if worst != FAILED:
            return worst
        reports = self.gather(None if error is None else f"{type(error).__name__}: {str(error).rstrip('. ')}")
        failed = "; ".join(f"rank {rank} failed: {report}" for rank, report in enumerate(reports) if report is not None)
        raise DistributedError(
            f"{what}: training stopped on all {self.world_size} processes. {failed}. "
            "Completed checkpoints are kept; fix the cause and resume with --resume."
        ) from error

    @contextmanager
    def agree(self, what: str):
        """Run a block on every rank; if it raises on any rank, raise DistributedError on all of them.

        Put it around work that may fail on one rank only (a forward pass, a non-finite loss, reading a
        checkpoint) and that comes before the next collective, so that no rank is left waiting in it.
        Single process: the block runs as it is and its errors pass through unchanged.
        """
        if not self.enabled:
            yield
            return
        error = None
        try:
            yield
        except Exception as caught:  # any error: the other ranks must hear of it, or they wait in the next collective
            error = caught
        self._settle(what, error)

    def batches(self, loader):
        """The loader's (images, targets) batches, in step on every rank.

        When a rank fails to load its batch, every rank raises DistributedError; when a rank's batch came
        out empty (every image in it unreadable and skipped), every rank gets an empty batch (still listing
        its own skipped images) and skips that step; when one rank runs out of batches, all stop.
        """
        from .data import Batch

        if not self.enabled:
            yield from loader
            return
        iterator = iter(loader)
        while True:
            batch, error, status = ([], []), None, OK
            try:
                batch = next(iterator)
                status = OK if batch[0] else EMPTY
            except StopIteration:
                status = EXHAUSTED
            except Exception as caught:  # a bad image, a dead worker: reported to every rank below
                error = caught
            worst = self._settle("loading a batch", error, status)
            if worst == EXHAUSTED:
                return
            yield Batch([], [], getattr(batch, "skipped", ())) if worst == EMPTY else batch

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on some rank."""
        return bool(self._reduce_max(int(bool(flag)))) if self.enabled else bool(flag)

    def from_main(self, value: float) -> float:
        """Rank 0's value on every rank (a clock reading, so that a time-based schedule agrees)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (per-process losses -> the global batch's losses, for the log)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return {name: float(v) / self.world_size for name, v in zip(values, tensor.tolist())}

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (any picklable object; tensors on the CPU)."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj):
        """Rank 0's object on every rank."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def same(self, value, what: str) -> None:
        """DistributedError on every rank unless every rank holds the same value (e.g. the checkpoint it resumed from)."""
        values = self.gather(value)
        if any(v != values[0] for v in values):
            listed = "; ".join(f"rank {rank}: {v!r}" for rank, v in enumerate(values))
            raise DistributedError(
                f"the processes disagree about {what} ({listed}). Every machine must see the same files: "
                "put --out on a shared file system, or copy the checkpoints to each machine."
            )


def single_process(device: torch.device | str = "cpu") -> Distributed:
    return Distributed(device=torch.device(device))


def launched_by_torchrun(environ=os.environ) -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return all(name in environ for name in TORCHRUN_VARIABLES)


def setup(*, timeout: float = DEFAULT_TIMEOUT, device: str | None = None, environ=os.environ) -> Distributed:
    """Join the process group described by torchrun's environment, or return a single-process context.

    Backend by device: NCCL on CUDA (this process uses cuda:LOCAL_RANK), gloo on the CPU. `device="cpu"`
    forces gloo on a machine with GPUs. `timeout` (seconds) bounds how long a collective waits for a
    missing process. The group is left again when the process exits.
    """
    if timeout <= 0:
        raise ConfigError(f"distributed timeout must be positive seconds, got {timeout}")
    if not launched_by_torchrun(environ):
        return single_process(device or "cpu")
    rank, world_size, local_rank = int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank}: LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        chosen, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(chosen)
    else:
        chosen, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout))
        atexit.register(shutdown)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen, backend=backend)


def shutdown() -> None:
    """Leave the process group (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def prepare_model(model: nn.Module, context: Distributed, *, sync_bn: bool = False) -> nn.Module:
    """Move the model to the context's device; with sync_bn, batch norm computes its statistics over the
    global batch (SyncBatchNorm) instead of each process's share of it.

    SyncBatchNorm matters only where batch norm is trained (Config.train_bn, fpn_norm or mask_head_norm
    "batch"); frozen batch norm has no batch statistics. torch implements it for CUDA only.
    """
    if sync_bn and context.enabled:
        if context.device.type != "cuda":
            raise ConfigError("--sync-bn: torch's SyncBatchNorm runs on CUDA only; on the CPU train without it "
                              "(each process then normalises with its own images' statistics) or freeze batch norm (train_bn=false)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(context.device)


def describe(context: Distributed, images_per_process: int, learning_rate: float, scaled: bool = False) -> str:
    """The global batch and the learning-rate scaling rule, printed by rank 0 at the start of training.
    scaled: the rate was already scaled to the global batch (Config.lr_reference_batch)."""
    global_batch = images_per_process * context.world_size
    if scaled:
        return (f"distributed training: {context.world_size} processes ({context.backend} on {context.device.type}) x "
                f"{images_per_process} images per process = global batch of {global_batch} images per step; learning "
                f"rate {learning_rate:g}, scaled to that global batch by the linear scaling rule (Goyal et al. 2017).")
    return (
        f"distributed training: {context.world_size} processes ({context.backend} on {context.device.type}) x "
        f"{images_per_process} images per process = global batch of {global_batch} images per step. "
        f"learning_rate {learning_rate:g} is used as given for the global batch. Linear scaling rule "
        f"(Goyal et al. 2017): when the global batch grows k-fold, multiply the learning rate by k; a rate tuned "
        f"for one process with {images_per_process} images becomes {learning_rate * context.world_size:g} here "
        f"(--set learning_rate={learning_rate * context.world_size:g}), with a warm-up (lr_warmup_steps)."
    )


def gather_predictions(model, dataset, *, batch_size: int, context: Distributed) -> list:
    """model.predict on every image of a data set, the work shared among the ranks; Detections in image
    order on every rank.

    Whole batches (images [k*batch_size, (k+1)*batch_size)) are dealt out, so each image is predicted in the
    same batch as in a single-process evaluation and the detections are the same, bit for bit.
    """
    batches = [list(range(start, min(start + batch_size, len(dataset)))) for start in range(0, len(dataset), batch_size)]
    mine = {}
    with context.agree("evaluation"):
        for batch in batches[context.rank::context.world_size]:
            found = model.predict([dataset.load_image(i) for i in batch])
            mine.update({i: f.to("cpu") for i, f in zip(batch, found)})
    merged = {}
    for part in context.gather(mine):
        merged.update(part)
    return [merged[i] for i in range(len(dataset))]


def evaluate_sharded(model, dataset, *, batch_size: int, context: Distributed) -> dict:
    """{"box_map50", "mask_map50"} as evaluation.evaluate_map computes them, with prediction shared among ranks;
    scored on rank 0 and the same dict returned on every rank."""
    from .evaluation import ground_truth_detections, map50_scores

    found = gather_predictions(model, dataset, batch_size=batch_size, context=context)
    score = None
    with context.agree("scoring the evaluation"):  # rank 0 scores while the others wait in the broadcast
        if context.is_main:
            score = map50_scores([ground_truth_detections(dataset, i) for i in range(len(dataset))], found)
    return context.broadcast(score)


def quiet_unless_main(context: Distributed) -> None:
    """Send the standard output of every rank but 0 to nowhere, so a command's messages appear once.

    Standard error stays: a rank's own error message must still reach the terminal or torchrun's log.
    """
    if not context.is_main:
        sys.stdout = open(os.devnull, "w")
