"""Inference through OpenVINO on the CPU: the ONNX file `export.to_onnx` writes, with the same pre- and
post-processing as `MaskRCNN.predict` and `export.OnnxPredictor`.

OpenVINO reads the ONNX graph itself (`Core.read_model`), keeps its dynamic image size, and compiles it for the
CPU (`Core.compile_model`). The config and class names come from the file's metadata_props.

One rewrite before OpenVINO sees the graph (`inline_empty_guards`): torchvision's `batched_nms` is scripted,
and its `if boxes.numel() == 0: return torch.empty((0,))` exports as an ONNX `If` whose then-branch is an empty
constant. OpenVINO (2026.4) returns a one-element tensor of uninitialised memory from such an `If`, so an image
with no candidate above the threshold came back with one garbage detection. The else-branch computes the same
empty result from empty inputs, so the `If` is replaced by its else-branch; onnxruntime keeps the file as written.

Precision (`INFERENCE_PRECISION_HINT`): "f32" by default, which the parity tests hold to PyTorch's detections;
"bf16" runs convolutions and matrix products in bfloat16 on CPUs whose kernels support it (AVX-512 BF16 or AMX;
OpenVINO lists "BF16" among the CPU's OPTIMIZATION_CAPABILITIES), faster there but with scores that differ from
float32 in the third digit, so ties in ranking and counts near a threshold may differ.

Int8: the file may also be the OpenVINO IR (.xml + .bin) that `quantize.quantize_int8` writes from the .onnx file
(`maskrcnn export --int8`), its layers quantised to int8 and the rest in floating point, where `precision` applies.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .errors import CheckpointError, ConfigError, MissingDependencyError, require_optional
from .layout import build_preprocessor, layout_of
from .preprocess import ImageBatch, to_image_tensors
from .structures import Detections

PRECISIONS = {"f32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's INFERENCE_PRECISION_HINT
_OUTPUT_NAMES = ("boxes", "labels", "scores", "mask_probs")  # export.OUTPUT_NAMES, in the graph's order
_METADATA = ("maskrcnn.config", "maskrcnn.class_names")
QUANTIZATION_KEY = "maskrcnn.quantization"  # "int8" in the rt_info of an IR written by quantize.quantize_int8


def _require(module: str):
    """Import openvino or onnx, or say which extra installs them."""
    return require_optional(module, needed_for="OpenVINO inference needs the optional packages openvino and onnx",
                            extra="openvino")


def inline_empty_guards(graph) -> int:
    """Replace each top-level `If` whose then-branch is one empty constant by its else-branch (in place, on an
    onnx GraphProto); returns how many were replaced. See the module docstring for why."""
    from onnx import helper

    nodes, replaced = [], 0
    for node in graph.node:
        branches = {attribute.name: attribute.g for attribute in node.attribute} if node.op_type == "If" else {}
        then = branches.get("then_branch")
        if then is not None and len(then.node) == 1 and then.node[0].op_type == "Constant" \
                and any(attribute.t.dims and 0 in attribute.t.dims for attribute in then.node[0].attribute):
            otherwise = branches["else_branch"]
            nodes.extend(otherwise.node)  # its names are unique in the whole graph, and it reads outer values
            nodes.extend(helper.make_node("Identity", [inner.name], [outer])
                         for outer, inner in zip(node.output, otherwise.output))
            replaced += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return replaced


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 kernels on this CPU (False without openvino)."""
    try:
        openvino = _require("openvino")
    except MissingDependencyError:
        return False
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def read_exported(path: Path, core) -> tuple[object, dict]:
    """(the OpenVINO model, its "maskrcnn.*" metadata) of an exported file: a .onnx from `export.to_onnx` (read with
    the `inline_empty_guards` rewrite) or an OpenVINO IR .xml from `quantize.quantize_int8` (metadata in rt_info)."""
    openvino = _require("openvino")
    if path.suffix.lower() == ".xml":
        if not path.is_file():
            raise CheckpointError(f"{path}: no such OpenVINO IR file")
        try:
            model = core.read_model(str(path))
        except Exception as error:  # OpenVINO raises a generic RuntimeError for unreadable IR (or a missing .bin)
            raise CheckpointError(f"{path}: not an OpenVINO IR (.xml with its .bin) that OpenVINO can read: {error}") from error
        metadata = {key: model.get_rt_info(key.split(".")).astype(str)
                    for key in (*_METADATA, QUANTIZATION_KEY) if model.has_rt_info(key.split("."))}
        _check_metadata(path, metadata, "maskrcnn.quantize.quantize_int8")
        return model, metadata
    onnx = _require("onnx")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as error:  # onnx raises protobuf's DecodeError, among others, for unreadable files
        raise CheckpointError(f"{path}: not an ONNX file OpenVINO can read: {error}") from error
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    _check_metadata(path, metadata, "maskrcnn.export.to_onnx")
    inline_empty_guards(proto.graph)
    try:
        model = core.read_model(proto.SerializeToString(), openvino.Tensor(np.empty(0, dtype=np.uint8)))
    except Exception as error:  # OpenVINO raises a generic RuntimeError for graphs it cannot convert
        raise CheckpointError(f"{path}: OpenVINO cannot read this graph: {error}") from error
    return model, metadata


def _check_metadata(path: Path, metadata: dict, writer: str) -> None:
    missing = [key for key in _METADATA if key not in metadata]
    if missing:
        raise CheckpointError(f"{path}: not exported by {writer} (metadata {', '.join(missing)} missing)")


def graph_inputs(preprocessor, image: torch.Tensor, min_confidence: float) -> tuple[dict, ImageBatch]:
    """(the graph's inputs by name, the ImageBatch) for one image (3, H, W) in [0, 1]: resized, normalised and
    padded by `preprocessor` (the config's, `layout.build_preprocessor`). Prediction and int8 calibration both
    build their inputs here, so the quantiser sees exactly what inference will."""
    batch = preprocessor([image.to(device="cpu", dtype=torch.float32)])  # (1, 3, Hp, Wp)
    return {
        "image": batch.tensor[0].numpy(),  # (3, Hp, Wp) float32
        "window": np.asarray(batch.windows[0], dtype=np.int64),  # (4,) y1 x1 y2 x2
        "min_confidence": np.asarray(min_confidence, dtype=np.float32),  # ()
    }, batch


class OpenVinoPredictor:
    """Runs an exported model through OpenVINO on the CPU: `predict(images) -> list[Detections]`, as
    `MaskRCNN.predict` and `export.OnnxPredictor`.

    path: a .onnx file written by `export.to_onnx`, or an int8 OpenVINO IR (.xml) written by
        `quantize.quantize_int8` (`maskrcnn export --int8`); `int8` says which.
    threads: OpenVINO's inference threads (INFERENCE_NUM_THREADS; None: its default, one per core).
    precision: "f32" (default) or "bf16" (CPUs with bfloat16 kernels only; a ConfigError elsewhere): the
        precision of the floating-point operations; in an int8 IR, those that were left unquantised.
    """

    def __init__(self, path, *, threads: int | None = None, precision: str = "f32"):
        openvino = _require("openvino")
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        core = openvino.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ConfigError("OpenVINO precision bf16 needs a CPU with bfloat16 kernels (AVX-512 BF16 or AMX); "
                              "this CPU has none: use precision f32")
        self.path = Path(path)
        model, metadata = read_exported(self.path, core)
        self.config = Config.from_dict(json.loads(metadata["maskrcnn.config"]))
        self.class_names: list[str] = json.loads(metadata["maskrcnn.class_names"])
        self.int8 = metadata.get(QUANTIZATION_KEY) == "int8"  # an IR from quantize.quantize_int8
        self.preprocessor = build_preprocessor(self.config)
        self.frame = layout_of(self.config).frame
        self.precision = precision
        properties = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", properties)
        self._requests = threading.local()  # one infer request per calling thread: a request runs one inference at a time
        self.outputs = [self.compiled.output(name) for name in _OUTPUT_NAMES]

    def run(self, image: np.ndarray, window: np.ndarray, min_confidence: float) -> list[np.ndarray]:
        """The graph on one preprocessed image (3, Hp, Wp) float32: boxes, labels, scores, mask_probs (export's outputs)."""
        if not hasattr(self._requests, "request"):
            self._requests.request = self.compiled.create_infer_request()
        result = self._requests.request.infer({
            "image": image, "window": window, "min_confidence": np.asarray(min_confidence, dtype=np.float32),
        })
        return [np.array(result[output]) for output in self.outputs]  # copies: the request reuses its buffers

    def predict(self, images, *, score_threshold: float | None = None) -> list[Detections]:
        """Detections for each image (list, numpy (H, W, 3) uint8 or tensors (3, H, W) in [0, 1])."""
        threshold = self.config.detection_min_confidence if score_threshold is None else score_threshold
        results = []
        for tensor in to_image_tensors(images):
            inputs, batch = graph_inputs(self.preprocessor, tensor, threshold)
            boxes, labels, scores, mask_probs = self.run(inputs["image"], inputs["window"], threshold)
            results.append(self.frame.to_detections(
                torch.from_numpy(boxes), torch.from_numpy(labels), torch.from_numpy(scores), torch.from_numpy(mask_probs),
                batch.windows[0], batch.padded_size, batch.original_sizes[0], self.config.mask_threshold,
            ))
        return results
