"""Load matterport's Keras `.h5` weights (the seed's Mask_RCNN) into our MaskRCNN with `Config.matterport()`.

The file is read with h5py as Keras' `load_weights(by_name=True)` reads it: the root attribute
`layer_names`, then each layer group's `weight_names`, each naming a dataset inside the group. Names are
fixed-length bytes in files written by Keras 2.0.8 (matterport's `mask_rcnn_coco.h5`) and variable-length
strings in newer ones; layers without weights are skipped, whatever they are called.

Every Keras layer with weights is mapped to our modules by name, explicitly (`_layer_map`); a file with a
missing, extra or misshapen tensor is refused with the layer names listed, and nothing is loaded.
Layouts (Keras -> torch):
    Conv2D kernel (kh, kw, in, out) -> (out, in, kh, kw)
    Conv2DTranspose kernel (kh, kw, out, in) -> (in, out, kh, kw)
    Dense kernel (in, out) -> (out, in)
    BatchNorm gamma, beta, moving_mean, moving_variance -> weight, bias, running_mean, running_var
Box deltas come as (dy, dx, dh, dw) per anchor (rpn_bbox_pred) and per class (mrcnn_bbox_fc); ours are
(dx, dy, dw, dh), so those output channels are reordered. rpn_class_raw gives (background, foreground)
per anchor, anchor-major, which is already our softmax layout.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..errors import CheckpointError
from ..model import MaskRCNN

# matterport's delta order (dy, dx, dh, dw) -> ours (dx, dy, dw, dh): our channel j reads theirs DELTA_ORDER[j]
DELTA_ORDER = (1, 0, 3, 2)
BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
# identity blocks of stage 4 tell the two trunks apart: 5 for ResNet-50, 22 for ResNet-101
STAGE4_BLOCKS = {6: "resnet50", 23: "resnet101"}


def from_matterport(h5_path, *, num_classes: int | None = None, config: Config | None = None) -> MaskRCNN:
    """matterport `.h5` weights -> MaskRCNN (float32, eval mode) that predicts what matterport predicts.

    The backbone (ResNet-50 or ResNet-101) and the number of classes are read from the file. `num_classes`,
    when given, must agree with the file; `config` replaces `Config.matterport()` (its backbone and
    num_classes must agree with the file too). Raises CheckpointError naming the file and the layers.
    """
    path = Path(h5_path)
    tensors = read_keras_weights(path)  # {"layer/kind": array}
    backbone, file_classes = _detect_architecture(path, tensors)
    if num_classes is not None and num_classes != file_classes:
        raise CheckpointError(f"{path}: the file has {file_classes} classes (mrcnn_class_logits), but num_classes={num_classes} was asked for")
    if config is None:
        config = Config.matterport(num_classes=file_classes, backbone=backbone)
    elif config.backbone != backbone or config.num_classes != file_classes:
        raise CheckpointError(
            f"{path}: the file holds a {backbone} with {file_classes} classes, but the config asks for "
            f"{config.backbone} with {config.num_classes} classes"
        )
    with torch.device("meta"):  # shapes only: every tensor comes from the file, so no random initialisation
        model = MaskRCNN(config)
    model.load_state_dict(_convert(path, tensors, model), strict=True, assign=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- reading
def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def read_keras_weights(path: Path) -> dict[str, np.ndarray]:
    """{"layer/kind": array} for every weight of a Keras weights file ("conv1/kernel", "rpn_class_raw/bias").

    Weights of nested models (matterport's `rpn_model`) are keyed by their own layer's name, as Keras
    names them ("rpn_conv_shared/kernel:0" inside the group "rpn_model").
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:  # missing, truncated or not HDF5 at all: h5py says which
        raise CheckpointError(f"{path}: cannot read as an HDF5 (.h5) weights file: {error}") from error
    tensors: dict[str, np.ndarray] = {}
    with handle:
        root = handle
        if "layer_names" not in root.attrs and "model_weights" in root:  # a whole model saved by model.save()
            root = root["model_weights"]
        if "layer_names" not in root.attrs:
            raise CheckpointError(f"{path}: not a Keras weights file (no 'layer_names' attribute), so not matterport's .h5 format")
        try:
            for layer in (_text(n) for n in root.attrs["layer_names"]):
                if layer not in root:
                    raise CheckpointError(f"{path}: layer {layer!r} is listed in 'layer_names' but has no group")
                group = root[layer]
                for weight in (_text(n) for n in group.attrs.get("weight_names", [])):
                    name = re.sub(r":\d+$", "", weight)  # "res2a_branch2a/kernel:0" -> "res2a_branch2a/kernel"
                    parts = name.split("/")
                    key = "/".join(parts[-2:]) if len(parts) >= 2 else f"{layer}/{name}"
                    if key in tensors:
                        raise CheckpointError(f"{path}: weight {key!r} appears twice (layer {layer!r})")
                    if weight not in group:
                        raise CheckpointError(f"{path}: layer {layer!r} names weight {weight!r} but holds no such dataset")
                    tensors[key] = np.asarray(group[weight][()])
        except (OSError, KeyError, ValueError) as error:  # truncated data or corrupt metadata inside the file
            raise CheckpointError(f"{path}: the file is damaged or truncated, reading its weights failed: {error}") from error
    if not tensors:
        raise CheckpointError(f"{path}: a Keras file without any weights, not matterport's Mask R-CNN")
    return tensors


def _detect_architecture(path: Path, tensors: dict) -> tuple[str, int]:
    """("resnet50" | "resnet101", num_classes) from the layer names and the class logits' shape."""
    if "mrcnn_class_logits/bias" not in tensors or "conv1/kernel" not in tensors:
        missing = [n for n in ("conv1", "mrcnn_class_logits") if f"{n}/bias" not in tensors]
        raise CheckpointError(f"{path}: not a matterport Mask R-CNN weights file (no layer {', '.join(missing)})")
    blocks = {m[1] for key in tensors if (m := re.fullmatch(r"res4([a-z]+)_branch2a/kernel", key))}
    if len(blocks) not in STAGE4_BLOCKS:
        raise CheckpointError(f"{path}: {len(blocks)} blocks in stage 4 (res4*_branch2a): neither ResNet-50 (6) nor ResNet-101 (23)")
    return STAGE4_BLOCKS[len(blocks)], int(tensors["mrcnn_class_logits/bias"].shape[0])


# ---------------------------------------------------------------------------------------------- mapping
def _layer_map(model: MaskRCNN) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (our module path, kind); kind says how its weights convert."""
    layers = {"conv1": ("backbone.trunk.conv1", "conv"), "bn_conv1": ("backbone.trunk.bn1", "bn")}
    trunk = model.backbone.trunk
    for stage in (2, 3, 4, 5):
        for index in range(len(getattr(trunk, f"stage{stage}"))):
            block = f"{stage}{chr(ord('a') + index)}"  # Keras: res4a, res4b, ... (a is the conv_block)
            ours = f"backbone.trunk.stage{stage}.{index}"
            for branch, name in (("2a", "a"), ("2b", "b"), ("2c", "c")):
                layers[f"res{block}_branch{branch}"] = (f"{ours}.conv_{name}", "conv")
                layers[f"bn{block}_branch{branch}"] = (f"{ours}.bn_{name}", "bn")
            if index == 0:
                layers[f"res{block}_branch1"] = (f"{ours}.shortcut_conv", "conv")
                layers[f"bn{block}_branch1"] = (f"{ours}.shortcut_bn", "bn")
    for level in (2, 3, 4, 5):
        layers[f"fpn_c{level}p{level}"] = (f"backbone.fpn.lateral.{level - 2}.0", "conv")
        layers[f"fpn_p{level}"] = (f"backbone.fpn.output.{level - 2}.0", "conv")
    layers.update({
        "rpn_conv_shared": ("rpn.conv.0", "conv"),
        "rpn_class_raw": ("rpn.objectness", "conv"),
        "rpn_bbox_pred": ("rpn.deltas", "conv_deltas"),
        # the box head: a 7x7 valid conv (a dense layer over the crop) and a 1x1 conv, each with batch norm
        "mrcnn_class_conv1": ("box_head.shared.0", "conv"),
        "mrcnn_class_bn1": ("box_head.shared.1", "bn"),
        "mrcnn_class_conv2": ("box_head.shared.3", "conv"),
        "mrcnn_class_bn2": ("box_head.shared.4", "bn"),
        "mrcnn_class_logits": ("box_head.class_logits", "dense"),
        "mrcnn_bbox_fc": ("box_head.deltas", "dense_deltas"),
        "mrcnn_mask_deconv": ("mask_head.upsample", "deconv"),
        "mrcnn_mask": ("mask_head.mask_logits", "conv"),
    })
    for i in range(4):  # our MaskHead with batch norm: [conv, bn, relu] x 4, the convs without bias
        layers[f"mrcnn_mask_conv{i + 1}"] = (f"mask_head.convs.{3 * i}", "conv_into_bn")
        layers[f"mrcnn_mask_bn{i + 1}"] = (f"mask_head.convs.{3 * i + 1}", "bn")
    return layers


def _reorder_deltas(tensor: torch.Tensor) -> torch.Tensor:
    """Output channels grouped by 4 (per anchor or class): (dy, dx, dh, dw) -> (dx, dy, dw, dh)."""
    groups = tensor.shape[0] // 4
    index = (torch.arange(groups)[:, None] * 4 + torch.tensor(DELTA_ORDER)[None, :]).reshape(-1)
    return tensor[index]


def _convert(path: Path, tensors: dict, model: MaskRCNN) -> dict[str, torch.Tensor]:
    """Our full state dict from the file's tensors; CheckpointError listing every missing, extra or misshapen layer."""
    target = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    missing, misshapen, used = [], [], set()
    folded_biases = {}  # our mask convs have no bias (batch norm follows): Keras' bias goes into the BN mean

    def take(layer: str, kind: str) -> np.ndarray | None:
        key = f"{layer}/{kind}"
        if key not in tensors:
            missing.append(key)
            return None
        used.add(key)
        return tensors[key]

    def put(layer: str, name: str, value: torch.Tensor, keras_shape) -> None:
        expected = tuple(target[name].shape)
        if tuple(value.shape) != expected:
            misshapen.append(f"{layer} {tuple(keras_shape)} (expected {_keras_shape(expected)})")
            return
        state[name] = value.to(target[name].dtype)  # the model is built on the meta device: dtype and shape only

    for layer, (ours, kind) in _layer_map(model).items():
        if kind == "bn":
            for field, attribute in BN_FIELDS.items():
                value = take(layer, field)
                if value is not None:
                    put(layer, f"{ours}.{attribute}", torch.from_numpy(value), value.shape)
            continue
        kernel, bias = take(layer, "kernel"), take(layer, "bias")
        if kernel is None or bias is None:
            continue
        if kind in ("conv", "conv_deltas", "conv_into_bn", "deconv"):
            if kernel.ndim != 4:
                misshapen.append(f"{layer} {tuple(kernel.shape)} (expected a 4-d conv kernel)")
                continue
            # conv (kh, kw, in, out) -> (out, in, kh, kw); transposed conv (kh, kw, out, in) -> (in, out, kh, kw)
            weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        else:  # dense (in, out) -> (out, in)
            if kernel.ndim != 2:
                misshapen.append(f"{layer} {tuple(kernel.shape)} (expected a 2-d dense kernel)")
                continue
            weight = torch.from_numpy(np.ascontiguousarray(kernel.T))
        bias_tensor = torch.from_numpy(bias)
        if kind in ("conv_deltas", "dense_deltas") and weight.shape[0] % 4 == 0 and bias_tensor.shape[0] == weight.shape[0]:
            weight, bias_tensor = _reorder_deltas(weight), _reorder_deltas(bias_tensor)
        put(layer, f"{ours}.weight", weight, kernel.shape)
        if kind == "conv_into_bn":
            folded_biases[ours] = (layer, bias_tensor)
        else:
            put(layer, f"{ours}.bias", bias_tensor, bias.shape)

    # BN(conv(x) + b) == BN'(conv(x)) with running_mean' = running_mean - b (frozen batch norm, exact in eval)
    for ours, (layer, bias) in folded_biases.items():
        bn = ours.rsplit(".", 1)[0] + f".{int(ours.rsplit('.', 1)[1]) + 1}"
        mean_name = f"{bn}.running_mean"
        if mean_name in state and bias.shape == state[mean_name].shape:
            state[mean_name] = (state[mean_name].double() - bias.double()).to(state[mean_name].dtype)
        elif mean_name in state:
            misshapen.append(f"{layer} bias {tuple(bias.shape)} (expected {tuple(state[mean_name].shape)})")

    extra = sorted(set(tensors) - used)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(sorted(missing))}")
    if extra:
        problems.append(f"extra (not part of this model) {', '.join(extra)}")
    if misshapen:
        problems.append(f"wrong shape {'; '.join(misshapen)}")
    if problems:
        raise CheckpointError(f"{path}: does not fit matterport's {model.config.backbone} Mask R-CNN with "
                              f"{model.config.num_classes} classes: {' | '.join(problems)}; nothing was loaded")
    unfilled = sorted(n for n in target if n not in state and not n.endswith("num_batches_tracked"))
    if unfilled:  # a mapping gap on our side, not the file's fault
        raise CheckpointError(f"{path}: no weights in the file map to {', '.join(unfilled)}")
    for name in target:  # only batch norm's step counters (train_bn) have no counterpart in the file
        if name not in state:
            state[name] = torch.zeros(target[name].shape, dtype=target[name].dtype)
    return state


def _keras_shape(torch_shape: tuple) -> tuple:
    """Our expected shape written in the file's (Keras) layout, for error messages."""
    if len(torch_shape) == 4:
        out, inp, kh, kw = torch_shape
        return (kh, kw, inp, out)
    if len(torch_shape) == 2:
        return (torch_shape[1], torch_shape[0])
    return torch_shape
