"""Process-wide CPU settings: flushing denormal floats to zero, keeping freed memory for reuse, and which
kernels this CPU runs.

Denormal ("subnormal") floats, below 1.2e-38 in float32, take a slow path in the CPU's floating-point unit.
Training a network from random weights produces them: measured on an Intel Xeon (AVX-512), a ResNet-50
Mask R-CNN step at 800x1066 went from 20 s to 139 s and then 218 s by the fourth step, torchvision's model
alike, and one 3x3 convolution over denormal inputs ran 150x slower than over normal ones.
TensorFlow, which the seed's implementation runs on, flushes them to zero in its threads by default;
PyTorch does not. Flushing changes only values that small: every result above them is bit for bit the same.
"""
from __future__ import annotations

import functools

import torch

# Above torch's grain size (32768 elements), so that an elementwise op is split among all intra-op threads.
_PROBE_ELEMENTS = 1 << 20


def flush_denormals() -> bool:
    """Flush denormal floats to zero (x86 FTZ and DAZ); return whether every intra-op thread now does.

    The setting belongs to each thread. Threads started later inherit it from the thread that starts them,
    so call this at the start of the process, before the first torch operation that runs in parallel (the
    `maskrcnn` command does, and so do the benchmarks); threads that already exist keep what they had, and
    False is returned. Also False on CPUs without the setting.
    """
    if not torch.set_flush_denormal(True):
        return False
    return all_threads_flush_denormals()


def all_threads_flush_denormals() -> bool:
    """Whether an elementwise op split among all intra-op threads turns denormal inputs into zeros.

    The probe is made and read through its bits (int32 1 is float32's smallest denormal, 1.4e-45): a float
    fill or comparison would itself flush or read denormals as zero in a thread that has the setting.
    """
    probe = torch.ones(_PROBE_ELEMENTS, dtype=torch.int32).view(torch.float32)
    return not bool((probe * 1.0).view(torch.int32).any())


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEPT_ALLOCATION_BYTES = 1 << 30  # allocations up to this size are served from the heap and kept when freed


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of giving it back to the system;
    return whether it could be set (False on other C libraries).

    By default glibc serves each large block (a feature map of tens of MB) with its own mmap and unmaps it when
    freed, so the next forward pass faults in and zeroes the same pages again. A prediction allocates and frees
    the same sizes image after image: kept on the heap, they are reused without page faults. Measured with the
    demo's model on 256 px tiles of 1024 and 3072 px scenes (2-core AMD EPYC with AVX-512): 76 ms a tile
    before, 53-59 ms after, for 35-45 MB more peak memory (freed blocks are kept, not returned), which the
    process holds until it exits. For commands that predict image after image (`maskrcnn predict`, `evaluate`,
    `serve`); a library user calls it where wanted.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEPT_ALLOCATION_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_ALLOCATION_BYTES))


@functools.cache
def has_avx512() -> bool:
    """Whether torch's CPU kernels run with AVX-512 here (oneDNN reads the same from the CPU itself)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@functools.cache
def has_bf16_kernels() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16, or AMX tiles), which oneDNN's bfloat16
    convolutions and matrix products need to run faster than float32; without them they run emulated."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private in torch 2.x; absent: ask AMX only
    return bool(probe and probe()) or has_amx()


@functools.cache
def has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), where oneDNN runs bfloat16
    convolutions and matrix products on them: the demo's training step under bfloat16 autocast took 0.71x
    its float32 time on such a Xeon. Without AMX, bfloat16 gains little or runs emulated."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x; absent: assume not
    return bool(probe and probe())
