"""Inference on the CPU: ours against torchvision's maskrcnn_resnet50_fpn, same weights, same images (issue 6).

    PYTHONPATH=src python benchmarks/inference.py                        # 800x1066 and 480x640, 5 rounds, 2 threads
    PYTHONPATH=src python benchmarks/inference.py --rounds 9 --sizes 800x1066
    PYTHONPATH=src python benchmarks/inference.py --no-parity --no-memory   # timing only (the float64 check is slow)

What it does:
  - builds torchvision's `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)` with seed 0 (random
    weights, no download), score threshold 0 so that both models return 100 detections, and ours from it
    through `maskrcnn.interop.from_torchvision`;
  - for each image size: one random image (torch.rand, seed 1), one warm-up call of each model, then
    `--rounds` rounds of torchvision, ours, torchvision, ours, ... (alternating, so that a change in the
    machine's load hits both alike), each call timed by wall clock and by process CPU time
    (time.process_time: the CPU seconds of all of this process's threads, which a busy shared machine
    disturbs much less than the wall clock). torchvision is called as `model([image])` under no_grad;
    ours as `model.predict([image])`; both return boxes, labels, scores and pasted masks;
  - peak memory: each model runs the same image in a fresh subprocess (`--memory-child`) that loads the
    weights from a temporary file the same way for both; it reports its peak resident set size (VmHWM of
    /proc/self/status; not ru_maxrss, which inherits the parent's size across fork and exec) and the peak
    minus the resident size just after loading (the memory of inference itself). tracemalloc does not see
    torch's allocations;
  - parity: the same two models in float64 on the same images must give the same detections as the
    parity test requires (tests/test_interop_torchvision.py): same count, equal labels, boxes within 1e-3
    px, scores within 1e-6, every mask IoU >= 0.99.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torchvision

from maskrcnn.cpu import flush_denormals, has_avx512
from maskrcnn.interop import from_torchvision

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


def compare_speed(reference, ours, size, rounds: int) -> dict:
    image = image_of(size)
    calls = {"torchvision": lambda: reference([image]), "ours": lambda: ours.predict([image])}
    times = {name: {"wall": [], "cpu": []} for name in calls}
    with torch.no_grad():
        counts = {name: len(call()[0]["boxes"] if name == "torchvision" else call()[0]) for name, call in calls.items()}  # warm-up
        for _ in range(rounds):
            for name, call in calls.items():  # A B A B ...
                wall, cpu, _ = timed(call)
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    return {"times": times, "counts": counts}


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
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each model per size, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-parity", action="store_true", help="skip the float64 check (several minutes)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-child", choices=("torchvision", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--keep-denormals", action="store_true", help="do not flush denormal floats to zero")
    args = parser.parse_args()
    flushed = False if args.keep_denormals else flush_denormals()  # first: every thread started later inherits it
    sizes = [parse_size(s) for s in args.sizes]
    if args.memory_child:
        memory_child(args.memory_child, args.weights, sizes[0], args.threads)
        return

    torch.set_num_threads(args.threads)
    reference = torchvision_model()
    ours = from_torchvision(reference).eval()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, denormals flushed to zero (both models): {'yes' if flushed else 'no'}, "
          f"{'AVX-512' if has_avx512() else 'no AVX-512'}, load average at start {load:.1f}")
    print(f"{'size':>9} {'model':>11} {'dets':>4} {'median s':>9} {'median CPU s':>12} {'peak RSS MiB':>12} {'inference MiB':>13}")
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "weights.pt")
        torch.save(reference.state_dict(), weights)
        for size in sizes:
            result = compare_speed(reference, ours, size, args.rounds)
            memory = {} if args.no_memory else peak_memory(weights, size, args.threads)
            medians = {}
            for name in ("torchvision", "ours"):
                wall = statistics.median(result["times"][name]["wall"])
                cpu = statistics.median(result["times"][name]["cpu"])
                medians[name] = (wall, cpu)
                peak, loaded = memory.get(name, (float("nan"), float("nan")))
                print(f"{size[0]:>4}x{size[1]:<4} {name:>11} {result['counts'][name]:>4} {wall:>9.2f} {cpu:>12.2f} "
                      f"{peak:>12.0f} {peak - loaded:>13.0f}")
            print(f"{size[0]:>4}x{size[1]:<4} {'ours/tv':>11} {'':>4} {medians['ours'][0] / medians['torchvision'][0]:>9.3f} "
                  f"{medians['ours'][1] / medians['torchvision'][1]:>12.3f}"
                  + ("" if args.no_memory else f" {memory['ours'][0] / memory['torchvision'][0]:>12.3f} "
                     f"{(memory['ours'][0] - memory['ours'][1]) / (memory['torchvision'][0] - memory['torchvision'][1]):>13.3f}"))
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if not args.no_parity:
        for line in parity(reference, ours, sizes):
            print(line)


if __name__ == "__main__":
    main()
