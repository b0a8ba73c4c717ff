"""Int8 post-training quantisation of an exported model for OpenVINO on the CPU, with NNCF.

`quantize_int8(onnx_path, images)` reads the file `export.to_onnx` wrote as `OpenVinoPredictor` does
(`openvino_backend.read_exported`), runs NNCF's post-training quantisation (`nncf.quantize`, its default
"performance" preset: symmetric int8 weights per output channel, int8 activations per tensor, each range taken
from the activations the calibration images produce) and writes an OpenVINO IR (.xml + .bin) that
`OpenVinoPredictor` runs like the .onnx file. The config and class names travel in the IR's rt_info.

Calibration: each image goes through `openvino_backend.graph_inputs`, the very preprocessing the predictor uses
(resize, normalise, pad), with the config's detection threshold. No labels are needed; a few hundred images of
the kind the model will see are enough (NNCF's own default is 300).

What is quantised (`QUANTIZED_SCOPE`): the layers of the backbone, the FPN, the RPN head, the box head and the
mask head, the convolutions and matrix products that hold almost all of the arithmetic. Left in floating point:
the geometry between them (the proposal layer, the pyramid level assignment and ROIAlign, the detection layer's
decoding and NMS). With no scope NNCF would also quantise inputs of that geometry: box widths and heights before
`sqrt(w * h)` picks an ROI's pyramid level, the ROIAlign outputs, 8 bits for coordinates in pixels.
`BACKBONE_SCOPE` keeps the heads in floating point too. Measured on an AMD EPYC (AVX-512 VNNI, 2 threads,
benchmarks/precision.py), ResNet-50 FPN at 800x1066, 100 detections: float32 2.55 s, int8 with the heads 0.94 s,
int8 without them 1.34 s; the heads' share is large because the mask head's four 3x3 convolutions run on every
detection.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, DataError, require_optional
from .preprocess import to_image_tensors

INT8_SUFFIX = ".int8.xml"  # model.onnx -> model.int8.xml (+ model.int8.bin)
DEFAULT_CALIBRATION_IMAGES = 300  # NNCF's default subset_size
# Node names the ONNX exporter gives the modules' layers ("/backbone/fpn/...", "/rpn/head/...", "/box_head/...");
# every node that matches none of the prefixes stays in floating point.
QUANTIZED_SCOPE = ("/backbone/", "/rpn/", "/box_head/", "/mask_head/")
BACKBONE_SCOPE = ("/backbone/", "/rpn/")  # the heads in floating point as well


def _require(module: str):
    return require_optional(module, needed_for="int8 quantisation needs the optional packages nncf and openvino",
                            extra="int8")


def require_nncf() -> None:
    """Raise MissingDependencyError, naming the extra, unless nncf and openvino import."""
    _require("openvino")
    _require("nncf")


def _quiet_nncf():
    """nncf, with its per-node INFO lines (hundreds of "Not adding activation input quantizer ...") off."""
    nncf = _require("nncf")
    nncf.set_log_level(logging.WARNING)
    return nncf


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def int8_path(onnx_path) -> Path:
    """Where `maskrcnn export --int8` writes the IR beside the ONNX file: model.onnx -> model.int8.xml."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + INT8_SUFFIX)


def quantize_int8(onnx_path, images: Sequence, out=None, *, scope: tuple[str, ...] | None = QUANTIZED_SCOPE,
                  report=print) -> Path:
    """Quantise the exported model `onnx_path` to int8, calibrated on `images`; write the IR to `out` (default
    `int8_path(onnx_path)`, the .bin beside it) and return its path.

    images: a sequence of images ((H, W, 3) uint8 arrays or (3, H, W) tensors in [0, 1]), each indexed once per
        calibration pass, so a lazy sequence (`CalibrationImages`) keeps only one image in memory.
    scope: name prefixes of the nodes to quantise (module docstring); None: whatever NNCF's preset quantises.
    """
    openvino, nncf = _require("openvino"), _quiet_nncf()
    from .config import Config
    from .layout import build_preprocessor
    from .openvino_backend import QUANTIZATION_KEY, graph_inputs, read_exported

    onnx_path = Path(onnx_path)
    out = int8_path(onnx_path) if out is None else Path(out)
    if out.suffix.lower() != ".xml":
        raise ConfigError(f"{out}: the int8 model is an OpenVINO IR; give a path ending in .xml (its .bin goes beside it)")
    if len(images) == 0:
        raise DataError("no calibration images: int8 quantisation needs a few hundred images like those the model will see")
    model, metadata = read_exported(onnx_path, openvino.Core())
    config = Config.from_dict(json.loads(metadata["maskrcnn.config"]))
    preprocessor = build_preprocessor(config)
    threshold = config.detection_min_confidence

    def inputs(image) -> dict:
        return graph_inputs(preprocessor, to_image_tensors([image])[0], threshold)[0]

    options = {}
    if scope is not None:
        names = [op.get_friendly_name() for op in model.get_ops()]
        unmatched = [prefix for prefix in scope if not any(name.startswith(prefix) for name in names)]
        if unmatched:  # the exporter named the layers otherwise: quantising would silently leave them out
            raise ConfigError(f"{onnx_path}: no node of the graph is named {', '.join(unmatched)}...; "
                              "export it again with this version of maskrcnn")
        # nncf matches each pattern at the start of a node's name: everything outside the scope is ignored.
        outside = "(?!" + "|".join(re.escape(prefix) for prefix in scope) + ")"
        options["ignored_scope"] = nncf.IgnoredScope(patterns=[outside], validate=False)
    report(f"quantising {onnx_path} to int8 on {len(images)} calibration images")
    # nncf looks for torch's C++ extension toolchain on the way, and torch says "No CUDA runtime is found" on a CPU.
    with _logger_level("torch.utils.cpp_extension", logging.ERROR):
        quantized = nncf.quantize(model, nncf.Dataset(images, inputs), subset_size=len(images), **options)
    for key, value in {**metadata, QUANTIZATION_KEY: "int8"}.items():
        if key.startswith("maskrcnn."):
            quantized.set_rt_info(value, key.split("."))
    _save_ir(openvino, quantized, out)
    report(f"wrote {out} and {out.with_suffix('.bin')}")
    return out


def _save_ir(openvino, model, out: Path) -> None:
    """Write the IR under temporary names and rename, the .bin first: a reader never sees a half-written file.
    The weights left in floating point stay float32 (save_model would halve them to float16 by default)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".xml", prefix=f".{out.stem}.", dir=out.parent)
    os.close(fd)
    temporary = Path(temporary)
    try:
        openvino.save_model(model, str(temporary), compress_to_fp16=False)
        os.replace(temporary.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(temporary, out)
    finally:
        for leftover in (temporary, temporary.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)


class CalibrationImages(Sequence):
    """`count` images spread evenly over a data set spec (FORMAT:PATHS) or over image files and folders; each is
    read when indexed, as (H, W, 3) uint8 RGB. Errors name the spec, folder or file."""

    def __init__(self, source: str, count: int = DEFAULT_CALIBRATION_IMAGES):
        from .data.spec import ACCEPTED_FORMS, load_dataset_spec

        if count < 1:
            raise ConfigError(f"the number of calibration images must be at least 1, got {count}")
        self.source = str(source)
        formats = {form.partition(":")[0] for form in ACCEPTED_FORMS}
        if self.source.partition(":")[0].lower() in formats:
            self.dataset = load_dataset_spec(self.source, allow_empty=True)
            total = len(self.dataset)
        else:
            self.dataset = None
            self.files = _image_files(Path(self.source))
            total = len(self.files)
        if total == 0:
            raise DataError(f"calibration data {self.source}: no images in it")
        # every (total / count)-th image, so that a data set sorted by scene or class is sampled across
        self.indices = [i * total // count for i in range(count)] if total > count else list(range(total))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        from .data.images import read_image

        index = self.indices[position]
        if self.dataset is not None:
            return self.dataset.load_image(index)
        return read_image(self.files[index])


def _image_files(path: Path) -> list[Path]:
    from .data.images import IMAGE_SUFFIXES, image_files_in

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"calibration data {path}: no such file or folder; give a folder of images or a data set "
                        f"spec (FORMAT:PATHS, e.g. coco:train.json)")
    files = image_files_in(path)
    if not files:
        raise DataError(f"calibration data {path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return files
