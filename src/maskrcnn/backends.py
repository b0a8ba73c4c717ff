"""Inference backends for `maskrcnn predict` and `maskrcnn evaluate`, and `auto`: the fastest correct one here.

Backends (each a predictor with `config`, `class_names` and `predict(images, score_threshold=None)`):
    torch        MaskRCNN.predict                      needs --weights
    onnxruntime  export.OnnxPredictor                  needs --onnx (a file from `maskrcnn export`)
    openvino     export.OpenVinoPredictor, float32     needs --onnx; the openvino extra
    auto         the fastest of those that run here and give PyTorch's detections, measured once per machine
                 and model, the choice cached in a small JSON file

`auto` exports the weights to ONNX itself (into the cache folder) when no --onnx is given, times each backend
on one probe image the size the config resizes to (one warm-up call each, then alternating rounds, the median),
checks each backend's detections against PyTorch's with the parity tests' tolerances, and keeps the fastest
that agrees. The measurement is keyed by the CPU (model name and instruction-set flags), the thread count, the
library versions, and the model files' contents, so a new machine, a new version or new weights measure again.
Cache folder: $MASKRCNN_CACHE_DIR, else $XDG_CACHE_HOME/maskrcnn, else ~/.cache/maskrcnn.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from .errors import ConfigError, MaskRCNNError
from .files import atomic_write_json

BACKENDS = ("torch", "onnxruntime", "openvino")
CHOICES = BACKENDS + ("auto",)
CACHE_FILE = "backends.json"
PROBE_ROUNDS = 3


def cache_dir() -> Path:
    """Where `auto` keeps its measurements and the ONNX files it exports."""
    if os.environ.get("MASKRCNN_CACHE_DIR"):
        return Path(os.environ["MASKRCNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maskrcnn"


def cpu_description() -> tuple[str, str]:
    """(model name, the instruction-set flags that pick kernels: avx2, avx512*, amx*) of this CPU."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    kept = sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx", "fma", "avx_vnni")))
    return name, " ".join(kept)


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _versions() -> dict:
    versions = {"torch": torch.__version__}
    for module in ("onnxruntime", "openvino"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return versions


def build(backend: str, *, weights=None, onnx=None, threads: int | None = None):
    """The predictor of one backend (not auto); a ConfigError names the missing file option."""
    if backend == "torch":
        if not weights:
            raise ConfigError("--weights is required: a model .pt (from train or convert), a matterport .h5, a "
                              "torchvision state dict .pth, or torchvision-coco")
        from .saving import load_weights

        return load_weights(weights)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: choose one of {', '.join(CHOICES)}")
    if not onnx:
        raise ConfigError(f"--backend {backend} needs --onnx model.onnx (write one with maskrcnn export)")
    if backend == "onnxruntime":
        from .export import OnnxPredictor

        return OnnxPredictor(onnx, threads=threads)
    from .openvino_backend import OpenVinoPredictor

    return OpenVinoPredictor(onnx, threads=threads)


def same_detections(expected, got) -> bool:
    """The parity tests' tolerances: count, labels, boxes within 0.01 px, scores within 1e-4, mask IoU >= 0.99
    (or at most one pixel differing)."""
    if len(got) != len(expected) or not torch.equal(got.labels, expected.labels):
        return False
    if not len(got):
        return True
    if (got.boxes - expected.boxes).abs().max().item() > 0.01 or (got.scores - expected.scores).abs().max().item() > 1e-4:
        return False
    inter = (got.masks & expected.masks).flatten(1).sum(1).double()
    union = (got.masks | expected.masks).flatten(1).sum(1).double()
    iou = torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))
    return bool(((iou >= 0.99) | ((got.masks ^ expected.masks).flatten(1).sum(1) <= 1)).all())


def probe_image(config) -> torch.Tensor:
    """(3, H, W) in [0, 1]: a landscape image the size the config resizes to (4:3), fixed seed."""
    height = max(config.image_min_dim, 64)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, height, height * 4 // 3, generator=generator)


def measure(predictors: dict, rounds: int = PROBE_ROUNDS) -> tuple[dict, dict]:
    """(median seconds per image, agrees with the reference) for each predictor on the config's probe image;
    the reference is "torch" when present, else the first. A backend that raises is left out of both."""
    reference_name = "torch" if "torch" in predictors else next(iter(predictors))
    image = probe_image(predictors[reference_name].config)
    expected = predictors[reference_name].predict([image])[0]  # also torch's warm-up
    agrees, times = {reference_name: True}, {}
    for name, predictor in predictors.items():
        if name != reference_name:
            try:
                agrees[name] = same_detections(expected, predictor.predict([image])[0])  # also the warm-up
            except Exception:  # noqa: BLE001 a backend that cannot run this graph is simply not chosen
                continue
        times[name] = []
    for _ in range(rounds):
        for name in times:  # A B C A B C ...: a change in the machine's load hits all alike
            started = time.perf_counter()
            predictors[name].predict([image])
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}, agrees


def choose(weights=None, onnx=None, *, threads: int | None = None, report=print):
    """The fastest backend that gives PyTorch's detections for this model on this machine, measured the first
    time and then read from the cache; says which and why through `report`."""
    if not weights and not onnx:
        raise ConfigError("--backend auto needs --weights (and optionally --onnx)")
    folder = cache_dir()
    cpu, flags = cpu_description()
    threads = threads or torch.get_num_threads()
    models = {"weights": file_digest(weights) if weights and Path(weights).is_file() else weights,
              "onnx": file_digest(onnx) if onnx else None}
    key = hashlib.sha256(json.dumps([cpu, flags, threads, _versions(), models], sort_keys=True).encode()).hexdigest()[:24]
    cache = folder / CACHE_FILE
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        entries = {}
    entry = entries.get(key)
    if entry is None or entry.get("backend") not in BACKENDS or (entry.get("onnx") and not Path(entry["onnx"]).is_file()):
        entry = _measure_backends(weights, onnx, threads, folder, models, report)
        entry.update(cpu=cpu, flags=flags, threads=threads, versions=_versions(),
                     measured=datetime.datetime.now().isoformat(timespec="seconds"))
        entries[key] = entry
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, entries, indent=1)
        how = f"measured now, cached in {cache}"
    else:
        how = f"measured {entry['measured']}, cached in {cache}"
    seconds = ", ".join(f"{name} {value:.3f} s" + ("" if entry["agrees"].get(name) else " (differs, not used)")
                        for name, value in entry["seconds"].items())
    report(f"backend auto: {entry['backend']} ({seconds} per image on {cpu}, {threads} threads; {how})")
    return build(entry["backend"], weights=weights, onnx=entry.get("onnx") or onnx, threads=threads)


def _measure_backends(weights, onnx, threads, folder, models, report) -> dict:
    predictors = {}
    if weights:
        predictors["torch"] = build("torch", weights=weights)
        if not onnx:
            from .export import to_onnx

            onnx = folder / "onnx" / f"{models['weights']}.onnx"
            if not onnx.is_file():
                report(f"backend auto: exporting {weights} to {onnx} to measure the ONNX backends")
                to_onnx(predictors["torch"], onnx)
    for name in ("onnxruntime", "openvino"):
        try:
            predictors[name] = build(name, onnx=onnx, threads=threads)
        except (MaskRCNNError, ImportError) as error:
            report(f"backend auto: {name} not available ({error})")
    report(f"backend auto: measuring {', '.join(predictors)} ({PROBE_ROUNDS} rounds on one image; once per machine and model)")
    seconds, agrees = measure(predictors)
    usable = [name for name in seconds if agrees.get(name)]
    return {"backend": min(usable, key=seconds.__getitem__), "seconds": seconds, "agrees": agrees,
            "onnx": str(onnx) if onnx else None}
