"""The demo: a fixed number of steps with a progress total to match, the measured pace, pictures that explain
themselves when nothing reaches the display threshold, enlarged pictures and the contact sheet.

The whole demo runs once here with a tiny model (64 px images, narrow heads, 3 steps of 2 images), which is
untrained: that is the case where nothing scores above the pictures' threshold.
"""
from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn import Config
from maskrcnn.data import ShapesDataset
from maskrcnn.demo import (BEST_BELOW, PICTURE_SCALE, SCORE_THRESHOLD, SHEET_PAIRS_PER_ROW, TRAIN_IMAGES,
                           TRAIN_STEPS, VAL_SEED_OFFSET, pace_lines, run_demo)
from maskrcnn.visualize import draw_ground_truth

STEPS, VAL_IMAGES, PICTURES, SIDE, SEED = 3, 4, 4, 64, 5
# The demo preset made narrower still (as tests/test_cli.py's TINY); a learning rate too small to learn
# anything in 3 steps, so that no detection reaches SCORE_THRESHOLD.
TINY = dict(image_min_dim=SIDE, image_max_dim=SIDE, fpn_channels=16, rpn_conv_channels=16, box_head_channels=32,
            mask_head_channels=16, images_per_batch=2, lr_warmup_steps=0, learning_rate=1e-7, train_rois_per_image=16,
            rpn_train_anchors_per_image=32, rpn_pre_nms_limit_training=128, post_nms_rois_training=64,
            rpn_pre_nms_limit_inference=64, post_nms_rois_inference=32, detection_max_instances=5)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    stdout, stderr = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            metrics = run_demo(out, seed=SEED, steps=STEPS, config=Config.demo(**TINY), val_images=VAL_IMAGES,
                               pictures=PICTURES, progress=True)
    finally:
        torch.set_num_threads(threads)
    return out, metrics, stdout.getvalue(), stderr.getvalue()


def test_the_step_count_is_the_epoch():
    assert TRAIN_IMAGES == TRAIN_STEPS * Config.demo().images_per_batch


def test_trains_the_given_steps_and_the_progress_total_is_that(demo_run):
    out, metrics, _, stderr = demo_run
    assert metrics["steps"] == STEPS and metrics["images_seen"] == STEPS * TINY["images_per_batch"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == STEPS
    assert (out / "loss.png").is_file() and (out / "model.pt").is_file()
    # tqdm writes "epoch 1/1:  33%|###      | 1/3 [...]": every count of the training bar is out of STEPS.
    counts = re.findall(r"epoch 1/1:[^|]*\|[^|]*\|\s*(\d+)/(\d+)", stderr)
    assert counts, stderr
    assert {total for _, total in counts} == {str(STEPS)}


def test_prints_the_measured_pace(demo_run):
    _, _, stdout, _ = demo_run
    lines = [line for line in stdout.splitlines() if "s per step: training takes about" in line]
    assert len(lines) == 1, stdout
    assert f"({STEPS} steps;" in lines[0]


def test_pictures_without_a_confident_detection_are_named(demo_run):
    out, metrics, stdout, _ = demo_run
    # The same pictures' detections, from the saved model.
    model = maskrcnn.load(out / "model.pt")
    val_set = ShapesDataset(VAL_IMAGES, SIDE, SIDE, seed=SEED + VAL_SEED_OFFSET)
    found = model.predict([val_set.load_image(i) for i in range(PICTURES)])
    unclear = [i for i, d in enumerate(found) if not bool((d.scores >= SCORE_THRESHOLD).any())]
    assert unclear, "the untrained tiny model was expected to score below the threshold"
    assert metrics["pictures_below_threshold"] == len(unclear)
    line = next(line for line in stdout.splitlines() if "no detection scoring" in line)
    assert line.startswith(f"maskrcnn demo: {len(unclear)} of {PICTURES} pictures ")
    for i in unclear:
        assert f"val_{i:03d}.png (" in line
    if len(unclear) == PICTURES:
        assert line.endswith("the model has not learnt the shapes yet")
    # Each such picture carries the note strip across its top (black; the shapes' backgrounds are not).
    for i in unclear:
        picture = np.asarray(Image.open(out / "predictions" / f"val_{i:03d}.png").convert("RGB"))
        assert (picture[0] == 0).all()
    assert BEST_BELOW >= 1


def test_pictures_are_enlarged(demo_run):
    out, _, _, _ = demo_run
    names = sorted(p.name for p in (out / "predictions").iterdir())
    assert names == [f"val_{i:03d}.png" for i in range(PICTURES)]
    for name in names:
        with Image.open(out / "predictions" / name) as picture:
            assert picture.size == (SIDE * PICTURE_SCALE, SIDE * PICTURE_SCALE)


def test_contact_sheet_pairs_each_prediction_with_its_ground_truth(demo_run):
    out, _, _, _ = demo_run
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    tile, gap, columns = SIDE * PICTURE_SCALE, 8, 2 * SHEET_PAIRS_PER_ROW
    rows = -(-2 * PICTURES // columns)  # 8 tiles, 6 a row: 2 rows
    assert sheet.shape[1] == columns * (tile + gap) + gap
    label_h = (sheet.shape[0] - gap) // rows - tile - gap  # each row: label, tile, gap
    assert label_h > 0 and sheet.shape[0] == rows * (label_h + tile + gap) + gap
    val_set = ShapesDataset(VAL_IMAGES, SIDE, SIDE, seed=SEED + VAL_SEED_OFFSET)
    for i in range(PICTURES):
        prediction = np.asarray(Image.open(out / "predictions" / f"val_{i:03d}.png").convert("RGB"))
        truth = draw_ground_truth(val_set, i, scale=PICTURE_SCALE)
        for k, expected in ((2 * i, prediction), (2 * i + 1, truth)):
            x = gap + (k % columns) * (tile + gap)
            y = gap + (k // columns) * (label_h + tile + gap) + label_h
            np.testing.assert_array_equal(sheet[y:y + tile, x:x + tile], expected)


def test_pace_lines_quiet_machine():
    lines = pace_lines(0.4, 700, 280.0, 280.0, load=(0.5, 2))
    assert lines == ["about 0.40 s per step: training takes about 4.7 minutes in all "
                     "(700 steps; evaluation and pictures then take seconds)"]


def test_pace_lines_busy_slow_or_unknown():
    busy = pace_lines(1.2, 700, 840.0, 280.0, load=(3.5, 2))
    assert len(busy) == 2 and busy[0].startswith("about 1.20 s per step: training takes about 14.0 minutes")
    assert "well over the usual 4.7 minutes" in busy[1] and "busy (load average 3.5 on 2 CPUs)" in busy[1]
    assert "The result will be the same, only later" in busy[1] and "fixed 700 steps" in busy[1]
    slow = pace_lines(1.2, 700, 840.0, 280.0, load=(1.0, 2))
    assert "this CPU is slower than (load average 1.0 on 2 CPUs: not busy)" in slow[1]
    unknown = pace_lines(1.2, 700, 840.0, 280.0, load=None)
    assert "this machine is busy or slower than" in unknown[1]
    # Up to SLOW_FACTOR (1.5) times the usual time is not reported: 1.5 x 280 = 420 s.
    assert len(pace_lines(0.6, 700, 420.0, 280.0, load=(3.5, 2))) == 1
    assert len(pace_lines(0.6, 700, 421.0, 280.0, load=(3.5, 2))) == 2


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="steps >= 1"):
        run_demo(tmp_path, steps=0)


def test_command_line_refuses_zero_steps(tmp_path, capsys):
    from maskrcnn.cli import main

    assert main(["demo", "--steps", "0", "--out", str(tmp_path / "out")]) == 2
    assert "steps >= 1" in capsys.readouterr().err
