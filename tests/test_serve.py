"""`maskrcnn serve` (src/maskrcnn/serve/): the API answers as `model.predict` on the same image, refuses every bad
request with a 4xx and {"error"} and keeps serving, queues concurrent clients to a fixed number of workers, and
serves an exported ONNX model (onnxruntime, OpenVINO) behind the same API.

Most tests use FastAPI's TestClient; the concurrency and disconnect tests use a real socket (uvicorn in a thread).
"""
from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from serve_helpers import CLASS_NAMES, bomb_png, decisive_model, noise_rgb, png_bytes, require_serve_extra

require_serve_extra()  # a missing dependency fails the module with what to run, it is never skipped

from fastapi.testclient import TestClient  # noqa: E402

from maskrcnn import Detections  # noqa: E402
from maskrcnn.cpu import has_bf16_kernels  # noqa: E402
from maskrcnn.data import read_image  # noqa: E402
from maskrcnn.saving import save  # noqa: E402
from maskrcnn.serve import BackgroundServer, ServerSettings, WorkerPool, build_app, create_app  # noqa: E402
from maskrcnn.serve.encoding import mask_polygons  # noqa: E402

THREADS = torch.get_num_threads()  # the workers run with the test process's own thread count: same arithmetic


@pytest.fixture(scope="module")
def model():
    return decisive_model()


@pytest.fixture(scope="module")
def client(model):
    pool = WorkerPool(1, threads=THREADS)
    yield TestClient(create_app(model, pool, ServerSettings(max_pixels=100_000)))
    pool.close()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """One file per kind the image reader converts: RGB, grayscale, RGBA, 16-bit gray, and a JPEG rotated by EXIF."""
    folder = tmp_path_factory.mktemp("images")
    rgb = noise_rgb(72, 96, seed=1)
    files = {"rgb.png": Image.fromarray(rgb), "gray.png": Image.fromarray(noise_rgb(80, 64, seed=2)[:, :, 0]),
             "rgba.png": Image.fromarray(np.dstack([noise_rgb(64, 88, seed=3), np.full((64, 88), 90, np.uint8)]))}
    sixteen = (noise_rgb(70, 90, seed=4)[:, :, 1].astype(np.uint16) * 257 + 123)  # uses the low byte too
    files["gray16.png"] = Image.fromarray(sixteen)
    paths = {}
    for name, image in files.items():
        paths[name] = folder / name
        image.save(paths[name])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show upright: the served image is 96 wide, 72 high -> 72 x 96
    paths["rotated.jpg"] = folder / "rotated.jpg"
    Image.fromarray(rgb).save(paths["rotated.jpg"], quality=95, exif=exif)
    assert Image.open(paths["gray16.png"]).mode.startswith("I")  # really a 16-bit file
    return paths


def good_request(client) -> None:
    """The server still answers after a refused request."""
    image = png_bytes(Image.fromarray(noise_rgb(48, 64, seed=9)))
    response = client.post("/predict", files={"image": ("ok.png", image, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["width"] == 64


def assert_equal_to_predict(answer: dict, expected) -> None:
    """Same detections as model.predict: boxes, labels, scores exactly; masks decoded by pycocotools pixel for pixel."""
    height, width = expected.image_size
    assert (answer["height"], answer["width"]) == (height, width)
    found = answer["detections"]
    assert len(found) == len(expected) > 0
    assert [d["box"] for d in found] == expected.boxes.tolist()
    assert [d["label"] for d in found] == expected.labels.tolist()
    assert [d["class_name"] for d in found] == [CLASS_NAMES[k] for k in expected.labels.tolist()]
    assert [d["score"] for d in found] == expected.scores.tolist()
    for detection, mask in zip(found, expected.masks.numpy()):
        assert detection["mask"]["size"] == [height, width]
        rle = {"size": detection["mask"]["size"], "counts": detection["mask"]["counts"].encode("ascii")}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


# ---------------------------------------------------------------------------------------------- answers
def test_health_and_model(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["class_names"] == CLASS_NAMES
    assert info["backend"] == "torch" and info["precision"] == "f32"
    assert info["config"]["backbone"] == "resnet18" and info["config"]["num_classes"] == 4
    assert info["workers"] == 1 and info["max_pixels"] == 100_000


@pytest.mark.parametrize("name", ["rgb.png", "gray.png", "rgba.png", "gray16.png", "rotated.jpg"])
def test_predict_equals_model_predict(client, model, image_files, name):
    path = image_files[name]
    expected = model.predict([read_image(path)])[0]
    response = client.post("/predict", files={"image": (name, path.read_bytes(), "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert_equal_to_predict(response.json(), expected)


def test_rotated_jpeg_is_served_upright(client, image_files):
    answer = client.post("/predict", content=image_files["rotated.jpg"].read_bytes()).json()
    assert (answer["width"], answer["height"]) == (72, 96)  # stored 96 x 72, EXIF orientation 6


def test_raw_body_score_threshold_and_polygons(client, model, image_files):
    path = image_files["rgb.png"]
    expected = model.predict([read_image(path)], score_threshold=0.6)[0]
    response = client.post("/predict?score_threshold=0.6", content=path.read_bytes(), headers={"content-type": "image/png"})
    assert_equal_to_predict(response.json(), expected)
    form = client.post("/predict", files={"image": ("a.png", path.read_bytes())},
                       data={"score_threshold": "0.6", "format": "polygons"}).json()
    assert len(form["detections"]) == len(expected)
    for detection, mask in zip(form["detections"], expected.masks.numpy()):
        polygons = detection["mask"]["polygons"]
        assert polygons == mask_polygons(mask)
        # rasterised back by pycocotools, the outlines cover the mask (pixel centres inside the polygons)
        rles = mask_utils.frPyObjects(polygons, *mask.shape)
        drawn = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        assert (drawn & mask).sum() / max(1, (drawn | mask).sum()) > 0.8


def test_masks_rle_gives_the_strings_of_evaluation_coco_results():
    from maskrcnn.evaluation import coco_results
    from maskrcnn.serve.encoding import masks_rle
    from maskrcnn.structures import Detections

    rng = np.random.default_rng(0)
    masks = np.zeros((7, 9, 11), dtype=bool)
    masks[0, 2:5, 3:7] = True  # inside
    masks[1] = True  # everything
    masks[2, :, 0] = True  # first column, starts at pixel 0
    masks[3, 8, 10] = True  # the last pixel only
    masks[4] = rng.random((9, 11)) > 0.5  # many runs, touching every column
    masks[5, 3:6, 4] = masks[5, 0, 8] = True  # two pieces, a column between them
    # masks[6] stays empty
    detections = Detections(torch.zeros(7, 4), torch.ones(7, dtype=torch.int64), torch.ones(7), torch.from_numpy(masks))
    expected = [row["segmentation"] for row in coco_results(detections, image_id=0)]
    assert masks_rle(masks) == [{"size": e["size"], "counts": e["counts"]} for e in expected]
    assert masks_rle(np.zeros((0, 9, 11), dtype=bool)) == []


def test_mask_polygons_of_a_square_are_its_pixel_edges():
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:4, 2:6] = True  # rows 1..3, columns 2..5: the pixel edges x 2..6, y 1..4
    (polygon,) = mask_polygons(mask)
    xs, ys = polygon[0::2], polygon[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (2.0, 6.0, 1.0, 4.0)
    assert len(polygon) == 16  # 8 points: the 4 corners, each cut by half a pixel (the iso-line at 0.5)


# ---------------------------------------------------------------------------------------------- refusals
def refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_not_an_image(client):
    refused(client.post("/predict", files={"image": ("a.png", b"this is text, not a picture")}), 415, "not an image")
    good_request(client)


def test_truncated_file(client, image_files):
    data = image_files["rgb.png"].read_bytes()
    refused(client.post("/predict", files={"image": ("a.png", data[: len(data) // 2])}), 400, "cannot read the image")
    good_request(client)


def test_decompression_bomb(client):
    bomb = bomb_png()
    assert len(bomb) < 200
    limit = Image.MAX_IMAGE_PIXELS
    refused(client.post("/predict", files={"image": ("bomb.png", bomb)}), 413, "decompression-bomb limit")
    assert Image.MAX_IMAGE_PIXELS == limit is not None  # Pillow's limit stays on
    good_request(client)


def test_more_pixels_than_max_pixels(client):
    image = png_bytes(Image.fromarray(noise_rgb(300, 400, seed=5)))  # 120000 pixels, the limit is 100000
    refused(client.post("/predict", files={"image": ("big.png", image)}), 413, "--max-pixels 100000")
    good_request(client)


def test_missing_field(client):
    refused(client.post("/predict", files={"picture": ("a.png", b"123")}), 400, "field 'image' is missing")
    refused(client.post("/predict", data={"image": "not a file"}, files={"other": ("x", b"1")}), 400, "holds text")
    good_request(client)


def test_empty_body_and_empty_file(client):
    refused(client.post("/predict", content=b""), 400, "empty body")
    refused(client.post("/predict", files={"image": ("a.png", b"")}), 400, "empty (0 bytes)")
    good_request(client)


def test_wrong_method_and_unknown_path(client):
    refused(client.get("/predict"), 405, "GET is not allowed")
    refused(client.put("/predict", content=b"x"), 405, "PUT is not allowed")
    refused(client.post("/health"), 405, "POST is not allowed")
    refused(client.get("/nothing/here"), 404, "no such page")
    good_request(client)


def test_bad_options(client, image_files):
    data = image_files["rgb.png"].read_bytes()
    refused(client.post("/predict?score_threshold=high", content=data), 400, "score_threshold must be a number")
    refused(client.post("/predict?score_threshold=1.5", content=data), 400, "in [0, 1]")
    refused(client.post("/predict?format=svg", content=data), 400, "format must be one of rle, polygons")
    refused(client.post("/predict", content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"}),
            400, "form without a file")
    good_request(client)


def test_broken_multipart(client):
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n\x89PNG"  # no end
    response = client.post("/predict", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= response.status_code < 500 and "error" in response.json()
    good_request(client)


# ---------------------------------------------------------------------------------------------- concurrency
class CountingPredictor:
    """The model, counting how many predictions run at once; `gate` (when set) holds each prediction until opened."""

    def __init__(self, model, gate: threading.Event | None = None):
        self.model, self.gate = model, gate
        self.class_names, self.config = model.class_names, model.config
        self.running = self.most = self.calls = 0
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def predict(self, images, score_threshold=None):
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        self.entered.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(timeout=60)
            return self.model.predict(images, score_threshold=score_threshold)
        finally:
            with self._lock:
                self.running -= 1


def post_image(url: str, data: bytes, timeout: float = 120.0) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", "/predict", body=data, headers={"content-type": "image/png"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_24_concurrent_clients_all_answered_by_two_workers(model):
    counting = CountingPredictor(model)
    pool = WorkerPool(2, threads=1)
    images = [noise_rgb(40 + 4 * (k % 6), 56, seed=100 + k) for k in range(24)]
    with BackgroundServer(create_app(counting, pool)) as server:
        with ThreadPoolExecutor(24) as clients:
            answers = list(clients.map(lambda image: post_image(server.url, png_bytes(Image.fromarray(image))), images))
    pool.close()
    torch.set_num_threads(THREADS)
    assert [status for status, _ in answers] == [200] * 24
    assert counting.calls == 24
    assert counting.most <= 2  # never more predictions at once than workers
    for image, (_, answer) in zip(images, answers):  # each client got the answer for its own image
        expected = model.predict([image])[0]
        assert answer["height"] == image.shape[0]
        assert len(answer["detections"]) == len(expected)
        assert [d["label"] for d in answer["detections"]] == expected.labels.tolist()
        scores = np.array([d["score"] for d in answer["detections"]])
        assert np.allclose(scores, expected.scores.numpy(), atol=1e-5)  # 1 thread here, THREADS in the workers


def test_full_queue_is_refused_with_503_and_then_served(model):
    gate = threading.Event()
    counting = CountingPredictor(model, gate)
    pool = WorkerPool(1, threads=1, max_waiting=0)
    data = png_bytes(Image.fromarray(noise_rgb(48, 64, seed=7)))
    with BackgroundServer(create_app(counting, pool)) as server, ThreadPoolExecutor(1) as background:
        first = background.submit(post_image, server.url, data)
        assert counting.entered.wait(timeout=60)  # the only worker is busy
        status, answer = post_image(server.url, data)
        assert status == 503 and "busy" in answer["error"]
        gate.set()
        assert first.result(timeout=60)[0] == 200
        assert post_image(server.url, data)[0] == 200
    pool.close()
    torch.set_num_threads(THREADS)


def test_client_that_disconnects_does_not_take_the_worker_down(model):
    gate = threading.Event()
    counting = CountingPredictor(model, gate)
    pool = WorkerPool(1, threads=1)
    data = png_bytes(Image.fromarray(noise_rgb(48, 64, seed=8)))
    with BackgroundServer(create_app(counting, pool)) as server:
        # 1. mid-body: the headers promise more bytes than ever come
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
                         + data[:100])
        # 2. mid-prediction: the whole request is sent, the client leaves while the worker is predicting
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: "
                         + str(len(data)).encode() + b"\r\n\r\n" + data)
            assert counting.entered.wait(timeout=60)
        gate.set()
        status, answer = post_image(server.url, data)
        assert status == 200 and answer["width"] == 64
        assert counting.calls == 2  # the abandoned prediction ran to its end in the worker, then this one
    pool.close()
    torch.set_num_threads(THREADS)


# ---------------------------------------------------------------------------------------------- precision, ONNX, command
@pytest.mark.skipif(not has_bf16_kernels(), reason="this CPU has no bfloat16 instructions")
def test_precision_bf16_behind_the_same_api(model, image_files, tmp_path):
    from maskrcnn.bfloat16 import Bfloat16Predictor

    save(model, tmp_path / "model.pt")
    app, pool = build_app(tmp_path / "model.pt", backend="torch", precision="bf16", workers=1)
    client = TestClient(app)
    info = client.get("/model").json()
    assert (info["backend"], info["precision"]) == ("torch", "bf16")
    expected = Bfloat16Predictor(model).predict([read_image(image_files["rgb.png"])])[0]
    response = client.post("/predict", files={"image": ("rgb.png", image_files["rgb.png"].read_bytes())})
    assert_equal_to_predict(response.json(), expected)
    pool.close()
    torch.set_num_threads(THREADS)


def test_onnx_backend_behind_the_same_api(model, image_files, tmp_path):
    from maskrcnn.export import OnnxPredictor, to_onnx

    path = to_onnx(model, tmp_path / "model.onnx")
    app, pool = build_app(path, backend="onnxruntime", workers=1)
    client = TestClient(app)
    assert client.get("/model").json()["backend"] == "onnxruntime"
    reference = OnnxPredictor(path, threads=pool.threads)
    for name in ("rgb.png", "gray16.png"):
        expected = reference.predict([read_image(image_files[name])])[0]
        response = client.post("/predict", files={"image": (name, image_files[name].read_bytes())})
        assert_equal_to_predict(response.json(), expected)
        torch_found = model.predict([read_image(image_files[name])])[0]
        assert [d["label"] for d in response.json()["detections"]] == torch_found.labels.tolist()
    refused(client.post("/predict", files={"image": ("x.png", b"nope")}), 415, "not an image")
    pool.close()
    torch.set_num_threads(THREADS)  # build_app gave the process all cores; the suite runs with its own count


def answer_detections(answer: dict) -> Detections:
    """The detections of a /predict answer, masks decoded by pycocotools."""
    found = answer["detections"]
    masks = [mask_utils.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"].encode("ascii")}) for d in found]
    return Detections(torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4),
                      torch.tensor([d["label"] for d in found], dtype=torch.int64),
                      torch.tensor([d["score"] for d in found], dtype=torch.float32),
                      torch.from_numpy(np.stack(masks).astype(bool)) if masks
                      else torch.zeros(0, answer["height"], answer["width"], dtype=torch.bool))


@pytest.mark.own_process  # loads OpenVINO: see conftest.py
def test_openvino_backend_behind_the_same_api_with_two_workers(model, image_files, tmp_path):
    """Two workers answer concurrent requests through one OpenVINO model: each answer is model.predict's within
    the ONNX parity tolerances (an infer request shared between threads mixed the answers up)."""
    pytest.importorskip("openvino")
    from test_export import assert_same

    from maskrcnn.export import to_onnx

    path = to_onnx(model, tmp_path / "model.onnx")
    app, pool = build_app(onnx=path, backend="openvino", workers=2)
    names = ["rgb.png", "gray.png", "rgba.png", "gray16.png", "rotated.jpg"] * 2
    with BackgroundServer(app) as server:
        info = json.loads(urllib.request.urlopen(f"{server.url}/model", timeout=30).read())
        with ThreadPoolExecutor(len(names)) as clients:
            answers = list(clients.map(lambda name: post_image(server.url, image_files[name].read_bytes()), names))
    pool.close()
    torch.set_num_threads(THREADS)
    assert info["backend"] == "openvino" and info["workers"] == 2
    for name, (status, answer) in zip(names, answers):
        assert status == 200, answer
        expected = model.predict([read_image(image_files[name])])[0]
        assert len(expected) > 0 and (answer["height"], answer["width"]) == expected.image_size
        assert_same(expected, answer_detections(answer))


def test_serve_command_starts_and_answers(model, tmp_path):
    weights = save(model, tmp_path / "model.pt")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "maskrcnn", "serve", "--weights", str(weights), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/model")
                info = json.loads(connection.getresponse().read())
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "maskrcnn serve did not answer within 120 s"
                time.sleep(0.3)
        assert info["class_names"] == CLASS_NAMES
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_command_refuses_missing_weights_and_bad_backend_file(tmp_path, capsys):
    from maskrcnn.cli import main

    assert main(["serve", "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["serve", "--weights", str(tmp_path / "model.pt"), "--backend", "onnxruntime"]) == 2
    assert ".onnx" in capsys.readouterr().err
