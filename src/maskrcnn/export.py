"""Export to ONNX, and inference through onnxruntime with the same pre- and post-processing as PyTorch.

The ONNX graph holds the network only: backbone, RPN, proposals, ROIAlign, heads and the detection layer,
for ONE image that `Preprocessor` has already normalised, resized and padded. Pre-processing
(`Preprocessor`) and post-processing (`to_detections`: boxes back to the original image, masks pasted)
run in Python around it, the very functions `MaskRCNN.predict` calls, so the two paths cannot drift.

Graph inputs:
    image           (3, H, W) float32  a preprocessed image (`ImageBatch.tensor[i]`); H and W are dynamic
    window          (4,) int64         y1 x1 y2 x2: where the resized image lies inside `image`
    min_confidence  () float32         detections must score above it (the config's detection_min_confidence,
                                        or predict's score_threshold)
Graph outputs (D: detections, dynamic, at most detection_max_instances):
    boxes           (D, 4) float32     x1 y1 x2 y2 in the pixels of `image` (the padded frame)
    labels          (D,) int64         1..num_classes-1
    scores          (D,) float32       descending
    mask_probs      (D, M, M) float32  sigmoid mask of each detection's class, M = mask_shape (28)

The config and class names travel in the file's metadata_props ("maskrcnn.config", "maskrcnn.class_names",
JSON), so `OnnxPredictor` rebuilds the pre- and post-processing from the .onnx file alone.

Exporter: the TorchScript-based one (`torch.onnx.export(..., dynamo=False)`). The dynamo exporter stops on
data-dependent sizes (the number of boxes left after thresholding and NMS): torchvision's `batched_nms`
branches on `boxes.numel() > 4000` and on `boxes.numel() == 0`, and it needs `onnxscript`, which the
`onnx` extra does not install. Tracing records shapes as graph values (`tensor.shape[i]` is a traced
tensor), so the graph follows the input's size; the few places where the PyTorch code takes a Python
decision on a size (per-level top-k counts, skipping an empty pyramid level) check `torch.jit.is_tracing()`.
The graph is `MaskRCNN.find_instances`, the same code `predict` runs.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .config import Config
from .errors import require_optional
from .files import atomic_write
from .layout import build_preprocessor, layout_of
from .preprocess import to_image_tensors
from .structures import Detections

INPUT_NAMES = ("image", "window", "min_confidence")
OUTPUT_NAMES = ("boxes", "labels", "scores", "mask_probs")
DEFAULT_OPSET = 17  # RoiAlign's half-pixel mode needs 16; 17 is what current onnxruntime builds all support
FORMAT_VERSION = "1"


def _require(module: str):
    """Import onnx or onnxruntime, or say which extra installs them."""
    return require_optional(module, needed_for="ONNX export and onnxruntime inference need the optional packages onnx "
                            "and onnxruntime", extra="onnx")


class InferenceGraph(nn.Module):
    """What the ONNX file computes: `MaskRCNN.find_instances` for one preprocessed image, with the window and
    the score threshold as graph inputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, window: Tensor, min_confidence: Tensor):
        bounds = window.to(image.dtype)
        window_values = (bounds[0], bounds[1], bounds[2], bounds[3])  # y1 x1 y2 x2 as graph values, not constants
        [(found, mask_probs)] = self.model.find_instances(image[None], [window_values], min_confidence)
        return found.boxes, found.labels, found.scores, mask_probs  # (D, 4), (D,), (D,), (D, M, M)


def _example_input(graph: InferenceGraph) -> tuple[Tensor, Tensor, Tensor]:
    """A preprocessed landscape image to trace with, and a min_confidence that lets a few detections through.

    At least one candidate must pass the threshold while tracing (torchvision's batched_nms returns early on an
    empty set, which tracing would freeze into the graph); only a few, so that the mask head is traced cheaply.
    """
    c = graph.model.config
    height = max(c.image_min_dim, 64)
    width = height * 4 // 3 + 5  # not square, and not a multiple of the size divisor
    generator = torch.Generator().manual_seed(0)
    batch = graph.model.preprocessor([torch.rand(3, height, width, generator=generator)])
    image, window = batch.tensor[0], torch.tensor(batch.windows[0], dtype=torch.int64)
    _, _, scores, _ = graph(image, window, torch.tensor(0.0))
    kth = float(scores[min(3, len(scores)) - 1]) if len(scores) else 0.0
    return image, window, torch.tensor(max(kth - 1e-6, 0.0))


def to_onnx(model, path, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (a MaskRCNN) to an ONNX file at `path`; see the module docstring for the graph.

    The model is exported in float32 on the CPU (a copy is made when it is elsewhere); its config and class
    names are stored in the file's metadata. Returns the path.
    """
    onnx = _require("onnx")

    path = Path(path)
    if next(model.parameters()).dtype != torch.float32 or next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).float().cpu()
    was_training = model.training
    model.eval()
    graph = InferenceGraph(model)
    try:
        with torch.no_grad():
            example = _example_input(graph)
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing warns at each Python decision on a traced value; the ones left (the window offset test in
            # clip_to_window, a box count compared with limits) hold for every input of the same config.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # Advanced indexing exports as Gather, wrong only for negative indices; ours come from where, topk and
            # arange, never negative (the parity tests run every exported graph against PyTorch).
            warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
            # The TorchScript-based exporter is chosen on purpose (see the module docstring), and torchvision's ops
            # script themselves inside it: both deprecation notices are about torch's roadmap, not this graph.
            warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated")
            warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
            torch.onnx.export(
                graph, example, buffer,
                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    "image": {1: "height", 2: "width"},
                    "boxes": {0: "detections"}, "labels": {0: "detections"},
                    "scores": {0: "detections"}, "mask_probs": {0: "detections"},
                },
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {
        "maskrcnn.format": FORMAT_VERSION,
        "maskrcnn.config": json.dumps(model.config.to_dict()),
        "maskrcnn.class_names": json.dumps(list(model.class_names)),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "maskrcnn Mask R-CNN: one preprocessed image -> boxes, labels, scores, 28x28 mask probabilities"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda file: file.write(proto.SerializeToString()))  # a reader never sees half a file


class OnnxPredictor:
    """Runs an exported model through onnxruntime: `predict(images) -> list[Detections]`, as `MaskRCNN.predict`.

    threads: onnxruntime's intra-op threads (None: its default, one per core).
    """

    def __init__(self, path, *, threads: int | None = None, providers: list[str] | None = None):
        ort = _require("onnxruntime")
        from .errors import CheckpointError

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        # Idle intra-op threads sleep instead of spinning: onnxruntime's default spin-wait between operators burns
        # the cores the next operator needs on a shared or busy CPU. Measured on a 2-core AMD EPYC (AVX-512) under
        # load, ResNet-50 at 800 px, alternating: 13.1 s with spinning off against 18.4 s with it (PyTorch 23.7 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own, unexported exception types for unreadable files
            raise CheckpointError(f"{self.path}: onnxruntime cannot load this file: {error}") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in ("maskrcnn.config", "maskrcnn.class_names") if key not in metadata]
        if missing:
            raise CheckpointError(f"{self.path}: not exported by maskrcnn.export.to_onnx (metadata {', '.join(missing)} missing)")
        self.config = Config.from_dict(json.loads(metadata["maskrcnn.config"]))
        self.class_names: list[str] = json.loads(metadata["maskrcnn.class_names"])
        self.preprocessor = build_preprocessor(self.config)
        self.frame = layout_of(self.config).frame

    def predict(self, images, *, score_threshold: float | None = None) -> list[Detections]:
        """Detections for each image (list, numpy (H, W, 3) uint8 or tensors (3, H, W) in [0, 1])."""
        threshold = self.config.detection_min_confidence if score_threshold is None else score_threshold
        results = []
        for tensor in to_image_tensors(images):
            batch = self.preprocessor([tensor.to(device="cpu", dtype=torch.float32)])  # (1, 3, Hp, Wp)
            boxes, labels, scores, mask_probs = self.session.run(list(OUTPUT_NAMES), {
                "image": batch.tensor[0].numpy(),
                "window": np.asarray(batch.windows[0], dtype=np.int64),
                "min_confidence": np.asarray(threshold, dtype=np.float32),
            })
            results.append(self.frame.to_detections(
                torch.from_numpy(boxes), torch.from_numpy(labels), torch.from_numpy(scores), torch.from_numpy(mask_probs),
                batch.windows[0], batch.padded_size, batch.original_sizes[0], self.config.mask_threshold,
            ))
        return results


def __getattr__(name: str):
    """`export.OpenVinoPredictor`, beside OnnxPredictor, lives in openvino_backend.py and is imported on first use."""
    if name == "OpenVinoPredictor":
        from .openvino_backend import OpenVinoPredictor

        return OpenVinoPredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
