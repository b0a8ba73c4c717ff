"""OpenVINO inference (`export.OpenVinoPredictor`) of the file `export.to_onnx` writes: in float32 its detections
must equal PyTorch's (`MaskRCNN.predict`, same weights) with tests/test_export.py's tolerances, on image sizes
that differ from the one traced at export (landscape, portrait, odd sides).
"""
import sys

import pytest
import torch

pytestmark = pytest.mark.own_process  # OpenVINO beside the suite's onnxruntime: see conftest.py
pytest.importorskip("openvino")
pytest.importorskip("onnx")  # to_onnx writes the file with it

from test_export import SIZES, assert_same, exported_demo, exported_small_torchvision, images  # noqa: E402  (the same checks as onnxruntime's)

from maskrcnn import Config, MaskRCNN  # noqa: E402
from maskrcnn.errors import CheckpointError, ConfigError, MissingDependencyError  # noqa: E402
from maskrcnn.export import OpenVinoPredictor, to_onnx  # noqa: E402
from maskrcnn.openvino_backend import cpu_supports_bf16  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return exported_demo(tmp_path_factory.mktemp("demo"), OpenVinoPredictor)


@pytest.fixture(scope="module")
def torchvision_preset(tmp_path_factory):
    return exported_small_torchvision(tmp_path_factory.mktemp("tv"), OpenVinoPredictor)


@pytest.mark.parametrize("index", range(len(SIZES)))
def test_demo_preset_same_detections_in_float32(demo, index):
    model, predictor, _ = demo
    image = images(SIZES, seed=10)[index]
    expected = model.predict([image])[0]
    assert len(expected) > 0  # something is found, so the comparison is not vacuous
    assert_same(expected, predictor.predict([image])[0])


def test_torchvision_preset_same_detections_at_threshold_half(torchvision_preset):
    model, predictor = torchvision_preset
    found = 0
    for image in images(SIZES, seed=20):
        expected = model.predict([image], score_threshold=0.5)[0]
        assert_same(expected, predictor.predict([image], score_threshold=0.5)[0])
        found += len(expected)
    assert found > 0


def test_uint8_numpy_input_a_list_of_images_and_the_metadata(demo):
    model, predictor, _ = demo
    assert predictor.config == model.config and predictor.class_names == model.class_names
    assert predictor.precision == "f32"
    arrays = [(image.permute(1, 2, 0) * 255).to(torch.uint8).numpy() for image in images(SIZES[:2], seed=30)]
    for array, got in zip(arrays, predictor.predict(arrays)):
        assert_same(model.predict([array])[0], got)


def test_nothing_found_gives_empty_outputs_of_the_right_shapes(torchvision_preset):
    """OpenVINO once returned one uninitialised detection here (an `If` with an empty constant branch; see
    openvino_backend.inline_empty_guards)."""
    _, predictor = torchvision_preset
    got = predictor.predict([images([(150, 170)], seed=40)[0]], score_threshold=1.0)[0]  # no score exceeds 1
    assert got.boxes.shape == (0, 4) and got.boxes.dtype == torch.float32
    assert got.labels.shape == (0,) and got.labels.dtype == torch.int64
    assert got.scores.shape == (0,) and got.scores.dtype == torch.float32
    assert got.masks.shape == (0, 150, 170) and got.masks.dtype == torch.bool


def test_bf16_where_the_cpu_has_it_else_a_clear_error(demo):
    """bfloat16 is a choice, not held to float32's tolerances: on a CPU with bfloat16 kernels it runs and returns
    well-formed detections; elsewhere it is refused with a message that says to use f32."""
    model, _, path = demo
    image = images(SIZES[:1], seed=10)[0]
    if not cpu_supports_bf16():
        with pytest.raises(ConfigError, match="f32"):
            OpenVinoPredictor(path, precision="bf16")
        return
    predictor = OpenVinoPredictor(path, threads=2, precision="bf16")
    got = predictor.predict([image])[0]
    expected = model.predict([image])[0]
    assert got.masks.shape == expected.masks.shape and got.labels.dtype == torch.int64
    assert bool((got.scores[:-1] >= got.scores[1:]).all())
    assert abs(len(got) - len(expected)) <= max(2, len(expected) // 4)  # near the threshold a few may differ


def test_unknown_precision_missing_file_and_foreign_file_are_refused(demo, tmp_path):
    _, _, path = demo
    with pytest.raises(ConfigError, match="precision"):
        OpenVinoPredictor(path, precision="f16x")
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        OpenVinoPredictor(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not an ONNX file"):
        OpenVinoPredictor(tmp_path / "junk.onnx")


@pytest.mark.parametrize("module", ["openvino", "onnx"])
def test_missing_extra_names_it(monkeypatch, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "maskrcnn\[openvino\]"') as caught:
        OpenVinoPredictor(tmp_path / "model.onnx")
    assert module in str(caught.value)


@pytest.mark.slow
def test_full_size_torchvision_preset(tmp_path):
    """ResNet-50 at 800 px, as torchvision's maskrcnn_resnet50_fpn runs (minutes on a 2-core CPU)."""
    torch.manual_seed(3)
    model = MaskRCNN(Config.torchvision(num_classes=3)).eval()
    predictor = OpenVinoPredictor(to_onnx(model, tmp_path / "full.onnx"), threads=2)
    found = 0
    for image in images([(480, 640), (640, 427), (333, 517)], seed=60):
        expected = model.predict([image], score_threshold=0.5)[0]
        assert_same(expected, predictor.predict([image], score_threshold=0.5)[0])
        found += len(expected)
    assert found > 0
