"""ImageNet-pretrained ResNet weights for the backbone's trunk (Mask R-CNN paper, section 3.1: the backbone
starts from ImageNet classification weights; torchvision's `maskrcnn_resnet50_fpn(weights_backbone=...)`).

`load_backbone_weights(model, "imagenet")` takes the weights of torchvision's weights API
(`ResNet50_Weights.IMAGENET1K_V1`, ...) from torch's hub cache, downloading them there when online;
`load_backbone_weights(model, "resnet50.pth")` takes a torchvision ResNet state dict from a file. Our trunk
keeps torchvision's module names (conv1, bn1, layer1..layer4), so the tensors copy by name; the classifier
(`fc`) has no place in a detector and is left out.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from .checkpoint import load_file
from .errors import CheckpointError, ConfigError

# torchvision's ImageNet weights per backbone: the first release, as torchvision's detection models use.
WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}
# The key prefix nn.DataParallel / DistributedDataParallel put before the network's own names.
_PREFIXES = ("module.",)


def imagenet_file(backbone: str) -> tuple[str, Path]:
    """(download URL, path in torch's hub cache) of the ImageNet weights of a backbone."""
    weights = getattr(torchvision.models, WEIGHTS[backbone]).IMAGENET1K_V1
    return weights.url, Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _download(url: str, path: Path) -> None:
    """torch.hub's download into the cache, with the hash check of the file name's hash prefix."""
    torch.hub.load_state_dict_from_url(url, model_dir=str(path.parent), file_name=path.name, check_hash=True,
                                       map_location="cpu", progress=True)


def imagenet_state_dict(backbone: str) -> tuple[dict, Path]:
    """The ImageNet state dict of a backbone and the file it came from; downloaded into the cache when missing.

    Raises CheckpointError naming the exact file name and folder when it is missing and cannot be downloaded.
    """
    if backbone not in WEIGHTS:
        raise ConfigError(f"no ImageNet weights for backbone {backbone!r}; there are for {', '.join(WEIGHTS)}")
    url, path = imagenet_file(backbone)
    if not path.is_file():
        try:
            _download(url, path)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a hash mismatch a RuntimeError
            raise CheckpointError(
                f"the ImageNet weights of {backbone} are not in torch's cache and could not be downloaded "
                f"({error}). On a machine with internet, download {url} and place it as {path} (folder "
                f"{path.parent}, file name {path.name}); or give --backbone-weights FILE.pth"
            ) from error
    return load_file(path), path


def load_backbone_weights(model, source) -> int:
    """Copy ImageNet ResNet weights into `model.backbone.trunk`; returns the number of tensors copied.

    source: "imagenet" (torchvision's weights for the config's backbone) or the path of a torchvision ResNet
    state dict (`torchvision.models.resnet50(...).state_dict()` saved with torch.save). Raises CheckpointError
    listing the missing, unexpected and misshapen keys when the file does not fit the trunk.
    """
    config = model.config
    if config.layout != "torchvision":
        raise ConfigError(f"--backbone-weights: torchvision's ResNet weights fit layout 'torchvision', "
                          f"not {config.layout!r} (matterport's trunk has other layers; use its .h5 weights)")
    if str(source) == "imagenet":
        weights, where = imagenet_state_dict(config.backbone)
    else:
        where = Path(source)
        weights = load_file(where)
    weights = {_strip_prefix(k): v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    trunk = model.backbone.trunk
    ours = {k: v for k, v in trunk.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in ours if k not in weights]
    misshapen = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
                 if k in weights and weights[k].shape != v.shape]
    unexpected = [k for k in weights if k not in ours and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing or misshapen or unexpected:
        raise CheckpointError(
            f"{where}: not a torchvision {config.backbone} state dict for the backbone: "
            f"{len(missing)} missing ({', '.join(missing[:5])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:5])}), {len(misshapen)} of another shape ({', '.join(misshapen[:5])}). "
            f"The config's backbone is {config.backbone}; give that network's weights"
        )
    with torch.no_grad():
        for name, tensor in trunk.state_dict().items():
            if name in ours:
                tensor.copy_(weights[name])
    return len(ours)


def _strip_prefix(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key
