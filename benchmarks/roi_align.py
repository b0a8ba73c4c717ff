"""ROIAlign on the CPU: torchvision.ops.roi_align against ours (`maskrcnn.roi_align.roi_align_cpu`).

Run from the repository root:

    PYTHONPATH=src python benchmarks/roi_align.py              # 2 threads, 7 rounds
    PYTHONPATH=src python benchmarks/roi_align.py --rounds 3

For each case (one FPN level, the ROI counts and channel widths of a real step) it prints the median
forward and backward milliseconds of each kernel, alternating torchvision, ours, torchvision, ... after a
warm-up call of each, the ratios ours / torchvision, and the largest difference of the values and of the
gradients in float64 (ours must equal torchvision's up to summation order).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.ops import roi_align

from maskrcnn.roi_align import roi_align_cpu

# name, (images, channels, height, width) of the level, ROIs, output size, spatial scale, sampling ratio
CASES = (
    ("demo mask head, P2 of 128 px", (8, 64, 32, 32), 134, 14, 0.25, 1),
    ("demo box head, P2 of 128 px", (8, 64, 32, 32), 511, 7, 0.25, 1),
    ("torchvision box head, P2 of 800x1088", (2, 256, 200, 272), 1024, 7, 0.25, 2),
    ("torchvision mask head, P2 of 800x1088", (2, 256, 200, 272), 256, 14, 0.25, 2),
)


def random_rois(count: int, images: int, height: int, width: int, stride: int, generator) -> torch.Tensor:
    """(count, 5) rows: image index, then x1 y1 x2 y2 in image pixels, sized like the ROIs FPN puts on P2."""
    centre = torch.rand(count, 2, generator=generator) * torch.tensor([width * stride, height * stride], dtype=torch.float32)
    size = torch.rand(count, 2, generator=generator) * 100 + 4  # P2 takes boxes below 112 px (FPN Eq. 1)
    index = torch.randint(0, images, (count, 1), generator=generator).float()
    return torch.cat((index, centre - size / 2, centre + size / 2), dim=1)


def one_call(kernel, features, rois, output_size, scale, sampling) -> tuple[float, float]:
    start = time.perf_counter()
    pooled = kernel(features, rois, output_size, scale, sampling, False)
    middle = time.perf_counter()
    pooled.backward(torch.ones_like(pooled))
    return middle - start, time.perf_counter() - middle


def max_difference(shape, count, output_size, scale, sampling, generator) -> tuple[float, float]:
    features = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(count, shape[0], shape[2], shape[3], round(1 / scale), generator).double()
    expected = roi_align(features, rois, output_size, scale, sampling, False)
    got = roi_align_cpu(features, rois, output_size, scale, sampling, False)
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    expected_grad, = torch.autograd.grad(expected, features, upstream)
    got_grad, = torch.autograd.grad(got, features, upstream)
    return (got - expected).abs().max().item(), (got_grad - expected_grad).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, median of {args.rounds} alternating rounds")
    print("| case | ROIs | torchvision fwd ms | ours fwd ms | fwd ratio | torchvision bwd ms | ours bwd ms | bwd ratio | max diff value / grad (float64) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, shape, count, output_size, scale, sampling in CASES:
        features = torch.randn(shape, generator=generator).requires_grad_()
        rois = random_rois(count, shape[0], shape[2], shape[3], round(1 / scale), generator)
        times = {"tv": [], "ours": []}
        kernels = {"tv": roi_align, "ours": roi_align_cpu}
        for key in kernels:  # warm-up
            one_call(kernels[key], features, rois, output_size, scale, sampling)
        for _ in range(args.rounds):
            for key in kernels:
                times[key].append(one_call(kernels[key], features, rois, output_size, scale, sampling))
        fwd = {k: statistics.median(t[0] for t in v) * 1e3 for k, v in times.items()}
        bwd = {k: statistics.median(t[1] for t in v) * 1e3 for k, v in times.items()}
        value_diff, grad_diff = max_difference(shape, count, output_size, scale, sampling, generator)
        print(f"| {name} | {count} | {fwd['tv']:.1f} | {fwd['ours']:.1f} | **{fwd['ours'] / fwd['tv']:.2f}** | "
              f"{bwd['tv']:.1f} | {bwd['ours']:.1f} | **{bwd['ours'] / bwd['tv']:.2f}** | {value_diff:.1e} / {grad_diff:.1e} |")


if __name__ == "__main__":
    main()
