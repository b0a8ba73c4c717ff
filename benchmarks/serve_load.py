"""`maskrcnn serve` under load: throughput and latency for C concurrent clients, beside sequential `model.predict`
on the same images in the same run; and what encoding the masks as RLE plus the JSON costs.

    PYTHONPATH=src python benchmarks/serve_load.py                         # demo preset, 320x426, C = 1, 4, 16
    PYTHONPATH=src python benchmarks/serve_load.py --weights model.pt --size 480x640 --requests 48 --workers 2

What it does:
  - the model: --weights (anything `maskrcnn serve --weights` takes) or the demo preset with random weights (seed 0);
  - starts the server (maskrcnn.serve.BackgroundServer: uvicorn in a thread) on a free loopback port with
    --workers model workers, the cores divided among them;
  - sequential baseline, before each row: `model.predict` on each of the --requests images (decoded as the server
    decodes them) one after another, in one of the server's worker threads (a thread's torch settings change the
    speed: on a busy 2-core machine the main thread's 2 OpenMP threads ran 3x slower than a worker's);
  - for each C in --clients: --requests POSTs of those images from C client threads (http.client, one connection a
    request), stopping early after --time-limit seconds; throughput = answered requests / wall time, latency
    percentiles over the answered ones, errors = non-200 answers and failed connections;
  - encoding: one image of --encode-size with score threshold 0 and detection_max_instances 100 (100 detections):
    the time of RLE encoding plus JSON (`detections_json` + `json.dumps`), the same request's time through the
    server, and their ratio.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from maskrcnn import Config, MaskRCNN
from maskrcnn.cpu import flush_denormals
from maskrcnn.serve import BackgroundServer, WorkerPool, create_app
from maskrcnn.serve.encoding import detections_json
from maskrcnn.serve.images import decode_image
from maskrcnn.serve.workers import available_cores, threads_per_worker


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build_model(weights, max_instances: int | None = None):
    if weights:
        from maskrcnn.runs import load_predictor

        model = load_predictor(weights)
        if max_instances:
            model = MaskRCNN(model.config.replace(detection_max_instances=max_instances), class_names=model.class_names)
        return model.eval()
    torch.manual_seed(0)
    config = Config.demo(**({"detection_max_instances": max_instances, "post_nms_rois_inference": 1000}
                            if max_instances else {}))
    return MaskRCNN(config, class_names=["BG", "square", "circle", "triangle"]).eval()


def png_images(count: int, size: tuple[int, int]) -> list[bytes]:
    rng = np.random.default_rng(1)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(size[0] // 16, size[1] // 16, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def post(port: int, data: bytes, query: str = "") -> tuple[int, float]:
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/predict" + query, body=data, headers={"content-type": "image/png"})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    except OSError:
        return -1, time.perf_counter() - start
    finally:
        connection.close()


def load(port: int, images: list[bytes], clients: int, time_limit: float) -> dict:
    """Every image once, from `clients` threads; no new request after time_limit seconds."""
    latencies, errors, lock, queue = [], 0, threading.Lock(), list(images)
    start = time.perf_counter()

    def client():
        nonlocal errors
        while time.perf_counter() - start < time_limit:
            with lock:
                if not queue:
                    return
                data = queue.pop()
            status, seconds = post(port, data)
            with lock:
                if status == 200:
                    latencies.append(seconds)
                else:
                    errors += 1

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - start
    q = np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {"answered": len(latencies), "errors": errors, "wall": wall, "throughput": len(latencies) / wall,
            "p50": q[0], "p95": q[1], "p99": q[2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a model file (default: the demo preset with random weights)")
    parser.add_argument("--size", type=parse_size, default=(320, 426), help="HxW of the load images (default 320x426)")
    parser.add_argument("--requests", type=int, default=32, help="requests per client count (default 32)")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--workers", type=int, default=1, help="server model workers (default 1)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per client count (default 120)")
    parser.add_argument("--encode-size", type=parse_size, default=(800, 1066), help="HxW for the encoding cost")
    args = parser.parse_args()
    flush_denormals()

    threads = threads_per_worker(args.workers)
    model = build_model(args.weights)
    images = png_images(args.requests, args.size)
    pool = WorkerPool(args.workers, threads=threads)
    print(f"# {cpu_name()}, {available_cores()} cores; torch {torch.__version__}; server: {args.workers} worker(s) x "
          f"{threads} thread(s); images {args.size[0]}x{args.size[1]}; {args.requests} requests per row")

    arrays = [decode_image(data, max_pixels=None) for data in images]  # as the server decodes them

    def sequential() -> float:
        """Requests per second of model.predict one image after another, in a worker thread as the server runs it."""
        start = time.perf_counter()
        for array in arrays:
            model.predict([array])
        return len(arrays) / (time.perf_counter() - start)

    pool.submit(model.predict, [arrays[0]]).result()  # warm-up
    rows = []
    with BackgroundServer(create_app(model, pool)) as server:
        post(server.port, images[0])  # warm-up through the server
        for clients in [int(c) for c in args.clients.split(",")]:
            # the baseline right before each row, so that a change in the machine's load shows in both
            baseline = pool.submit(sequential).result()
            rows.append((clients, baseline, load(server.port, images, clients, args.time_limit)))
    pool.close()
    print("| clients | answered | errors | server req/s | sequential predict req/s | p50 s | p95 s | p99 s |")
    print("|---|---|---|---|---|---|---|---|")
    for clients, baseline, r in rows:
        print(f"| {clients} | {r['answered']} | {r['errors']} | {r['throughput']:.2f} | {baseline:.2f} | "
              f"{r['p50']:.3f} | {r['p95']:.3f} | {r['p99']:.3f} |")

    encoding_cost(args, threads)
    return 0


def encoding_cost(args, threads: int) -> None:
    model = build_model(args.weights, max_instances=100)
    height, width = args.encode_size
    data = png_images(1, (height, width))[0]
    array = decode_image(data, max_pixels=None)
    found = model.predict([array], score_threshold=0.0)[0]
    encode = []
    for _ in range(5):
        start = time.perf_counter()
        json.dumps(detections_json(found, model.class_names))
        encode.append(time.perf_counter() - start)
    pool = WorkerPool(1, threads=threads * args.workers)
    with BackgroundServer(create_app(model, pool)) as server:
        post(server.port, data, "?score_threshold=0")  # warm-up
        request = statistics.median(post(server.port, data, "?score_threshold=0")[1] for _ in range(3))
    pool.close()
    share = statistics.median(encode) / request
    print(f"\nencoding at {height}x{width} with {len(found)} detections: RLE + JSON {statistics.median(encode) * 1000:.1f} ms "
          f"of a {request:.2f} s request ({share:.1%})")


if __name__ == "__main__":
    sys.exit(main())
