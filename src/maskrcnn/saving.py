"""`maskrcnn.save` / `maskrcnn.load`: weights, config and class names in one file; `load_weights` for any
weights a user may hold (ours, matterport's .h5, a torchvision state dict).

The file holds only tensors and plain values, so it loads with `torch.load(weights_only=True)`; it is
written atomically, so a crash never leaves a half-written model where a good one was.
"""
from __future__ import annotations

from pathlib import Path

from . import categories
from .checkpoint import atomic_save, load_file
from .config import Config
from .errors import CheckpointError, ConfigError
from .model import MaskRCNN

FORMAT = "maskrcnn-model"
FORMAT_VERSION = 1


def save(model: MaskRCNN, path) -> Path:
    """Write the model's weights, config and class names to `path` (conventionally `.pt`)."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "class_names": list(model.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if categories.has_categories(model):  # the data set's own ids and names (categories.py)
        state["categories"] = categories.to_plain(model)
    atomic_save(state, path)
    return path


def load(path, *, map_location="cpu") -> MaskRCNN:
    """A MaskRCNN from a file written by `save` (or a training checkpoint holding "model" and "config")."""
    data = load_file(path, map_location=map_location)
    weights = data.get("state_dict", data.get("model"))
    if "config" not in data or not isinstance(weights, dict):
        raise CheckpointError(f"{path}: not a maskrcnn model file (no config and weights inside)")
    try:
        config = Config.from_dict(data["config"])
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    model = MaskRCNN(config, class_names=data.get("class_names"))
    ours = model.state_dict()
    missing = [k for k in ours if k not in weights]
    unexpected = [k for k in weights if k not in ours]
    misshapen = [f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in weights.items() if k in ours and v.shape != ours[k].shape]
    if missing or unexpected or misshapen:
        raise CheckpointError(
            f"{path}: the weights do not fit the config stored with them: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}, wrong shapes {misshapen[:10]}"
        )
    model.load_state_dict(weights)
    if data.get("categories") is not None:  # files written before categories were kept have none
        categories.attach(model, data["categories"])
    return model.eval()


def load_weights(spec) -> MaskRCNN:
    """A MaskRCNN from a .pt file of ours, a matterport .h5, a torchvision Mask R-CNN state dict (.pth), or the
    name "torchvision-coco" (torchvision's COCO weights)."""
    from . import interop

    if str(spec) == "torchvision-coco":
        return with_coco_categories(interop.from_torchvision("torchvision-coco"))
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"weights file {spec} does not exist")
    if not path.is_file():
        raise CheckpointError(f"weights {spec} is not a file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        return interop.from_matterport(path)
    data = load_file(path)
    if "config" in data:
        return load(path)
    if "roi_heads.box_predictor.cls_score.weight" in data:
        return interop.from_torchvision(data)
    raise CheckpointError(f"{spec}: not a maskrcnn model, a matterport .h5 or a torchvision Mask R-CNN state dict "
                          f"(it holds {len(data)} entries, e.g. {', '.join(list(map(str, data))[:3])})")


def with_coco_categories(model: MaskRCNN) -> MaskRCNN:
    """torchvision's COCO weights with their 91-slot layout named: class k is COCO category k (categories.py)."""
    coco = categories.torchvision_coco_categories()
    model.class_names = ["BG"] + [c.name for c in coco]
    categories.attach(model, coco)
    return model
