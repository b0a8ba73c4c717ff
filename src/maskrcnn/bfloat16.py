"""PyTorch inference with convolutions and matrix products in bfloat16: `--backend torch --precision bf16`.

Under `torch.autocast` the convolutions, linear layers and matrix products take bfloat16 inputs (8 bits of
mantissa) and accumulate in float32; what follows them takes their outputs as they are, or in float32 where
autocast or an operand in float32 asks for it (anchors, image windows), and the detections come back in
float32. The weights are not changed. On a CPU with AMX tiles oneDNN runs those products on them: measured on
a 2-core Intel Xeon (Sapphire Rapids class), ResNet-50 FPN at 800x1066 with 100 detections took 0.34-0.43 of
the float32 time over four runs (0.24-0.28 of torchvision's in float32, 0.36-0.47 of torchvision's under the
same autocast). The cost is accuracy, measured on the demo's trained model by benchmarks/precision.py (no
loss there); the detections are not PyTorch's float32 ones to the last pixel.
"""
from __future__ import annotations

import torch

from .cpu import has_bf16_kernels
from .errors import ConfigError
from .structures import Detections


class Bfloat16Predictor:
    """A MaskRCNN whose `predict` runs under bfloat16 autocast. Has `config`, `class_names`, `categories` and
    `predict` like the model it wraps (the predictor interface of backends.py).

    On the CPU it needs bfloat16 instructions (AVX-512 BF16 or AMX, `cpu.has_bf16_kernels`): elsewhere oneDNN
    would emulate them, slower than float32, and a ConfigError says so.
    """

    def __init__(self, model):
        if model.device.type == "cpu" and not has_bf16_kernels():
            raise ConfigError("precision bf16 needs a CPU with bfloat16 instructions (AVX-512 BF16 or AMX); this "
                              "CPU has none, where bfloat16 would run emulated and slower: use precision f32")
        self.model = model
        self.config = model.config
        self.class_names = model.class_names
        self.categories = getattr(model, "categories", None)

    def predict(self, images, *, score_threshold: float | None = None) -> list[Detections]:
        """MaskRCNN.predict under autocast: boxes and scores come back in float32, masks as the model gives them."""
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16):
            return self.model.predict(images, score_threshold=score_threshold)
