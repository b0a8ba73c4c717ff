"""`--precision bf16` with the PyTorch backend (bfloat16.py) and the precision choice of backends.py.

The bfloat16 predictor is checked against autocast applied by hand around MaskRCNN.predict (the same numbers),
against float32 (close, and not the same: bfloat16 is in effect), and for what it carries over from the model.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn import Config, MaskRCNN, backends, bfloat16
from maskrcnn.bfloat16 import Bfloat16Predictor
from maskrcnn.cli import main
from maskrcnn.cpu import has_bf16_kernels
from maskrcnn.errors import ConfigError
from maskrcnn.runs import load_predictor

needs_bf16 = pytest.mark.skipif(not has_bf16_kernels(), reason="this CPU has no bfloat16 instructions")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = MaskRCNN(Config.demo(), class_names=["BG", "square", "circle", "triangle"]).eval()
    with torch.no_grad():
        model.box_head.class_logits.weight.mul_(4.0)  # decisive scores, so that something is found
        model.rpn.objectness.weight.mul_(100.0)
    return model


@pytest.fixture(scope="module")
def image():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 120, 160, generator=generator)


@needs_bf16
def test_predict_is_the_model_under_bfloat16_autocast(model, image):
    predictor = Bfloat16Predictor(model)
    got = predictor.predict([image], score_threshold=0.0)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.predict([image], score_threshold=0.0)[0]
    full = model.predict([image], score_threshold=0.0)[0]
    assert len(got) == len(expected) > 0
    assert torch.equal(got.boxes, expected.boxes) and torch.equal(got.scores, expected.scores)
    assert torch.equal(got.masks, expected.masks)
    assert got.boxes.dtype == got.scores.dtype == torch.float32  # decoded in float32, as the model's own
    # bfloat16 is in effect: the scores move, by about what 8 bits of mantissa allow
    n = min(len(full), len(got))
    difference = (got.scores[:n] - full.scores[:n]).abs().max().item()
    assert 0 < difference < 0.05


def test_the_predictor_carries_the_models_names_config_and_categories(model, monkeypatch):
    monkeypatch.setattr(bfloat16, "has_bf16_kernels", lambda: True)
    predictor = Bfloat16Predictor(model)
    assert predictor.config is model.config and predictor.class_names == model.class_names
    assert predictor.categories is getattr(model, "categories", None)


def test_a_cpu_without_bfloat16_instructions_is_refused_with_a_clear_error(model, monkeypatch):
    monkeypatch.setattr(bfloat16, "has_bf16_kernels", lambda: False)
    with pytest.raises(ConfigError, match="bfloat16 instructions.*use precision f32"):
        Bfloat16Predictor(model)


def test_precision_is_checked_against_the_backend(model, tmp_path):
    maskrcnn.save(model, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="unknown precision"):
        backends.build("torch", weights=tmp_path / "model.pt", precision="f16")
    with pytest.raises(ConfigError, match="onnxruntime runs float32 only"):
        backends.build("onnxruntime", onnx=tmp_path / "model.onnx", precision="bf16")
    with pytest.raises(ConfigError, match="auto picks among backends .* float32"):
        backends.load("auto", weights=tmp_path / "model.pt", precision="bf16")
    assert isinstance(load_predictor(tmp_path / "model.pt", precision="f32"), MaskRCNN)


@needs_bf16
def test_maskrcnn_predict_with_precision_bf16(model, tmp_path):
    maskrcnn.save(model, tmp_path / "model.pt")
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "a.png")
    code = main(["predict", "--weights", str(tmp_path / "model.pt"), str(images), "--out", str(tmp_path / "out"),
                 "--precision", "bf16", "--score-threshold", "0", "--no-progress"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.predict([pixels], score_threshold=0.0)[0]
    assert len(results) == len(expected) > 0
    assert np.allclose(sorted(r["score"] for r in results), sorted(expected.scores.tolist()), atol=1e-6)


@needs_bf16
def test_maskrcnn_evaluate_with_precision_bf16_predicts_through_the_bfloat16_predictor(model, tmp_path, monkeypatch):
    maskrcnn.save(model, tmp_path / "model.pt")
    calls = []
    original = Bfloat16Predictor.predict

    def counted(self, images, **kwargs):
        calls.append(len(images))
        return original(self, images, **kwargs)

    monkeypatch.setattr(Bfloat16Predictor, "predict", counted)
    code = main(["evaluate", "--weights", str(tmp_path / "model.pt"), "--data", "shapes:3:64", "--precision", "bf16",
                 "--out", str(tmp_path / "metrics.json"), "--no-progress"])
    assert code == 0 and sum(calls) == 3  # every image through the bfloat16 predictor
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"bbox", "segm"}
