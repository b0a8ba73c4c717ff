"""Int8 post-training quantisation (`quantize.quantize_int8`, `maskrcnn export --int8`): the IR it writes loads and
predicts through `OpenVinoPredictor` like the .onnx file; on a model fit to a few shapes images its detections are
float32's (each object float32 is sure of found, same label, and the boxes close to float32's); bad calibration
data is refused naming the path.
"""
import sys

import pytest
import torch

pytestmark = pytest.mark.own_process  # OpenVINO beside the suite's onnxruntime: see conftest.py
pytest.importorskip("openvino")
pytest.importorskip("onnx")
pytest.importorskip("nncf")

from torchvision.ops import box_iou  # noqa: E402

from maskrcnn import Config, MaskRCNN, save  # noqa: E402
from maskrcnn.cli import main  # noqa: E402
from maskrcnn.data import ShapesDataset  # noqa: E402
from maskrcnn.errors import CheckpointError, ConfigError, DataError, MissingDependencyError  # noqa: E402
from maskrcnn.export import OpenVinoPredictor, to_onnx  # noqa: E402
from maskrcnn.quantize import CalibrationImages, int8_path, quantize_int8  # noqa: E402

SIZE = 64  # the demo preset at 64 px: a few seconds a fit
FIT_IMAGES, FIT_STEPS = 4, 100  # 100 steps: scores 0.9-0.99 on the shapes, in about 15 s
SCORE, CONFIDENT = 0.5, 0.8


def fit(steps: int = FIT_STEPS) -> tuple[MaskRCNN, ShapesDataset]:
    """A demo-preset model fit (AdamW, all layers) to FIT_IMAGES shapes images: decisive scores on them, as a
    trained model's, which a random model (scores all alike, near ties everywhere) lacks."""
    torch.manual_seed(0)
    data = ShapesDataset(FIT_IMAGES, SIZE, SIZE, seed=1)
    model = MaskRCNN(Config.demo(image_min_dim=SIZE, image_max_dim=SIZE), class_names=data.class_names)
    images, targets = zip(*(data[i] for i in range(len(data))))
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        loss = sum(model(list(images), list(targets)).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), data


@pytest.fixture(scope="module")
def quantised(tmp_path_factory):
    """(fitted model, its data, float32 predictor, int8 predictor, the .onnx path)."""
    folder = tmp_path_factory.mktemp("int8")
    model, data = fit()
    onnx_path = to_onnx(model, folder / "model.onnx")
    calibration = ShapesDataset(16, SIZE, SIZE, seed=2)  # other images than the ones compared
    out = quantize_int8(onnx_path, [calibration.load_image(i) for i in range(len(calibration))], report=lambda line: None)
    assert out == folder / "model.int8.xml" and out.with_suffix(".bin").is_file()
    return model, data, OpenVinoPredictor(onnx_path, threads=2), OpenVinoPredictor(out, threads=2), onnx_path


def test_the_ir_predicts_through_the_same_interface(quantised):
    model, data, f32, int8, _ = quantised
    assert int8.int8 and not f32.int8
    assert int8.config == model.config and int8.class_names == model.class_names
    arrays = [data.load_image(i) for i in range(2)]  # (H, W, 3) uint8, a list of two
    for got in int8.predict(arrays):
        assert got.boxes.dtype == torch.float32 and got.labels.dtype == torch.int64
        assert got.masks.shape[1:] == (SIZE, SIZE) and got.masks.dtype == torch.bool
        assert bool((got.scores[:-1] >= got.scores[1:]).all())
    nothing = int8.predict(arrays[:1], score_threshold=1.0)[0]  # no score exceeds 1
    assert nothing.boxes.shape == (0, 4) and nothing.masks.shape == (0, SIZE, SIZE)


def best_for(target_box, label: int, found):
    """The highest-scoring detection of `label` whose box overlaps the ground truth box (4,) at IoU >= 0.5:
    (score, box (4,)), or None."""
    hits = (found.labels == label) & (box_iou(target_box[None], found.boxes)[0] >= 0.5)
    if not bool(hits.any()):
        return None
    first = int(hits.nonzero()[0])  # scores are in descending order
    return float(found.scores[first]), found.boxes[first]


def test_detections_match_float32_on_a_fitted_model(quantised):
    """int8 may move scores and boxes a little, never what is found: each object that float32 is sure of (its best
    detection scores >= 0.8) int8 finds too (best >= 0.5, same label, box at IoU >= 0.5 with the object's, as
    mAP@0.5 counts it), and its boxes are float32's within a few pixels: mean IoU of the two best boxes > 0.9.
    The mean, not the worst box: on these 64 px images a 3 px shift of one edge of a 28 px shape is IoU 0.8, which
    int8's box deltas reach on one object or two depending on the CPU's int8 kernels (AMX or VNNI).
    The best detection of each object, not every one: duplicates near the threshold may rank differently."""
    _, data, f32, int8, _ = quantised
    objects = 0
    overlaps = []  # IoU of int8's best box with float32's, per object float32 is sure of
    for i in range(len(data)):
        image, target = data.load_image(i), data.load_target(i)
        expected, got = f32.predict([image])[0], int8.predict([image])[0]
        for box, label in zip(target["boxes"], target["labels"].tolist()):
            objects += 1
            ours = best_for(box, label, expected)
            if ours is None or ours[0] < CONFIDENT:
                continue
            theirs = best_for(box, label, got)
            assert theirs is not None and theirs[0] >= SCORE, f"image {i}: {label} at {box.tolist()} not found in int8"
            overlaps.append(box_iou(ours[1][None], theirs[1][None]).item())
    assert len(overlaps) >= 0.75 * objects  # the fit finds the shapes: the comparison is not vacuous
    mean = sum(overlaps) / len(overlaps)
    assert mean > 0.9, f"int8 boxes against float32's: mean IoU {mean:.3f}, each {[round(v, 3) for v in overlaps]}"


def test_cli_export_writes_the_onnx_file_and_the_int8_ir(quantised, tmp_path):
    model, _, _, _, _ = quantised
    save(model, tmp_path / "model.pt")
    out = tmp_path / "export" / "model.onnx"
    assert main(["export", "--weights", str(tmp_path / "model.pt"), "--out", str(out), "--int8",
                 "--calibration-data", f"shapes:8:{SIZE}", "--calibration-images", "4"]) == 0
    assert out.is_file() and int8_path(out).is_file() and int8_path(out).with_suffix(".bin").is_file()
    assert OpenVinoPredictor(int8_path(out)).int8
    assert not list(out.parent.glob(".*"))  # no temporary file left behind
    assert main(["export", "--weights", str(tmp_path / "model.pt"), "--out", str(out), "--int8"]) == 2  # no images


def test_bad_calibration_data_names_the_path(quantised, tmp_path):
    _, _, _, _, onnx_path = quantised
    with pytest.raises(DataError, match="no such file or folder") as caught:
        CalibrationImages(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images"):
        CalibrationImages(tmp_path / "empty")
    with pytest.raises(DataError, match="annotation file not found"):
        CalibrationImages(f"coco:{tmp_path / 'absent.json'}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken/bad\.png: cannot read the image"):
        quantize_int8(onnx_path, CalibrationImages(tmp_path / "broken"), tmp_path / "never.xml", report=lambda line: None)
    assert not (tmp_path / "never.xml").exists()


def test_wrong_arguments_are_refused(quantised, tmp_path):
    _, data, _, _, onnx_path = quantised
    with pytest.raises(ConfigError, match=r"\.xml"):
        quantize_int8(onnx_path, [data.load_image(0)], tmp_path / "model.int8.onnx")
    with pytest.raises(DataError, match="no calibration images"):
        quantize_int8(onnx_path, [], tmp_path / "model.int8.xml")
    with pytest.raises(CheckpointError, match="no such OpenVINO IR file"):
        OpenVinoPredictor(tmp_path / "absent.xml")
    (tmp_path / "junk.xml").write_text("<not-a-model/>")
    with pytest.raises(CheckpointError, match="not an OpenVINO IR"):
        OpenVinoPredictor(tmp_path / "junk.xml")


def test_missing_nncf_names_the_extra(monkeypatch, quantised):
    _, data, _, _, onnx_path = quantised
    monkeypatch.setitem(sys.modules, "nncf", None)  # makes `import nncf` raise ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "maskrcnn\[int8\]"'):
        quantize_int8(onnx_path, [data.load_image(0)])


def test_a_scope_that_names_no_layer_is_refused(quantised):
    onnx_path = quantised[4]
    with pytest.raises(ConfigError, match="/renamed/"):
        quantize_int8(onnx_path, [torch.zeros(3, 64, 64)], scope=("/backbone/", "/renamed/"), report=lambda line: None)
