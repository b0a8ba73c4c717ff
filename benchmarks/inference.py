"""Inference on the CPU, every backend against torchvision's maskrcnn_resnet50_fpn: same weights, same images.

    PYTHONPATH=src python benchmarks/inference.py                        # 800x1066 and 480x640, 5 rounds, 2 threads
    PYTHONPATH=src python benchmarks/inference.py --rounds 9 --sizes 800x1066
    PYTHONPATH=src python benchmarks/inference.py --no-parity --memory   # no float64 check; peak memory of torch's two

Backends, one table:
    torchvision   torchvision's model called as `model([image])` under no_grad (eager)
    ours          `MaskRCNN.predict([image])`, built from it by `maskrcnn.interop.from_torchvision`
    ours bf16     the same under bfloat16 autocast (`bfloat16.Bfloat16Predictor`, `--precision bf16`), where the
                  CPU has bfloat16 instructions (else the row is left out)
    torchvision bf16  torchvision's model under the same autocast, beside ours bf16: the same precision on both
                  sides (the ratio columns stay against torchvision in float32)
    onnxruntime   `export.OnnxPredictor` of `export.to_onnx(ours)` (the graph is `find_instances`)
    openvino f32  `export.OpenVinoPredictor(..., precision="f32")` of the same file
    openvino bf16 the same with precision="bf16", where the CPU has bfloat16 kernels (else the row is left out)
Every one returns boxes, labels, scores and masks pasted into the image; each ONNX predictor does our pre- and
post-processing in Python around its graph.

What it does:
  - builds torchvision's `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)` with seed 0 (random
    weights, no download), score threshold 0 so that every backend returns 100 detections, and ours from it;
  - for each image size: one random image (torch.rand, seed 1), one warm-up call of each backend, then
    `--rounds` rounds of torchvision, ours, onnxruntime, openvino f32, openvino bf16, torchvision, ... (alternating,
    so that a change in the machine's load hits all alike), each call timed by wall clock and by process CPU time
    (time.process_time: the CPU seconds of all of this process's threads, which a busy shared machine disturbs
    much less than the wall clock). Every backend runs with `--threads` threads (torch.set_num_threads,
    onnxruntime's intra-op threads, OpenVINO's INFERENCE_NUM_THREADS);
  - "agrees": each other backend's detections against ours on the timed image, with tests/test_export.py's
    tolerances (count, labels, boxes within 0.01 px, scores within 1e-4, mask IoU >= 0.99); bfloat16 is not
    expected to agree (it rounds activations to 8 bits of mantissa) and its largest box and score differences
    are printed;
  - peak memory (`--memory`): torchvision and ours each run the same image in a fresh subprocess
    (`--memory-child`) that loads the weights from a temporary file the same way for both; it reports its peak
    resident set size (VmHWM of /proc/self/status; not ru_maxrss, which inherits the parent's size across fork
    and exec) and the peak minus the resident size just after loading;
  - denormal floats flushed to zero and freed memory kept for reuse (cpu.py), as the `maskrcnn` command runs,
    for every backend alike (`--keep-denormals`, `--return-freed-memory` for glibc's defaults);
  - parity (unless `--no-parity`): torchvision and ours in float64 on the same images must give the same
    detections as tests/test_interop_torchvision.py requires: same count, equal labels, boxes within 1e-3 px,
    scores within 1e-6, every mask IoU >= 0.99.
"""
from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path, and benchmarks/onnx.py would shadow the `onnx` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402

from maskrcnn.backends import cpu_description, same_detections  # noqa: E402
from maskrcnn.bfloat16 import Bfloat16Predictor  # noqa: E402
from maskrcnn.cpu import flush_denormals, has_bf16_kernels, reuse_freed_memory  # noqa: E402
from maskrcnn.interop import from_torchvision  # noqa: E402

DEFAULT_SIZES = ("800x1066", "480x640")


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def torchvision_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model.roi_heads.score_thresh = 0.0  # every (ROI, class) pair is a candidate: 100 detections
    return model.eval()


def image_of(size: tuple[int, int], dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, *size, generator=generator).to(dtype)  # (3, H, W) in [0, 1]


def timed(call) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def onnx_backends(ours, folder: str, threads: int) -> dict:
    """The ONNX predictors of `ours` that this machine has (onnxruntime, OpenVINO f32, and bf16 where supported)."""
    from maskrcnn.export import to_onnx

    found = {}
    path = to_onnx(ours, Path(folder) / "model.onnx")
    try:
        from maskrcnn.export import OnnxPredictor

        found["onnxruntime"] = OnnxPredictor(path, threads=threads)
    except ImportError as error:
        print(f"onnxruntime left out: {error}")
    try:
        from maskrcnn.export import OpenVinoPredictor
        from maskrcnn.openvino_backend import cpu_supports_bf16

        found["openvino f32"] = OpenVinoPredictor(path, threads=threads, precision="f32")
        if cpu_supports_bf16():
            found["openvino bf16"] = OpenVinoPredictor(path, threads=threads, precision="bf16")
        else:
            print("openvino bf16 left out: this CPU has no bfloat16 kernels")
    except ImportError as error:
        print(f"openvino left out: {error}")
    return found


def reference_in_bfloat16(reference, image):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return reference([image])[0]["boxes"]


def compare_speed(reference, ours, others: dict, size, rounds: int) -> dict:
    """Median wall and CPU seconds of every backend on one image, alternating; detection counts; agreement."""
    image = image_of(size)
    calls = {"torchvision": lambda: reference([image])[0]["boxes"], "ours": lambda: ours.predict([image])[0]}
    if "ours bf16" in others:  # the same precision on both sides
        calls["torchvision bf16"] = lambda: reference_in_bfloat16(reference, image)
    calls.update({name: (lambda p=predictor: p.predict([image])[0]) for name, predictor in others.items()})
    times = {name: {"wall": [], "cpu": []} for name in calls}
    with torch.no_grad():
        found = {name: call() for name, call in calls.items()}  # warm-up
        for _ in range(rounds):
            for name, call in calls.items():  # A B C D E A B C D E ...
                wall, cpu, _ = timed(call)
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    agrees = {}
    for name in others:
        got, expected = found[name], found["ours"]
        same = same_detections(expected, got)
        detail = ""
        if not same and len(got) == len(expected) and len(got):
            detail = (f" (max box diff {(got.boxes - expected.boxes).abs().max().item():.2g} px, "
                      f"score diff {(got.scores - expected.scores).abs().max().item():.2g})")
        elif not same:
            detail = f" ({len(got)} vs {len(expected)} detections)"
        agrees[name] = ("yes" if same else "no") + detail
    counts = {name: len(value) for name, value in found.items()}
    return {"times": times, "counts": counts, "agrees": agrees}


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))


def parity(reference, ours, sizes) -> list[str]:
    """Float64 detections of both models on the benchmark's images, compared as the parity test does."""
    reference, ours = reference.double(), ours.double()
    lines = []
    try:
        for size in sizes:
            image = image_of(size, torch.float64)
            with torch.no_grad():
                expected = reference([image])[0]
            got = ours.predict([image])[0]
            same_count = len(got) == len(expected["boxes"])
            n = min(len(got), len(expected["boxes"]))
            labels = bool(torch.equal(got.labels[:n], expected["labels"][:n]))
            box_diff = (got.boxes[:n].double() - expected["boxes"][:n]).abs().max().item() if n else 0.0
            score_diff = (got.scores[:n].double() - expected["scores"][:n]).abs().max().item() if n else 0.0
            iou = mask_iou(got.masks[:n], expected["masks"][:n, 0] > 0.5).min().item() if n else 1.0
            ok = same_count and labels and box_diff <= 1e-3 and score_diff <= 1e-6 and iou >= 0.99
            lines.append(
                f"parity {size[0]}x{size[1]} float64: {'EQUAL' if ok else 'DIFFERENT'} ({len(got)} vs {len(expected['boxes'])} "
                f"detections, labels {'equal' if labels else 'differ'}, max box diff {box_diff:.2e} px, "
                f"max score diff {score_diff:.2e}, min mask IoU {iou:.4f})"
            )
    finally:
        reference.float(), ours.float()
    return lines


def memory_child(which: str, weights: str, size: tuple[int, int], threads: int) -> None:
    """Run in a fresh process: load one model, run it twice on the image, print peak and loaded RSS in MiB."""
    torch.set_num_threads(threads)
    state = torch.load(weights, weights_only=True)
    if which == "torchvision":
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        model.load_state_dict(state)
        model.roi_heads.score_thresh = 0.0
        model.eval()
        call = lambda image: model([image])  # noqa: E731
    else:
        model = from_torchvision(state, detection_min_confidence=0.0).eval()
        call = lambda image: model.predict([image])  # noqa: E731
    del state
    image = image_of(size)
    with open("/proc/self/statm") as f:
        loaded = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    with torch.no_grad():
        for _ in range(2):
            call(image)
    # VmHWM, this process's own peak: ru_maxrss would include the parent's size at fork, which Linux
    # carries over exec into the child's rusage.
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # KiB -> MiB
    print(f"{peak:.0f} {loaded:.0f}")


def peak_memory(weights: str, size: tuple[int, int], threads: int) -> dict[str, tuple[float, float]]:
    result = {}
    for which in ("torchvision", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, "--weights", weights, "--sizes", f"{size[0]}x{size[1]}",
             "--threads", str(threads)],
            check=True, capture_output=True, text=True, env=dict(os.environ),
        ).stdout.split()
        result[which] = (float(out[-2]), float(out[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="image sizes HxW")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each backend per size, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-parity", action="store_true", help="skip the float64 check (several minutes)")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of torchvision and ours (subprocesses)")
    parser.add_argument("--no-onnx", action="store_true", help="torchvision and ours only")
    parser.add_argument("--memory-child", choices=("torchvision", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--keep-denormals", action="store_true", help="do not flush denormal floats to zero")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's default of unmapping freed blocks (the maskrcnn predict command keeps them)")
    args = parser.parse_args()
    flushed = False if args.keep_denormals else flush_denormals()  # first: every thread started later inherits it
    kept = False if args.return_freed_memory else reuse_freed_memory()  # for every backend alike, as `maskrcnn predict`
    sizes = [parse_size(s) for s in args.sizes]
    if args.memory_child:
        memory_child(args.memory_child, args.weights, sizes[0], args.threads)
        return

    torch.set_num_threads(args.threads)
    reference = torchvision_model()
    ours = from_torchvision(reference).eval()
    cpu, flags = cpu_description()
    versions = [f"torch {torch.__version__}", f"torchvision {torchvision.__version__}"]
    for module in ("onnxruntime", "openvino"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    print(f"CPU: {cpu}, {os.cpu_count()} logical CPUs; flags: {flags}")
    print(f"{args.threads} threads for every backend; {', '.join(versions)}; denormals flushed to zero: "
          f"{'yes' if flushed else 'no'}; freed memory kept: {'yes' if kept else 'no'}; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        others = {"ours bf16": Bfloat16Predictor(ours)} if has_bf16_kernels() else {}
        if not args.no_onnx:
            others.update(onnx_backends(ours, folder, args.threads))
        weights = os.path.join(folder, "weights.pt")
        if args.memory:
            torch.save(reference.state_dict(), weights)
        print(f"{'size':>9} {'backend':>16} {'dets':>4} {'median s':>9} {'CPU s':>7} {'/ tv wall':>9} {'/ tv CPU':>8} "
              f"{'agrees with ours':<18}" + (f" {'peak RSS MiB':>12} {'inference MiB':>13}" if args.memory else ""))
        for size in sizes:
            result = compare_speed(reference, ours, others, size, args.rounds)
            memory = peak_memory(weights, size, args.threads) if args.memory else {}
            medians = {name: (statistics.median(t["wall"]), statistics.median(t["cpu"])) for name, t in result["times"].items()}
            tv_wall, tv_cpu = medians["torchvision"]
            for name, (wall, cpu_s) in medians.items():
                line = (f"{size[0]:>4}x{size[1]:<4} {name:>16} {result['counts'][name]:>4} {wall:>9.2f} {cpu_s:>7.2f} "
                        f"{wall / tv_wall:>9.3f} {cpu_s / tv_cpu:>8.3f} {result['agrees'].get(name, '-'):<18}")
                if name in memory:
                    peak, loaded = memory[name]
                    line += f" {peak:>12.0f} {peak - loaded:>13.0f}"
                print(line, flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if not args.no_parity:
        for line in parity(reference, ours, sizes):
            print(line)


if __name__ == "__main__":
    main()
