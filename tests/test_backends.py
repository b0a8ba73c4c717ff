"""Backends of `maskrcnn predict` / `maskrcnn evaluate` (backends.py): each one by name, and `auto`, which
measures each backend in a process of its own once per machine and model, keeps the fastest that agrees with
PyTorch, builds only that one, and reads the cache afterwards (backend_probe.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn import Config, Detections, MaskRCNN, backend_probe, backends
from maskrcnn.backend_probe import Measurement
from maskrcnn.errors import ConfigError, MaskRCNNError
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


# Run in a process of its own, which then says which backend modules it holds: the measuring loads every
# backend, each in its own child, and the parent loads the chosen one only.
AUTO_SCRIPT = """
import json, sys
from maskrcnn import backends
lines = []
name, predictor = backends.choose(sys.argv[1], threads=1, report=lines.append)
print(json.dumps({"backend": name, "predictor": type(predictor).__name__, "lines": lines,
                  "loaded": sorted(m for m in ("onnxruntime", "openvino") if m in sys.modules)}))
"""


def test_auto_measures_each_backend_in_its_own_process_and_builds_only_the_chosen(files, tmp_path):
    env = {**os.environ, "MASKRCNN_CACHE_DIR": str(tmp_path / "cache")}
    finished = subprocess.run([sys.executable, "-c", AUTO_SCRIPT, str(files / "model.pt")], env=env,
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    found = json.loads(finished.stdout.splitlines()[-1])
    assert found["loaded"] == {"torch": [], "onnxruntime": ["onnxruntime"], "openvino": ["openvino"]}[found["backend"]]
    predictors = {"torch": "MaskRCNN", "onnxruntime": "OnnxPredictor", "openvino": "OpenVinoPredictor"}
    assert found["predictor"] == predictors[found["backend"]]
    assert any("measuring" in line and "each in a process of its own" in line for line in found["lines"])
    chosen = [line for line in found["lines"] if line.startswith("backend auto: ") and "per image" in line]
    assert len(chosen) == 1 and "measured now" in chosen[0]

    [entry] = json.loads((tmp_path / "cache" / backends.CACHE_FILE).read_text()).values()
    assert entry["backend"] == found["backend"] and entry["agrees"][entry["backend"]] and entry["agrees"]["torch"]
    assert set(entry["seconds"]) >= {"torch", "onnxruntime"}
    assert set(entry["seconds"]) | set(entry["unusable"]) == set(backends.BACKENDS)  # openvino measured, or why not
    assert entry["seconds"][entry["backend"]] == min(s for name, s in entry["seconds"].items() if entry["agrees"][name])
    assert (tmp_path / "cache" / "onnx").is_dir()  # the weights were exported there to measure the ONNX backends


def aborting_build(name, **files):
    """A backend builder whose process dies as a crashing native library's would (SIGABRT): a candidate of auto."""
    os.abort()


def test_a_backend_whose_process_crashes_is_not_used_and_the_cache_is_read_without_measuring(files, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKRCNN_CACHE_DIR", str(tmp_path / "cache"))
    candidates = {"torch": backends.build, "onnxruntime": backends.build, "openvino": aborting_build}
    lines = []
    name, predictor = backends.choose(files / "model.pt", files / "model.onnx", threads=1, report=lines.append,
                                      candidates=candidates)
    assert name in ("torch", "onnxruntime")
    [entry] = json.loads((tmp_path / "cache" / backends.CACHE_FILE).read_text()).values()
    assert set(entry["seconds"]) == {"torch", "onnxruntime"} and all(entry["agrees"].values())
    reason = entry["unusable"]["openvino"]
    assert reason.startswith("its process crashed with SIGABRT") and "aborting_build" in reason  # where it died
    assert any(line.startswith("backend auto: openvino not usable here (its process crashed") for line in lines)

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(backend_probe, "measure_in_child", no_measuring)
    lines.clear()
    again, second = backends.choose(files / "model.pt", files / "model.onnx", threads=1, report=lines.append,
                                    candidates=candidates)
    assert again == name and type(second) is type(predictor)
    assert len(lines) == 1 and f"backend auto: {name}" in lines[0] and "cached in" in lines[0]
    assert "openvino not usable here (its process crashed with SIGABRT" in lines[0]


def _detections(shift: float = 0.0) -> Detections:
    masks = torch.zeros(2, 40, 50, dtype=torch.bool)
    masks[0, 5:20, 5:25], masks[1, 22:38, 10:45] = True, True
    return Detections(torch.tensor([[5.0, 5.0, 25.0, 20.0], [10.0, 22.0, 45.0, 38.0]]) + shift,
                      torch.tensor([1, 3]), torch.tensor([0.9, 0.7]), masks)


def test_pick_keeps_the_fastest_median_that_agrees_with_torch():
    entry = backends.pick({"torch": Measurement([0.30, 0.20, 0.40], _detections()),
                           "onnxruntime": Measurement([0.10, 0.10, 0.10], _detections(shift=5.0)),  # boxes 5 px off
                           "openvino": Measurement([0.90, 0.25, 0.20], _detections(shift=0.005))},
                          {"other": "its process crashed with SIGSEGV"})
    assert entry == {"backend": "openvino", "seconds": {"torch": 0.30, "onnxruntime": 0.10, "openvino": 0.25},
                     "agrees": {"torch": True, "onnxruntime": False, "openvino": True},
                     "unusable": {"other": "its process crashed with SIGSEGV"}}
    with pytest.raises(MaskRCNNError, match="no backend runs here: torch: ImportError: no module"):
        backends.pick({}, {"torch": "ImportError: no module"})
