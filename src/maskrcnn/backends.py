"""Inference backends for `maskrcnn predict`, `maskrcnn evaluate` and `maskrcnn serve`, and `auto`: the fastest
correct one here.

Backends (each a predictor with `config`, `class_names` and `predict(images, score_threshold=None)`):
    torch        MaskRCNN.predict                      needs --weights
    onnxruntime  export.OnnxPredictor                  needs --onnx (a file from `maskrcnn export`)
    openvino     export.OpenVinoPredictor              needs --onnx; the openvino extra
    auto         the fastest of those that run here and give PyTorch's detections, measured once per machine
                 and model, the choice cached in a small JSON file
Precision (`--precision`): f32, or bf16 for torch (bfloat16.Bfloat16Predictor) and openvino, on CPUs with
bfloat16 instructions; onnxruntime and auto run float32 only.

`auto` exports the weights to ONNX itself (into the cache folder) when no --onnx is given, then measures each
backend in a process of its own (backend_probe.py): onnxruntime and OpenVINO loaded into one process corrupted
its heap on an AMD EPYC, so no two backends share one, and a backend whose process crashes or raises is recorded
as not usable here, with the reason, instead of taking the caller down. The processes run one after another with
the same thread count; each times its backend on one probe image the size the config resizes to, after one
warm-up call, over PROBE_ROUNDS runs, and the median counts. Rounds cannot alternate between backends across
processes as they could in one, so a change in the machine's load while one backend runs can favour another;
the median keeps a single disturbed run from deciding. Each backend's detections come back to this process,
which checks them against PyTorch's with the parity tests' tolerances, keeps the fastest that agrees, and builds
that one backend only. The measurement is keyed by the CPU (model name and instruction-set flags), the thread
count, the library versions, and the model files' contents, so a new machine, a new version or new weights
measure again. Cache folder: $MASKRCNN_CACHE_DIR, else $XDG_CACHE_HOME/maskrcnn, else ~/.cache/maskrcnn.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import statistics
from importlib import metadata
from pathlib import Path

import torch

from .errors import ConfigError, MaskRCNNError
from .files import atomic_write_json

BACKENDS = ("torch", "onnxruntime", "openvino")
CHOICES = BACKENDS + ("auto",)
PRECISIONS = ("f32", "bf16")
CACHE_FILE = "backends.json"
PROBE_ROUNDS = 5  # timed runs of each backend after its warm-up


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
    """The backends' library versions, read from the installed packages' metadata: importing onnxruntime and
    openvino here would put both into this process."""
    versions, distributions = {"torch": torch.__version__}, metadata.packages_distributions()
    for module in ("onnxruntime", "openvino"):
        names = distributions.get(module, [])  # the import name's distribution: onnxruntime-gpu installs onnxruntime
        versions[module] = metadata.version(names[0]) if names else None
    return versions


def build(backend: str, *, weights=None, onnx=None, threads: int | None = None, precision: str = "f32"):
    """The predictor of one backend (not auto) in `precision`; a ConfigError names the missing file option."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if backend == "onnxruntime" and precision != "f32":
        raise ConfigError(f"--backend onnxruntime runs float32 only; precision {precision} is for --backend torch or openvino")
    if backend == "torch":
        if not weights:
            raise ConfigError("--weights is required: a model .pt (from train or convert), a matterport .h5, a "
                              "torchvision state dict .pth, or torchvision-coco")
        from .saving import load_weights

        if precision == "bf16":
            from .bfloat16 import Bfloat16Predictor

            return Bfloat16Predictor(load_weights(weights))
        return load_weights(weights)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: choose one of {', '.join(CHOICES)}")
    if not onnx:
        raise ConfigError(f"--backend {backend} needs --onnx model.onnx (write one with maskrcnn export)")
    if backend == "onnxruntime":
        from .export import OnnxPredictor

        return OnnxPredictor(onnx, threads=threads)
    from .openvino_backend import OpenVinoPredictor

    return OpenVinoPredictor(onnx, threads=threads, precision=precision)


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


def pick(measured: dict, unusable: dict[str, str]) -> dict:
    """The cache entry for these measurements (backend_probe.Measurement by backend name; the reasons of those
    that did not run): the fastest backend whose detections agree with the reference, which is "torch" when it
    ran, else the first that ran."""
    if not measured:
        reasons = "; ".join(f"{name}: {why}" for name, why in unusable.items())
        raise MaskRCNNError(f"backend auto: no backend runs here: {reasons}")
    reference = measured["torch" if "torch" in measured else next(iter(measured))].detections
    seconds = {name: statistics.median(found.seconds) for name, found in measured.items()}
    agrees = {name: same_detections(reference, found.detections) for name, found in measured.items()}
    return {"backend": min((name for name in measured if agrees[name]), key=seconds.__getitem__),
            "seconds": seconds, "agrees": agrees, "unusable": dict(unusable)}


def load(backend: str, *, weights=None, onnx=None, threads: int | None = None, precision: str = "f32",
         report=print) -> tuple[str, object]:
    """(the backend's name, its predictor): the named backend in `precision`, or for "auto" the one `choose`
    picks here (float32 only: it keeps a backend only if its detections are PyTorch's float32 ones)."""
    if backend == "auto":
        if precision != "f32":
            raise ConfigError(f"--backend auto picks among backends that give PyTorch's float32 detections; for "
                              f"precision {precision} name the backend: --backend torch or openvino")
        return choose(weights, onnx, threads=threads, report=report)
    return backend, build(backend, weights=weights, onnx=onnx, threads=threads, precision=precision)


def choose(weights=None, onnx=None, *, threads: int | None = None, report=print, candidates: dict | None = None):
    """(name, predictor) of the fastest backend that gives PyTorch's detections for this model on this machine,
    measured the first time and then read from the cache; says which and why through `report`.

    candidates: the backends to measure, name -> builder, a module-level function called as
        `builder(name, weights=, onnx=, threads=)` in each backend's process and again here for the one chosen
        (default: `build` for each of BACKENDS).
    """
    if not weights and not onnx:
        raise ConfigError("--backend auto needs --weights (and optionally --onnx)")
    candidates = candidates or {name: build for name in BACKENDS}
    folder = cache_dir()
    cpu, flags = cpu_description()
    threads, versions = threads or torch.get_num_threads(), _versions()
    models = {"weights": file_digest(weights) if weights and Path(weights).is_file() else weights,
              "onnx": file_digest(onnx) if onnx else None}
    key = hashlib.sha256(json.dumps([cpu, flags, threads, versions, models], sort_keys=True).encode()).hexdigest()[:24]
    cache = folder / CACHE_FILE
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        entries = {}
    entry = entries.get(key)
    if entry is None or entry.get("backend") not in candidates or (entry.get("onnx") and not Path(entry["onnx"]).is_file()):
        entry = _measure_backends(weights, onnx, threads, folder, models, candidates, report)
        entry.update(cpu=cpu, flags=flags, threads=threads, versions=versions,
                     measured=datetime.datetime.now().isoformat(timespec="seconds"))
        entries[key] = entry
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, entries, indent=1)
        how = f"measured now, cached in {cache}"
    else:
        how = f"measured {entry['measured']}, cached in {cache}"
    results = [f"{name} {value:.3f}" + ("" if entry["agrees"].get(name) else " (differs, not used)")
               for name, value in entry["seconds"].items()]
    results += [f"{name} not usable here ({why})" for name, why in entry.get("unusable", {}).items()]
    threads_text = f"{threads} thread{'' if threads == 1 else 's'}"
    report(f"backend auto: {entry['backend']} (seconds per image on {cpu}, {threads_text}: {', '.join(results)}; {how})")
    name = entry["backend"]
    return name, candidates[name](name, weights=weights, onnx=entry.get("onnx") or onnx, threads=threads)


def _measure_backends(weights, onnx, threads, folder, models, candidates, report) -> dict:
    """Each candidate measured in its own process, one after another (backend_probe.py); the entry `pick` makes."""
    from .backend_probe import BackendUnusable, measure_in_child

    names = [name for name in candidates if weights or name != "torch"]
    measured, unusable = {}, {}
    if not onnx and any(name != "torch" for name in names):
        from .export import to_onnx

        onnx = folder / "onnx" / f"{models['weights']}.onnx"
        if not onnx.is_file():
            report(f"backend auto: exporting {weights} to {onnx} to measure the ONNX backends")
            try:
                to_onnx(build("torch", weights=weights), onnx)
            except ImportError as error:  # the onnx extra is missing: PyTorch alone is measured
                unusable = {name: f"no ONNX file: {error}" for name in names if name != "torch"}
                names, onnx = [name for name in names if name == "torch"], None
    report(f"backend auto: measuring {', '.join(names)}, each in a process of its own (a warm-up, then "
           f"{PROBE_ROUNDS} timed runs on one image; once per machine and model)")
    for name in names:
        try:
            measured[name] = measure_in_child(name, candidates[name], weights=weights, onnx=onnx, threads=threads,
                                              rounds=PROBE_ROUNDS)
        except BackendUnusable as error:
            unusable[name] = str(error)
            report(f"backend auto: {name} not usable here ({error})")
    return {**pick(measured, unusable), "onnx": str(onnx) if onnx else None}
