"""The page of `maskrcnn serve` in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
scripts/setup-tests.sh) driven by Playwright, against the server on a loopback socket.

The page uploads an image, decodes the COCO RLE masks in JavaScript and draws them; the canvas's pixels are read
back and compared with the uploaded image and the server's masks, so a wrong RLE decoding (e.g. row-major) fails.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from serve_helpers import decisive_model, noise_rgb, require_serve_extra

require_serve_extra()

from maskrcnn.serve import BackgroundServer, WorkerPool, create_app  # noqa: E402

FONT_SIZE = 10  # page.js: max(10, min(width, height) / 40) for this small image


@pytest.fixture(scope="module")
def server():
    pool = WorkerPool(1, threads=torch.get_num_threads())  # the suite's own thread count (tests/conftest.py)
    with BackgroundServer(create_app(decisive_model(), pool)) as running:
        yield running
    pool.close()


def canvas_pixels(page) -> np.ndarray:
    """(H, W, 3) uint8 of the page's canvas, read through getImageData."""
    size, data = page.evaluate("""() => {
        const canvas = document.getElementById("canvas");
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
        return [[canvas.height, canvas.width], Array.from(pixels.data)];
    }""")
    return np.asarray(data, dtype=np.uint8).reshape(size[0], size[1], 4)[:, :, :3]


def away_from_outline_and_label(box, size) -> np.ndarray:
    """(H, W) bool: the pixels not under a box's outline (2 px either side) or its label (at most 100 px wide,
    above the box, or inside it at the top when there is no room above: page.js `draw`)."""
    height, width = size
    x1, y1, x2, y2 = box
    rows, columns = np.mgrid[0:height, 0:width]
    near_x = (np.abs(columns - x1) <= 2) | (np.abs(columns - x2) <= 2)
    near_y = (np.abs(rows - y1) <= 2) | (np.abs(rows - y2) <= 2)
    within_x = (columns >= x1 - 2) & (columns <= x2 + 2)
    within_y = (rows >= y1 - 2) & (rows <= y2 + 2)
    outline = (near_x & within_y) | (near_y & within_x)
    top = y1 - FONT_SIZE - 2 if y1 >= FONT_SIZE + 2 else y1
    label = (columns >= x1 - 2) & (columns <= x1 + 100) & (rows >= top - 2) & (rows <= top + FONT_SIZE + 4)
    return ~(outline | label)


def set_slider(page, value: float) -> None:
    page.evaluate("""(value) => {
        const slider = document.getElementById("score");
        slider.value = value;
        slider.dispatchEvent(new Event("input"));
    }""", value)


def test_page_uploads_draws_and_filters(browser, server, tmp_path):
    image = noise_rgb(96, 128, seed=21)
    path = tmp_path / "upload.png"
    Image.fromarray(image).save(path)
    page = browser.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url) if request.url.endswith("/predict") else None)
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('square')")

    with page.expect_response(lambda response: response.url.endswith("/predict")) as answer:
        page.set_input_files("#file", str(path))
    detections = answer.value.json()["detections"]
    page.wait_for_function("document.body.dataset.state === 'drawn'")
    assert len(detections) > 0

    set_slider(page, 0)  # every detection
    assert page.locator("#detections tbody tr").count() == len(detections)
    drawn = canvas_pixels(page)
    assert drawn.shape == image.shape
    changed = np.abs(drawn.astype(int) - image).max(axis=2) > 3  # (H, W) where the page drew something
    assert changed.mean() > 0.05

    set_slider(page, 1.0)  # nothing scores above 1: the canvas is the image itself, the table is empty
    assert page.locator("#detections tbody tr").count() == 0
    assert np.abs(canvas_pixels(page).astype(int) - image).max() <= 3

    top = detections[0]  # the best detection alone: the tinted pixels are exactly its mask
    set_slider(page, top["score"])
    shown = sum(d["score"] >= top["score"] for d in detections)
    assert page.locator("#detections tbody tr").count() == shown
    changed = np.abs(canvas_pixels(page).astype(int) - image).max(axis=2) > 3
    mask = mask_utils.decode({"size": top["mask"]["size"], "counts": top["mask"]["counts"].encode()}).astype(bool)
    away = away_from_outline_and_label(top["box"], image.shape[:2])
    assert (mask & away).sum() > 5
    iou = (changed & mask & away).sum() / (((changed | mask) & away).sum())
    assert iou > 0.9, f"the page's mask overlaps the server's by IoU {iou:.2f}"  # row-major decoding gives ~0

    assert len(requests) == 1  # the slider filtered without asking the server again
    page.close()


def test_page_shows_the_servers_refusal(browser, server, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"not an image at all")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.body.dataset.state === 'error'")
    assert "not an image" in page.locator("#status").text_content()
    page.close()
