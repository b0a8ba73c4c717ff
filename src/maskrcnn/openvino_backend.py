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
from .preprocess import to_image_tensors
from .structures import Detections

PRECISIONS = {"f32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's INFERENCE_PRECISION_HINT
_OUTPUT_NAMES = ("boxes", "labels", "scores", "mask_probs")  # export.OUTPUT_NAMES, in the graph's order
_METADATA = ("maskrcnn.config", "maskrcnn.class_names")


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


class OpenVinoPredictor:
    """Runs an exported model through OpenVINO on the CPU: `predict(images) -> list[Detections]`, as
    `MaskRCNN.predict` and `export.OnnxPredictor`.

    path: a .onnx file written by `export.to_onnx`.
    threads: OpenVINO's inference threads (INFERENCE_NUM_THREADS; None: its default, one per core).
    precision: "f32" (default) or "bf16" (CPUs with bfloat16 kernels only; a ConfigError elsewhere).
    """

    def __init__(self, path, *, threads: int | None = None, precision: str = "f32"):
        openvino, onnx = _require("openvino"), _require("onnx")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        core = openvino.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ConfigError("OpenVINO precision bf16 needs a CPU with bfloat16 kernels (AVX-512 BF16 or AMX); "
                              "this CPU has none: use precision f32")
        try:
            proto = onnx.load(str(self.path))
        except Exception as error:  # onnx raises protobuf's DecodeError, among others, for unreadable files
            raise CheckpointError(f"{self.path}: not an ONNX file OpenVINO can read: {error}") from error
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        missing = [key for key in _METADATA if key not in metadata]
        if missing:
            raise CheckpointError(f"{self.path}: not exported by maskrcnn.export.to_onnx (metadata {', '.join(missing)} missing)")
        self.config = Config.from_dict(json.loads(metadata["maskrcnn.config"]))
        self.class_names: list[str] = json.loads(metadata["maskrcnn.class_names"])
        inline_empty_guards(proto.graph)
        try:
            model = core.read_model(proto.SerializeToString(), openvino.Tensor(np.empty(0, dtype=np.uint8)))
        except Exception as error:  # OpenVINO raises a generic RuntimeError for graphs it cannot convert
            raise CheckpointError(f"{self.path}: OpenVINO cannot read this graph: {error}") from error
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
            batch = self.preprocessor([tensor.to(device="cpu", dtype=torch.float32)])  # (1, 3, Hp, Wp)
            boxes, labels, scores, mask_probs = self.run(
                batch.tensor[0].numpy(), np.asarray(batch.windows[0], dtype=np.int64), threshold)
            results.append(self.frame.to_detections(
                torch.from_numpy(boxes), torch.from_numpy(labels), torch.from_numpy(scores), torch.from_numpy(mask_probs),
                batch.windows[0], batch.padded_size, batch.original_sizes[0], self.config.mask_threshold,
            ))
        return results
