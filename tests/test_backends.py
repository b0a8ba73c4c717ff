"""Backends of `maskrcnn predict` / `maskrcnn evaluate` (backends.py): each one by name, and `auto`, which
measures once per machine and model, keeps the fastest backend that agrees with PyTorch, and reads the cache
afterwards."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn import Config, MaskRCNN, backends
from maskrcnn.errors import ConfigError
from maskrcnn.export import OnnxPredictor, to_onnx
from maskrcnn.runs import evaluate, load_predictor, predict

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    torch.manual_seed(0)
    model = MaskRCNN(Config.demo(), class_names=["BG", "square", "circle", "triangle"]).eval()
    with torch.no_grad():
        model.box_head.class_logits.weight.mul_(4.0)  # decisive scores, so that something is found
        model.rpn.objectness.weight.mul_(100.0)
    maskrcnn.save(model, folder / "model.pt")
    to_onnx(model, folder / "model.onnx")
    images = folder / "images"
    images.mkdir()
    generator = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 160), (97, 131)]):
        Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return folder


def test_each_backend_by_name(files):
    assert isinstance(load_predictor(files / "model.pt"), MaskRCNN)
    assert isinstance(load_predictor(backend="onnxruntime", onnx=files / "model.onnx"), OnnxPredictor)
    with pytest.raises(ConfigError, match="--onnx"):
        load_predictor(files / "model.pt", backend="openvino")
    with pytest.raises(ConfigError, match="--weights"):
        load_predictor(backend="torch")
    with pytest.raises(ConfigError, match="unknown backend"):
        load_predictor(files / "model.pt", backend="tensorrt")


@pytest.mark.own_process  # loads OpenVINO: see conftest.py
def test_predict_with_openvino_writes_the_same_results_as_torch(files, tmp_path):
    pytest.importorskip("openvino")
    predict([files / "images"], weights=files / "model.pt", out=tmp_path / "torch", progress=False, report=lambda line: None)
    predict([files / "images"], backend="openvino", onnx=files / "model.onnx", out=tmp_path / "ov", progress=False,
            report=lambda line: None)
    expected = json.loads((tmp_path / "torch" / "results.json").read_text())
    got = json.loads((tmp_path / "ov" / "results.json").read_text())
    assert len(got) == len(expected) > 0
    for a, b in zip(expected, got):
        assert a["category_id"] == b["category_id"] and a["image_id"] == b["image_id"]
        assert np.allclose(a["bbox"], b["bbox"], atol=0.02) and abs(a["score"] - b["score"]) <= 1e-4


def test_evaluate_with_an_onnx_backend(files, tmp_path):
    summary = evaluate(None, "shapes:2:128:5", out=tmp_path / "metrics.json", backend="onnxruntime",
                       onnx=files / "model.onnx", progress=False, report=lambda line: None)
    assert "bbox" in summary and (tmp_path / "metrics.json").is_file()


@pytest.mark.own_process  # loads OpenVINO: see conftest.py
def test_auto_measures_once_then_reads_the_cache(files, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKRCNN_CACHE_DIR", str(tmp_path / "cache"))
    lines = []
    first = load_predictor(files / "model.pt", backend="auto", report=lines.append)
    assert any("measuring" in line for line in lines)
    chosen = [line for line in lines if line.startswith("backend auto: ") and "per image" in line]
    assert len(chosen) == 1 and "measured now" in chosen[0]
    entries = json.loads((tmp_path / "cache" / backends.CACHE_FILE).read_text())
    [entry] = entries.values()
    assert entry["backend"] in backends.BACKENDS and entry["agrees"][entry["backend"]]
    assert entry["agrees"]["torch"] and set(entry["seconds"]) >= {"torch", "onnxruntime"}
    assert entry["seconds"][entry["backend"]] == min(s for name, s in entry["seconds"].items() if entry["agrees"][name])
    assert (tmp_path / "cache" / "onnx").is_dir()  # the weights were exported there to measure the ONNX backends

    lines.clear()
    second = load_predictor(files / "model.pt", backend="auto", report=lines.append)
    assert not any("measuring" in line for line in lines)
    assert len(lines) == 1 and f"backend auto: {entry['backend']}" in lines[0] and "cached in" in lines[0]
    assert type(first) is type(second)


def test_a_backend_that_differs_is_not_chosen(files):
    class Wrong:
        def __init__(self, inner):
            self.inner, self.config = inner, inner.config

        def predict(self, images, score_threshold=None):
            [found] = self.inner.predict(images, score_threshold=score_threshold)
            return [type(found)(found.boxes + 5.0, found.labels, found.scores, found.masks)]

    model = load_predictor(files / "model.pt")
    model.config = Config.from_dict({**model.config.to_dict(), "detection_min_confidence": 0.0})  # many detections
    seconds, agrees = backends.measure({"torch": model, "wrong": Wrong(model)}, rounds=1)
    assert agrees == {"torch": True, "wrong": False} and set(seconds) == {"torch", "wrong"}
