"""Tests for maskrcnn.checkpoint: atomic writes, safe loading, RNG state, and crash safety under SIGKILL."""
from __future__ import annotations

import errno
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskrcnn import checkpoint
from maskrcnn.checkpoint import (
    CheckpointManager,
    atomic_save,
    capture_rng_state,
    load_file,
    restore_rng_state,
)
from maskrcnn.errors import CheckpointError

SRC = Path(__file__).resolve().parents[1] / "src"


def leftover_temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def assert_same(a, b) -> None:
    """Deep equality for checkpoint contents (tensors compared exactly, dtype included)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def draw_all(n: int = 5) -> list:
    """Numbers from every generator the RNG helpers cover (gauss/randn also exercise the cached-gaussian slots)."""
    return [
        [random.random() for _ in range(n)],
        random.gauss(0.0, 1.0),
        np.random.rand(n).tolist(),
        float(np.random.randn()),
        torch.rand(n).tolist(),
        torch.randint(0, 1000, (n,)).tolist(),
    ]


# ------------------------------------------------------------------------------------------------------------
# Round trip
# ------------------------------------------------------------------------------------------------------------
def test_round_trip_of_a_training_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=[3, 5], gamma=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimiser.step()  # creates the momentum buffers
    scheduler.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": 1234,
        "epoch": 7,
        "best_ap": 0.375,
        "config": {"backbone": "resnet50", "num_classes": 4, "anchor_scales": [32, 64, 128], "mean": (0.5, 0.4)},
        "class_names": ["BG", "square", "circle", "triangle"],
        "nested": {"a": {"b": {"c": torch.arange(6, dtype=torch.int64).reshape(2, 3)}}, "none": None},
        "rng": capture_rng_state(),
    }
    path = tmp_path / "state.pt"
    atomic_save(state, path)
    loaded = load_file(path)
    assert_same(state, loaded)
    assert leftover_temp_files(tmp_path) == []

    # The loaded states work where they came from.
    optimiser.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(loaded["scheduler"])
    assert scheduler.get_last_lr() == [0.02]


def test_rng_state_restores_every_generator():
    state = capture_rng_state()
    first = draw_all()
    second = draw_all()
    assert first != second  # otherwise the comparison below would prove nothing
    restore_rng_state(state)
    assert draw_all() == first


def test_rng_state_survives_a_save_load_round_trip(tmp_path):
    random.gauss(0.0, 1.0)  # leaves a cached gaussian in both Python and numpy
    np.random.randn()
    state = capture_rng_state()
    expected = draw_all()
    atomic_save({"rng": state}, tmp_path / "rng.pt")
    draw_all()  # move every generator on
    restore_rng_state(load_file(tmp_path / "rng.pt")["rng"])
    assert draw_all() == expected


def test_restore_rng_state_rejects_incomplete_state():
    state = capture_rng_state()
    del state["numpy"]
    with pytest.raises(CheckpointError, match="numpy"):
        restore_rng_state(state)


# ------------------------------------------------------------------------------------------------------------
# Damaged files
# ------------------------------------------------------------------------------------------------------------
def write_good(path: Path) -> bytes:
    atomic_save({"w": torch.arange(4096, dtype=torch.float32), "epoch": 1}, path)
    return path.read_bytes()


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_file(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(info.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as info:
        load_file(path)
    assert str(path) in str(info.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.pt"
    data = write_good(path)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        load_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("where", ["start", "end"])
def test_corrupted_file(tmp_path, where):
    # Flip bytes in the zip's local header (start) or its central directory (end): both are structure torch
    # must read, so the damage is always detected (flips inside raw tensor bytes would go unnoticed).
    path = tmp_path / "flipped.pt"
    data = bytearray(write_good(path))
    positions = range(0, 32) if where == "start" else range(len(data) - 40, len(data))
    for i in positions:
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_file(path)
    assert str(path) in str(info.value)


def test_non_dict_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_file(path)


class _OpenPayload:
    """Unpickling this creates (truncates) a file: the kind of side effect a weights-only load must refuse."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class _SystemPayload:
    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


@pytest.mark.parametrize("payload", [_OpenPayload, _SystemPayload])
@pytest.mark.parametrize("container", ["plain_pickle", "torch_zip"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, container):
    if payload is _SystemPayload and os.name != "posix":
        pytest.skip("the os.system payload uses touch")
    # Control: the payload really does create its file when unpickled without protection.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(payload(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    if container == "plain_pickle":
        path.write_bytes(pickle.dumps({"weights": payload(marker)}, protocol=2))
    else:
        torch.save({"weights": payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        load_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "not plain tensors and values" in message
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------------
# A failed save leaves the existing file alone
# ------------------------------------------------------------------------------------------------------------
USER_BYTES = b"the user's own file, which a failed save must not touch\n"


def test_refused_values_leave_existing_file_unchanged(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(USER_BYTES)
    state = {"model": {"w": torch.ones(2)}, "metrics": {"loss": np.float64(0.5)}}
    with pytest.raises(CheckpointError) as info:
        atomic_save(state, target)
    message = str(info.value)
    assert str(target) in message
    assert "['metrics']['loss']" in message  # points at the numpy scalar
    assert target.read_bytes() == USER_BYTES
    assert leftover_temp_files(tmp_path) == []


def test_unpicklable_state_leaves_existing_file_unchanged(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(USER_BYTES)
    with pytest.raises(CheckpointError, match="cannot be pickled"):
        atomic_save({"schedule": lambda epoch: 0.1 * epoch}, target)
    assert target.read_bytes() == USER_BYTES
    assert leftover_temp_files(tmp_path) == []


def test_disk_full_leaves_existing_file_unchanged(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(USER_BYTES)

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left") as info:
        atomic_save({"w": torch.ones(3)}, target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == USER_BYTES
    assert leftover_temp_files(tmp_path) == []


def test_failed_rename_leaves_existing_file_unchanged(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(USER_BYTES)

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(checkpoint.os, "replace", refuse)
    with pytest.raises(CheckpointError, match="Permission denied"):
        atomic_save({"w": torch.ones(3)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == USER_BYTES
    assert leftover_temp_files(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------
# CheckpointManager
# ------------------------------------------------------------------------------------------------------------
def test_manager_save_latest_and_pointer(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    assert manager.latest() is None
    assert manager.load_latest() is None
    assert manager.list_checkpoints() == []
    for epoch in (1, 2, 3):
        path = manager.save({"epoch": epoch, "w": torch.full((5,), float(epoch))}, epoch)
        assert path == tmp_path / "run" / f"epoch_{epoch:04d}.pt"
    pointer = json.loads((tmp_path / "run" / "last.json").read_text())
    assert pointer["path"] == "epoch_0003.pt" and pointer["epoch"] == 3
    assert pointer["bytes"] == (tmp_path / "run" / "epoch_0003.pt").stat().st_size
    assert manager.latest() == tmp_path / "run" / "epoch_0003.pt"
    assert [p.name for p in manager.list_checkpoints()] == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    assert_same(manager.load_latest(), {"epoch": 3, "w": torch.full((5,), 3.0)})
    assert leftover_temp_files(tmp_path / "run") == []


def test_manager_pointer_is_the_source_of_truth_and_falls_back_safely(tmp_path):
    manager = CheckpointManager(tmp_path)
    for epoch in (1, 2, 3):
        manager.save({"epoch": epoch}, epoch)
    # Resumed from epoch 1 and saved it again: last.json names epoch 1 although epoch 3 is newer.
    manager.save({"epoch": 1, "again": True}, 1)
    assert manager.latest() == tmp_path / "epoch_0001.pt"
    # Leftovers from a killed writer and unrelated files are never taken for checkpoints.
    (tmp_path / ".epoch_0009.pt.tmp-123-abcd").write_bytes(b"partial")
    (tmp_path / "epoch_0010.pt.bak").write_bytes(b"x")
    assert [p.name for p in manager.list_checkpoints()] == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    assert manager.latest() == tmp_path / "epoch_0001.pt"
    # Unreadable pointer, or one leading out of the folder: fall back to the newest complete file.
    (tmp_path / "last.json").write_text("{not json")
    assert manager.latest() == tmp_path / "epoch_0003.pt"
    (tmp_path / "last.json").write_text(json.dumps({"path": "../epoch_0001.pt", "epoch": 1}))
    assert manager.latest() == tmp_path / "epoch_0003.pt"
    (tmp_path / "last.json").unlink()
    assert manager.latest() == tmp_path / "epoch_0003.pt"


def test_manager_prunes_but_keeps_the_pointer_target(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for epoch in (1, 2, 3, 4):
        manager.save({"epoch": epoch}, epoch)
    assert [p.name for p in manager.list_checkpoints()] == ["epoch_0003.pt", "epoch_0004.pt"]

    manager = CheckpointManager(tmp_path, keep=1)
    manager.save({"epoch": 2}, 2)  # an older epoch saved again: it is what last.json names, so it stays
    assert [p.name for p in manager.list_checkpoints()] == ["epoch_0002.pt", "epoch_0004.pt"]
    assert manager.latest() == tmp_path / "epoch_0002.pt"

    with pytest.raises(ValueError):
        CheckpointManager(tmp_path, keep=0)


def test_manager_error_points_to_previous_good_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    for epoch in (1, 2, 3):
        manager.save({"epoch": epoch, "w": torch.arange(1000)}, epoch)
    data = (tmp_path / "epoch_0003.pt").read_bytes()
    (tmp_path / "epoch_0003.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        manager.load_latest()
    message = str(info.value)
    assert str(tmp_path / "epoch_0003.pt") in message
    assert f"previous good checkpoint is '{tmp_path / 'epoch_0002.pt'}'" in message
    assert "epoch_0001.pt, epoch_0002.pt, epoch_0003.pt" in message

    # Epoch 2 damaged too (zero bytes): the hint skips it and names epoch 1.
    (tmp_path / "epoch_0002.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        manager.load_latest()
    assert f"previous good checkpoint is '{tmp_path / 'epoch_0001.pt'}'" in str(info.value)

    # Following the advice works: delete the damaged file and load_latest falls back.
    (tmp_path / "epoch_0003.pt").unlink()
    (tmp_path / "epoch_0002.pt").unlink()
    assert manager.load_latest()["epoch"] == 1


# ------------------------------------------------------------------------------------------------------------
# SIGKILL while writing
# ------------------------------------------------------------------------------------------------------------
# A driver process imports torch once and forks one writer per scenario (importing torch per scenario would
# cost seconds each). Each writer saves a small epoch-1 checkpoint, then saves a 64 MB epoch-2 checkpoint.
# Deterministic scenarios patch os.replace / os.fsync inside the writer so it SIGKILLs itself at an exact
# point; "loop" scenarios save epoch 2 over and over until the driver SIGKILLs the writer after a delay.
DRIVER = r"""
import json, os, signal, sys, time
import torch
from maskrcnn.checkpoint import CheckpointManager

def small_state():
    return {"epoch": 1, "w": torch.arange(1000, dtype=torch.float32), "complete": True}

def big_state():  # 8 tensors x 8 MB: a kill can land between tensor records, not only at the ends
    return {"epoch": 2, "w": {f"w{i}": torch.full((2_000_000,), float(i)) for i in range(8)}, "complete": True}

real_replace, real_fsync = os.replace, os.fsync

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def install(mode):
    def replace(src, dst):
        name = os.path.basename(dst)
        if (mode, name) in {("before_replace", "epoch_0002.pt"), ("pointer_before_replace", "last.json")}:
            die()
        real_replace(src, dst)
        if (mode, name) in {("after_replace", "epoch_0002.pt"), ("after_pointer", "last.json")}:
            die()

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if (mode == "checkpoint_partial" and name.startswith(".epoch_0002.pt.tmp-")) or (
                mode == "pointer_partial" and name.startswith(".last.json.tmp-")):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)  # as if only half the data had been written
            die()
        real_fsync(fd)

    os.replace, os.fsync = replace, fsync

def writer(mode, directory, ready):
    manager = CheckpointManager(directory, keep=1 if mode == "after_pointer" else None)
    manager.save(small_state(), 1)
    state = big_state()
    if mode != "loop":
        install(mode)
    os.write(ready, b"x")
    while True:
        manager.save(state, 2)
        if mode != "loop":
            os._exit(0)  # the kill point was never reached

for spec in sys.argv[1:]:
    mode, directory, delay = spec.split(",")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            writer(mode, directory, w)
        finally:
            os._exit(3)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    if mode == "loop":
        time.sleep(float(delay))
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    print(json.dumps({"dir": directory, "killed": killed, "status": status}), flush=True)
"""

DETERMINISTIC = [
    "checkpoint_partial",  # killed while the checkpoint's temporary file was half written
    "before_replace",  # temporary checkpoint complete, not yet renamed
    "after_replace",  # checkpoint renamed into place, pointer not yet updated
    "pointer_partial",  # killed while the pointer's temporary file was half written
    "pointer_before_replace",  # pointer's temporary file complete, not yet renamed
    "after_pointer",  # pointer updated, old checkpoints not yet pruned
]
LOOP_DELAYS = [0.0, 0.1, 0.25, 0.5, 0.9]


def expected_state(epoch: int) -> dict:
    if epoch == 1:
        return {"epoch": 1, "w": torch.arange(1000, dtype=torch.float32), "complete": True}
    return {"epoch": 2, "w": {f"w{i}": torch.full((2_000_000,), float(i)) for i in range(8)}, "complete": True}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    if sys.platform != "linux":
        pytest.skip("uses fork, SIGKILL and /proc/self/fd")
    root = tmp_path_factory.mktemp("killed")
    specs = {}
    for mode in DETERMINISTIC:
        specs[mode] = (mode, root / mode, 0.0)
    for delay in LOOP_DELAYS:
        specs[f"loop_{delay}"] = ("loop", root / f"loop_{delay}", delay)
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    args = [f"{mode},{directory},{delay}" for mode, directory, delay in specs.values()]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    results = {Path(r["dir"]): r for r in map(json.loads, done.stdout.splitlines())}
    return {name: (directory, results[directory]) for name, (_, directory, _) in specs.items()}


def check_consistent(directory: Path) -> dict:
    """What must hold after any kill; returns the pointer."""
    # The previous checkpoint still loads, complete.
    assert_same(load_file(directory / "epoch_0001.pt"), expected_state(1))
    # last.json names a file that exists and is complete.
    pointer = json.loads((directory / "last.json").read_text())
    named = directory / pointer["path"]
    assert named.is_file()
    assert pointer["bytes"] == named.stat().st_size
    manager = CheckpointManager(directory)
    assert manager.latest() == named
    assert_same(manager.load_latest(), expected_state(pointer["epoch"]))
    # Any epoch_0002.pt present got there by an atomic rename, so it is complete too.
    if (directory / "epoch_0002.pt").exists():
        assert_same(load_file(directory / "epoch_0002.pt"), expected_state(2))
    # Temporary leftovers are not checkpoints.
    assert all(not p.name.startswith(".") for p in manager.list_checkpoints())
    # Training can go on in the same folder despite leftovers.
    manager.save({"epoch": 3}, 3)
    assert manager.load_latest() == {"epoch": 3}
    return pointer


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_sigkill_at_exact_points(killed_runs, mode):
    directory, result = killed_runs[mode]
    assert result["killed"], f"the writer was not killed at '{mode}' (wait status {result['status']})"
    temp_before = leftover_temp_files(directory)
    has_epoch_2 = (directory / "epoch_0002.pt").exists()
    pointer = check_consistent(directory)

    if mode in ("checkpoint_partial", "before_replace"):
        assert pointer["epoch"] == 1 and not has_epoch_2
        assert any(name.startswith(".epoch_0002.pt.tmp-") for name in temp_before)
    elif mode in ("after_replace", "pointer_partial", "pointer_before_replace"):
        assert pointer["epoch"] == 1 and has_epoch_2
        if mode != "after_replace":
            assert any(name.startswith(".last.json.tmp-") for name in temp_before)
    else:  # after_pointer: the new checkpoint is named, the old one not yet pruned
        assert pointer["epoch"] == 2 and has_epoch_2
        assert (directory / "epoch_0001.pt").exists()


@pytest.mark.parametrize("delay", LOOP_DELAYS)
def test_sigkill_at_random_delays(killed_runs, delay):
    directory, result = killed_runs[f"loop_{delay}"]
    assert result["killed"]
    pointer = check_consistent(directory)
    assert pointer["epoch"] in (1, 2)


@pytest.mark.parametrize("content, kind", [(b"learning rate 0.01\nepochs 12\n", "a text file starting with 'learning rate 0.01'"),
                                           (b"\x89HDF\r\n\x1a\n" + bytes(40), "an HDF5 file")])
def test_a_file_that_is_no_torch_file_says_what_it_is(tmp_path, content, kind):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_file(path)
    message = str(info.value)
    assert str(path) in message and "not a checkpoint" in message and kind in message
    assert "code/objects" not in message
