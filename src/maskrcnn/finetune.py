"""Start from other weights: copy every tensor whose name and shape fit, list those left fresh."""
from __future__ import annotations

import torch
from torch import nn


def load_matching_weights(model: nn.Module, source: nn.Module | dict) -> list[str]:
    """Copy source's tensors into model where name and shape agree (e.g. a new class count: the class
    and mask output layers stay freshly initialised). Returns the names left as they were."""
    weights = source.state_dict() if isinstance(source, nn.Module) else source
    ours = model.state_dict()
    skipped = []
    with torch.no_grad():
        for name, tensor in ours.items():
            theirs = weights.get(name)
            if theirs is not None and theirs.shape == tensor.shape:
                tensor.copy_(theirs)
            elif not name.endswith("num_batches_tracked"):
                skipped.append(name)
    return skipped
