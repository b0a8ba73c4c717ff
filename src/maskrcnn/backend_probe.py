"""One backend measured in a process of its own, for `--backend auto` (backends.py).

Why a process each: onnxruntime (1.32) and OpenVINO (2026.4) loaded into one process corrupted its heap on an
AMD EPYC, and the process crashed later at a random place. A child builds one backend only, so two backends never
share a process, and a backend that crashes takes down its child and nothing else.

The parent runs `python -m maskrcnn.backend_probe REQUEST.json`, one backend after another. The child takes the
parent's thread count (torch's intra-op threads; the ONNX backends are built with the same number) and its
denormal setting (cpu.py), builds the backend with the builder the request names ("module:function", called as
`builder(name, weights=, onnx=, threads=)`), runs it once on the probe image as a warm-up (first-call allocations,
kernel selection, OpenVINO compiling for the image's shape), then `rounds` timed runs, and writes the timings and
the detections as numpy arrays to the request's result file (.npz). A child that raises exits with 1 and the
reason as the last line of its stderr; one that crashes (a segfault, an abort) ends with a negative exit code.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .structures import Detections

CHILD_TIMEOUT = 900  # seconds; a child still running then is stopped and its backend not used


@dataclass
class Measurement:
    """What one child found: the seconds of each timed run on the probe image, and the detections there."""

    seconds: list[float]
    detections: Detections


class BackendUnusable(Exception):
    """A backend whose child crashed, raised or gave no result; the message says which and why."""


def builder_path(builder) -> str:
    """"module:function" of a module-level function, which the child imports by that name."""
    module, name = getattr(builder, "__module__", None), getattr(builder, "__qualname__", "")
    if not module or module == "__main__" or "." in name or "<" in name:
        raise ValueError(f"a backend builder must be a module-level function of an importable module, got {builder!r}")
    return f"{module}:{name}"


def measure_in_child(backend: str, builder, *, weights, onnx, threads: int, rounds: int,
                     timeout: float = CHILD_TIMEOUT) -> Measurement:
    """Build and time `backend` in a new Python process (see the module docstring); BackendUnusable if the child
    crashes, raises or runs past `timeout` seconds."""
    from .cpu import all_threads_flush_denormals

    with tempfile.TemporaryDirectory(prefix="maskrcnn-probe-") as folder:
        request, result = Path(folder) / "request.json", Path(folder) / "result.npz"
        request.write_text(json.dumps({
            "backend": backend, "builder": builder_path(builder), "threads": threads, "rounds": rounds,
            "weights": str(weights) if weights else None, "onnx": str(onnx) if onnx else None,
            "flush_denormals": all_threads_flush_denormals(), "result": str(result),
        }))
        # The child imports what this process can: the same sys.path (a builder defined beside the caller).
        path = os.pathsep.join(entry for entry in sys.path if entry)
        try:
            finished = subprocess.run([sys.executable, "-m", "maskrcnn.backend_probe", str(request)],
                                      env={**os.environ, "PYTHONPATH": path}, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BackendUnusable(f"no result within {timeout:.0f} s") from None
        lines = [line.strip() for line in finished.stderr.splitlines() if line.strip()]
        if finished.returncode < 0:
            # faulthandler's stack, most recent call first: its first frame is where the child crashed
            where = next((line for line in lines if line.startswith("File ")), "no Python frame")
            raise BackendUnusable(f"its process crashed with {_signal_name(-finished.returncode)} ({where})")
        if finished.returncode != 0 or not result.is_file():
            raise BackendUnusable(lines[-1] if lines else f"its process ended with exit code {finished.returncode}")
        with np.load(result) as arrays:
            return Measurement(arrays["seconds"].tolist(), Detections(
                torch.from_numpy(arrays["boxes"]), torch.from_numpy(arrays["labels"]),
                torch.from_numpy(arrays["scores"]), torch.from_numpy(arrays["masks"])))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def probe_image(config) -> torch.Tensor:
    """(3, H, W) in [0, 1]: a landscape image the size the config resizes to (4:3), fixed seed."""
    height = max(config.image_min_dim, 64)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, height, height * 4 // 3, generator=generator)


def _child(request_file: str) -> None:
    """The child's work: build one backend, warm it up, time it, write the result file."""
    import faulthandler

    from .cpu import flush_denormals

    faulthandler.enable()  # a crash prints the Python stack to stderr, which the parent reports the end of
    request = json.loads(Path(request_file).read_text())
    if request["flush_denormals"]:
        flush_denormals()  # before any parallel torch operation, as the maskrcnn command does
    torch.set_num_threads(request["threads"])
    module, name = request["builder"].split(":")
    predictor = getattr(importlib.import_module(module), name)(
        request["backend"], weights=request["weights"], onnx=request["onnx"], threads=request["threads"])
    image = probe_image(predictor.config)
    found = predictor.predict([image])[0]  # the warm-up, and the detections the parent compares
    seconds = []
    for _ in range(request["rounds"]):
        started = time.perf_counter()
        predictor.predict([image])
        seconds.append(time.perf_counter() - started)
    masks = found.full_masks() if found.is_compact else found.masks
    np.savez(request["result"], seconds=np.asarray(seconds), boxes=found.boxes.numpy(), labels=found.labels.numpy(),
             scores=found.scores.numpy(), masks=masks.numpy())


if __name__ == "__main__":
    try:
        _child(sys.argv[1])
    except Exception as error:  # noqa: BLE001 any failure makes this backend unusable; the parent reports the reason
        print(f"{type(error).__name__}: {error}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
