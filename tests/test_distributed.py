"""Distributed training (distributed.py) on this CPU: gloo, 2 processes, 127.0.0.1 only.

One pair of processes (the `two_ranks` fixture) runs every in-process scenario in one process group, since
starting a process that imports torch is the expensive part: training next to a single-process reference,
sharded evaluation, a rank whose images are all negatives, a NaN loss on rank 1, and `maskrcnn train` with
an exception on rank 1. A separate test launches two torchrun "machines" through the command line.

Why the two runs can agree: DistributedDataParallel averages the gradients of the processes, and each loss
is a mean over sampled anchors / ROIs / mask pixels. The mean over the global batch equals the average of
the per-process means exactly when every image contributes the same number of terms and no random draw
depends on how the images are split. EXACT_CONFIG makes it so: no IoU band is ignored (equal positive and
negative thresholds), every anchor and every ROI candidate is kept (limits above the counts, so sampling
draws nothing at random), ROI positives are exactly the ground-truth boxes (positive IoU 1.0), and every
image holds exactly one shape. Batch norm is frozen (train_bn=False): trained BN would normalise 2 x B
images per process against 2B at once, and torch's SyncBatchNorm, which fixes that, runs on CUDA only.

Why the comparison runs in float64: the exact case is exact in arithmetic, not in float32 rounding. The
convolution kernels sum in an order that depends on the batch size and the thread count (each rank runs 2
images on 1 thread, the reference 4 images on 2 threads), so the float32 runs differ by ~1e-7 after one
step. An untrained RPN scores its anchors nearly alike, and the proposal layer's top-k and NMS rank those
scores: a rounding difference reorders near-ties, another set of ROIs reaches the heads, and after 4 steps
the float32 weights differ by up to 5e-5 (seen on an AMD EPYC with AVX-512; 1.5e-6 on an Intel Xeon), a
share of the weights' own movement. In float64 the same split gives the single-process weights to ~1e-16.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskrcnn import Config, MaskRCNN, distributed
from maskrcnn.data import ShapesDataset
from maskrcnn.data.loader import SeededSampler
from maskrcnn.errors import DistributedError
from maskrcnn.evaluation import evaluate_map
from maskrcnn.train import Trainer

PER_PROCESS_BATCH = 2
EPOCHS = 2  # 8 images, global batch 4: 2 steps an epoch, 4 in all; the second epoch checks the reshuffle
# In float64 the weights of the two runs differ only by summation order (threads, the gradient all-reduce):
# 6e-17 when the split is emulated in one process. The weights themselves move by ~3e-2 (checked below to
# exceed 100 x ATOL), so a wrong average (a sum, a missing shard, another batch split) lies far outside.
ATOL, RTOL = 1e-9, 1e-9
EXACT_CONFIG = dict(
    train_bn=False,
    rpn_positive_iou=0.5, rpn_negative_iou=0.5,  # no ignored anchors
    rpn_train_anchors_per_image=2048, rpn_positive_fraction=1.0,  # 64x64 input: 1023 anchors, all kept
    post_nms_rois_training=32, train_rois_per_image=64, roi_positive_ratio=1.0,  # all 32 + 1 candidates kept
    roi_positive_iou=1.0, roi_negative_iou=1.0,  # positives: the ground-truth box itself, one per image
    lr_warmup_steps=0, lr_schedule="constant", learning_rate=0.02,
    # SGD, not the demo's AdamW: Adam divides by the gradient's own scale, so float noise in a near-zero
    # gradient becomes a full-size step, and two correct runs would differ by up to the learning rate.
    optimizer="sgd", weight_decay=1e-4, mask_head_norm="none",
    detection_min_confidence=0.0,  # evaluation: detections to compare even from a barely trained model
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(images_per_batch: int, dtype: torch.dtype = torch.float32) -> MaskRCNN:
    torch.manual_seed(0)
    return MaskRCNN(Config.demo(images_per_batch=images_per_batch, **EXACT_CONFIG)).to(dtype)


def assert_same_weights(actual: dict, expected: dict, *, label: str) -> None:
    """Every tensor of `expected` within ATOL + RTOL * |expected| of `actual`; on failure the message names the
    tensor and element with the largest difference and both values."""
    worst = None
    for name, value in expected.items():
        if not value.is_floating_point():
            assert torch.equal(actual[name], value), f"{label}: {name} differs"
            continue
        excess = (actual[name] - value).abs() - (ATOL + RTOL * value.abs())
        index = int(excess.argmax()) if excess.numel() else 0
        if excess.numel() and (worst is None or excess.flatten()[index] > worst[0]):
            worst = (float(excess.flatten()[index]), name, index)
    if worst is not None and worst[0] > 0:
        _, name, index = worst
        a, e = float(actual[name].flatten()[index]), float(expected[name].flatten()[index])
        position = tuple(int(i) for i in torch.unravel_index(torch.tensor(index), expected[name].shape))
        raise AssertionError(f"{label}: largest difference in {name}{list(position)}: {a!r} vs {e!r} (|diff| {abs(a - e):.3g}, "
                             f"allowed {ATOL + RTOL * abs(e):.3g})")


def _train_set() -> ShapesDataset:
    return ShapesDataset(count=8, height=64, width=64, seed=3, min_shapes=1, max_shapes=1)


def _val_set() -> ShapesDataset:
    return ShapesDataset(count=5, height=64, width=64, seed=9)  # 3 batches of 2: rank 0 predicts 2, rank 1 one


class RankOneShapes(ShapesDataset):
    """Shapes whose samples misbehave on rank 1 only: "negatives" (no objects at all), "nan" (NaN pixels),
    or "raise" (an error from the third sample on, as a broken image would give)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.served = mode, 0

    def __getitem__(self, index: int):
        image, target = super().__getitem__(index)
        if os.environ.get("RANK") != "1":
            return image, target
        self.served += 1
        if self.mode == "negatives":
            height, width = image.shape[-2:]
            target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                      "masks": torch.zeros(0, height, width, dtype=torch.bool)}
        elif self.mode == "nan":
            image = torch.full_like(image, float("nan"))
        elif self.mode == "raise" and self.served > 2:
            raise RuntimeError(f"image {index}: injected decoder failure")
        return image, target


def _cli_with_failing_rank(folder: Path, rank: int) -> int:
    """`maskrcnn train` (cli.main) on shapes that raise on rank 1; returns the exit status, stderr kept in a file."""
    import maskrcnn.data
    from maskrcnn import cli

    maskrcnn.data.load_dataset_spec = lambda spec, allow_empty=False: RankOneShapes(
        "raise", count=8, height=64, width=64, seed=3)
    sys.stderr = open(folder / f"cli_stderr_{rank}.txt", "w")
    try:
        return cli.main(["train", "--data", "shapes:8:64", "--preset", "demo", "--set", "images_per_batch=2",
                         "--val-fraction", "0", "--epochs", "1", "--out", str(folder / "cli"), "--no-progress"])
    finally:
        sys.stderr.close()


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """One rank: every in-process scenario in turn, results to rank{rank}.pt, exit status of the CLI run."""
    folder = Path(folder)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = distributed.setup(timeout=120, device="cpu")
    results = {"context": (context.rank, context.world_size, context.backend)}

    # 1. the same training as one process with a global batch of 2 x PER_PROCESS_BATCH
    model = distributed.prepare_model(_model(PER_PROCESS_BATCH, torch.float64), context)
    trainer = Trainer(model, _train_set(), out_dir=folder / "equal", seed=0, progress=False, distributed=context)
    trainer.train(EPOCHS)
    results["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
    results["logged_losses"] = [r["loss"] for r in trainer.state.history if "loss" in r]

    # 2. sharded evaluation against the single-process one, same weights, same process
    val = _val_set()
    results["sharded_found"] = distributed.gather_predictions(model, val, batch_size=2, context=context)
    results["sharded_score"] = distributed.evaluate_sharded(model, val, batch_size=2, context=context)
    if context.is_main:
        results["single_found"] = [f for s in range(0, len(val), 2) for f in model.predict([val.load_image(i) for i in range(s, min(s + 2, len(val)))])]
        results["single_score"] = evaluate_map(model, val, batch_size=2)

    # 3. rank 1's images all negatives: no hang (every parameter still gets a gradient)
    model = distributed.prepare_model(_model(PER_PROCESS_BATCH), context)
    data = RankOneShapes("negatives", count=8, height=64, width=64, seed=3)
    results["negatives_steps"] = Trainer(model, data, out_dir=folder / "negatives", seed=0, progress=False,
                                         distributed=context).train(1).step

    # 4. a NaN loss on rank 1 stops both ranks
    model = distributed.prepare_model(_model(PER_PROCESS_BATCH), context)
    data = RankOneShapes("nan", count=8, height=64, width=64, seed=3)
    try:
        Trainer(model, data, out_dir=folder / "nan", seed=0, progress=False, distributed=context).train(1)
        results["nan_error"] = None
    except DistributedError as error:
        results["nan_error"] = str(error)
    torch.save(results, folder / f"rank{rank}.pt")

    # 5. the command line with an exception on rank 1: its exit status becomes this process's
    sys.exit(_cli_with_failing_rank(folder, rank))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two_ranks")
    spawn = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [spawn.Process(target=_worker, args=(rank, 2, port, str(folder))) for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=240)  # a hang fails here, long before any collective's own timeout
    hung = [p.pid for p in processes if p.is_alive()]
    for p in processes:
        if p.is_alive():
            p.kill()
    assert not hung, f"distributed workers hung: {hung}"
    results = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return folder, results, [p.exitcode for p in processes]


def _single_process_reference(folder: Path) -> tuple[dict, dict, list]:
    model = _model(2 * PER_PROCESS_BATCH, torch.float64)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, _train_set(), out_dir=folder, seed=0, progress=False)
    trainer.train(EPOCHS)
    return initial, model.state_dict(), [r["loss"] for r in trainer.state.history if "loss" in r]


# ------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("count, world_size", [(8, 2), (11, 2), (10, 3)])
def test_shards_cover_the_single_process_order(count, world_size):
    single = SeededSampler(range(count), shuffle=True, seed=5)
    shards = [SeededSampler(range(count), shuffle=True, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in range(2):
        for sampler in [single, *shards]:
            sampler.set_epoch(epoch)
        order = [i for i, _ in single]
        parts = [[i for i, e in shard if e == epoch] for shard in shards]
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(shards[0]) == -(-count // world_size)
        # rank r takes positions r, r + W, ... of the order padded with its own start
        padded = (order + order)[: len(parts[0]) * world_size]
        assert all(parts[r] == padded[r::world_size] for r in range(world_size))
        assert sorted(set().union(*parts)) == list(range(count))
        if count % world_size == 0:  # no padding: disjoint shards, and batch j of all ranks = single batch j
            assert sorted(sum(parts, [])) == list(range(count))
            b = 2
            for j in range(len(parts[0]) // b):
                together = sorted(i for p in parts for i in p[j * b:(j + 1) * b])
                assert together == sorted(order[j * b * world_size:(j + 1) * b * world_size])
    first = [i for i, _ in SeededSampler(range(count), shuffle=True, seed=5, rank=0, world_size=world_size)]
    second_sampler = SeededSampler(range(count), shuffle=True, seed=5, rank=0, world_size=world_size)
    second_sampler.set_epoch(1)
    assert first != [i for i, _ in second_sampler]  # reshuffled every epoch


def test_sampler_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        SeededSampler(range(4), shuffle=True, seed=0, rank=2, world_size=2)


def test_single_process_without_torchrun():
    context = distributed.setup(environ={})
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)
    model = torch.nn.Linear(2, 2)
    assert context.wrap(model) is model
    with pytest.raises(ValueError, match="boom"), context.agree("anything"):
        raise ValueError("boom")  # single process: errors pass through unchanged


def test_describe_states_global_batch_and_scaling_rule():
    context = distributed.Distributed(rank=0, world_size=4, backend="nccl", device=torch.device("cpu"))
    text = distributed.describe(context, 2, 0.01)
    assert "4 processes" in text and "global batch of 8" in text and "learning_rate=0.04" in text


def test_mixed_precision_is_refused_on_a_cpu_without_amx(tmp_path, monkeypatch):
    from maskrcnn import cpu

    monkeypatch.setattr(cpu, "has_amx", lambda: False)
    with pytest.raises(ValueError, match="mixed precision for CUDA, or for CPUs with AMX"):
        Trainer(_model(2), _train_set(), out_dir=tmp_path, progress=False, amp=True)


def test_mixed_precision_on_a_cpu_with_amx_trains_in_bfloat16(tmp_path, monkeypatch):
    """bfloat16 autocast runs the convolutions (emulated where the CPU has no AMX: slow, but the same
    arithmetic); weights, optimiser state and losses stay float32, and no gradient scaler is used."""
    from maskrcnn import cpu

    monkeypatch.setattr(cpu, "has_amx", lambda: True)
    model = _model(2)
    trainer = Trainer(model, _train_set(), out_dir=tmp_path, progress=False, amp=True)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    seen = []
    model.mask_head.mask_logits.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    before = model.mask_head.mask_logits.weight.detach().clone()
    state = trainer.train(epochs=1)
    assert state.step == 4 and seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(math.isfinite(r["loss"]) for r in state.history if "loss" in r)
    assert not torch.equal(before, model.mask_head.mask_logits.weight)  # the steps did change the weights


def test_sync_batch_norm_is_refused_on_the_cpu():
    context = distributed.Distributed(rank=0, world_size=2, backend="gloo")
    with pytest.raises(ValueError, match="CUDA only"):
        distributed.prepare_model(_model(2), context, sync_bn=True)


# ------------------------------------------------------------------------------------------ two ranks
def test_two_processes_train_to_the_single_process_weights(two_ranks, tmp_path):
    _, results, _ = two_ranks
    initial, reference, reference_losses = _single_process_reference(tmp_path)
    assert results[0]["context"] == (0, 2, "gloo") and results[1]["context"] == (1, 2, "gloo")
    moved = max(float((reference[k] - initial[k]).abs().max()) for k in reference if reference[k].is_floating_point())
    assert moved > 100 * ATOL  # the comparison below is not vacuous
    for rank in range(2):
        weights = results[rank]["weights"]
        assert set(weights) == set(reference)  # no DDP "module." prefix on the model itself
        assert_same_weights(weights, reference, label=f"rank {rank}")
    # the log holds the global batch's losses: the mean of the two processes' losses is the 2B loss
    np.testing.assert_allclose(results[0]["logged_losses"], reference_losses, rtol=1e-9)
    assert results[1]["logged_losses"] == results[0]["logged_losses"]


def test_only_rank_zero_writes(two_ranks):
    folder, results, _ = two_ranks
    lines = (folder / "equal" / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == EPOCHS * 2  # one record per step, not one per rank and step
    assert sorted(p.name for p in (folder / "equal" / "checkpoints").glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]


def test_sharded_evaluation_equals_single_process(two_ranks):
    _, results, _ = two_ranks
    main = results[0]
    assert len(main["sharded_found"]) == len(main["single_found"]) == 5
    assert sum(len(f) for f in main["single_found"]) > 0  # detections to compare, not empty lists
    for sharded, single in zip(main["sharded_found"], main["single_found"]):
        for field in ("boxes", "labels", "scores", "masks"):
            assert torch.equal(getattr(sharded, field), getattr(single, field))
    assert main["sharded_score"] == main["single_score"]  # exactly, not approximately
    assert results[1]["sharded_score"] == main["single_score"]  # every rank gets rank 0's score


def test_rank_with_only_negatives_trains_without_hang(two_ranks):
    _, results, _ = two_ranks
    assert results[0]["negatives_steps"] == results[1]["negatives_steps"] == 2


def test_nan_loss_on_one_rank_stops_both(two_ranks):
    _, results, _ = two_ranks
    for rank in range(2):
        message = results[rank]["nan_error"]
        assert message is not None
        assert "rank 1 failed: TrainingError: step 1: a loss is not finite" in message
        assert "rank 0 failed" not in message


def test_exception_on_one_rank_stops_every_rank_with_rank_zero_naming_it(two_ranks):
    folder, _, exit_codes = two_ranks
    assert exit_codes == [2, 2]  # both processes fail, with the CLI's error status
    message = (folder / "cli_stderr_0.txt").read_text()
    assert "maskrcnn train: error:" in message
    assert "rank 1 failed: RuntimeError: image" in message and "injected decoder failure" in message
    assert "rank 0 failed" not in message
    # the failure came at rank 1's second batch: one step was done, and no checkpoint written
    assert len((folder / "cli" / "train_log.jsonl").read_text().splitlines()) == 1
    assert not list((folder / "cli" / "checkpoints").glob("epoch_*.pt"))


# ------------------------------------------------------------------------------------------ torchrun
def test_two_machines_with_torchrun_write_one_checkpoint_and_resume_on_one(tmp_path):
    """Two torchrun launches, one a "machine" each (c10d rendezvous on 127.0.0.1), train together; node 0
    runs `-m maskrcnn`, node 1 the `maskrcnn` console script, so both entry points are used. Then one
    process goes on from their checkpoint (written by 2 processes, resumed by 1)."""
    from maskrcnn import cli

    script = shutil.which("maskrcnn")
    if script is None:
        pytest.skip("the maskrcnn console script is not installed")
    out = tmp_path / "run"
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    common = ["train", "--data", "shapes:6:64", "--preset", "demo", "--set", "images_per_batch=1", "--val-fraction", "0.34",
              "--out", str(out), "--no-progress"]
    train = [*common, "--epochs", "1", "--dist-timeout", "120"]
    launchers = []
    for node, program in ((0, ["-m", "maskrcnn"]), (1, ["--no-python", script])):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                   "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   "--rdzv-id", "test", "--local-addr", "127.0.0.1", *program, *train]
        launchers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for launcher in launchers:
        try:
            outputs.append(launcher.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for other in launchers:
                other.kill()
            raise
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(outputs)
    assert "2 processes (gloo on cpu) x 1 images per process = global batch of 2" in "".join(outputs)
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pt")) == ["epoch_0001.pt"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]  # 4 training images / global batch 2, logged once
    assert "val_box_map50" in log[-1]  # sharded evaluation ran
    checkpoint = torch.load(out / "checkpoints" / "epoch_0001.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in checkpoint["model"])

    # written by 2 processes, resumed by 1 (the same format)
    assert cli.main([*common, "--epochs", "2", "--resume"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]  # one process, batch 1: 4 more steps
