"""Bad input to training, evaluation and inference, across modules: images without objects, crowd-only images,
nothing usable to learn from, blank and tiny images, zero detections, a NaN loss, damaged checkpoints and another
config on resume, fine-tuning to another class count, a killed data-loader worker. Each must give a correct
result or an error that names what to fix (bad data files are checked in tests/test_data_*.py).

Every model here is tiny (ResNet-18 trunk, 16-channel FPN, 64 px images) so that the file runs in seconds.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal

import numpy as np
from rle_helpers import uncompressed_rle
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn.checkpoint import load_file
from maskrcnn.config import LOSS_NAMES
from maskrcnn.data import CocoDataset, ShapesDataset
from maskrcnn.errors import CheckpointError, DataError, TrainingError
from maskrcnn.evaluation import CocoEvaluator
from maskrcnn.finetune import load_matching_weights
from maskrcnn.structures import Detections
from maskrcnn.train import Trainer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for these small cases, the suite's own count restored after them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(num_classes: int = 4, **overrides) -> maskrcnn.Config:
    settings = dict(
        fpn_channels=16, rpn_conv_channels=16, box_head_channels=32, mask_head_channels=16,
        rpn_pre_nms_limit_training=128, post_nms_rois_training=64, rpn_train_anchors_per_image=32,
        train_rois_per_image=16, rpn_pre_nms_limit_inference=64, post_nms_rois_inference=32,
        images_per_batch=2, lr_warmup_steps=0, learning_rate=0.01,
    )
    settings.update(overrides)
    return maskrcnn.Config.demo(num_classes=num_classes, **settings)


def tiny_model(num_classes: int = 4, seed: int = 0, **overrides) -> maskrcnn.MaskRCNN:
    torch.manual_seed(seed)
    return maskrcnn.MaskRCNN(tiny_config(num_classes, **overrides))


def square_polygon(x: int, y: int, side: int) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def write_coco(tmp_path, annotations: list[dict], num_images: int = 2, size: int = 64) -> str:
    """Random-noise PNGs 1..num_images and a COCO file with categories 1 ("a") and 3 ("b")."""
    rng = np.random.default_rng(0)
    images = []
    for image_id in range(1, num_images + 1):
        name = f"img{image_id}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(tmp_path / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return str(path)


def crowd_rle(x: int, y: int, side: int, size: int = 64) -> dict:
    """An uncompressed RLE (column-major run lengths, as COCO stores crowd regions) of a square."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y:y + side, x:x + side] = 1
    return uncompressed_rle(mask)


def annotation(ann_id, image_id, category_id, x, y, side, *, crowd=False):
    segmentation = crowd_rle(x, y, side) if crowd else [square_polygon(x, y, side)]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, side, side],
            "segmentation": segmentation, "iscrowd": int(crowd), "area": side * side}


def batch_of(dataset, indices):
    samples = [dataset[i] for i in indices]
    return [image for image, _ in samples], [target for _, target in samples]


# ---------------------------------------------------------------------------------------------- image without objects
def test_image_without_annotations_gives_finite_losses_and_zero_box_and_mask_losses(tmp_path):
    path = write_coco(tmp_path, [annotation(1, 1, 3, 10, 12, 20)])
    dataset = CocoDataset(path)
    images, targets = batch_of(dataset, [1])  # image 2 has no annotation: a negative
    assert targets[0]["boxes"].shape == (0, 4) and targets[0]["masks"].shape == (0, 64, 64)
    model = tiny_model(dataset.num_classes).train()
    losses = model(images, targets)
    assert set(losses) == set(LOSS_NAMES)
    assert all(math.isfinite(v.item()) for v in losses.values())
    # Nothing to regress or segment: the box and mask losses are exactly zero, not merely small.
    assert float(losses["rpn_bbox"]) == 0.0
    assert float(losses["mrcnn_bbox"]) == 0.0
    assert float(losses["mrcnn_mask"]) == 0.0
    # The classifiers still learn "background" from a negative image.
    assert float(losses["rpn_class"]) > 0 and float(losses["mrcnn_class"]) > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------- crowd-only image
@pytest.fixture
def crowd_only_data(tmp_path):
    # Image 1: one ordinary "b" square; image 2: only a crowd region of class "b".
    path = write_coco(tmp_path, [annotation(1, 1, 3, 10, 12, 20), annotation(2, 2, 3, 30, 20, 24, crowd=True)])
    return CocoDataset(path)


def test_crowd_only_image_trains_without_crash(crowd_only_data):
    dataset = crowd_only_data
    _, class_ids = dataset.load_mask(1)
    assert class_ids.tolist() == [-2]  # kept as crowd (negative internal id of category 3)
    images, targets = batch_of(dataset, [0, 1])
    assert len(targets[1]["labels"]) == 0  # crowd regions are no training targets
    model = tiny_model(dataset.num_classes).train()
    losses = model(images, targets)
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()


def _detection(box, label, score, size=64):
    x1, y1, x2, y2 = box
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, y1:y2, x1:x2] = True
    return Detections(boxes=torch.tensor([box], dtype=torch.float32), labels=torch.tensor([label]),
                      scores=torch.tensor([score]), masks=mask)


def _concat(*found):
    return Detections(boxes=torch.cat([f.boxes for f in found]), labels=torch.cat([f.labels for f in found]),
                      scores=torch.cat([f.scores for f in found]), masks=torch.cat([f.masks for f in found]))


def test_crowd_only_image_counts_as_crowd_in_evaluation(crowd_only_data):
    # Two confident detections on the crowd region, then the true one on image 1 with a lower score.
    # Crowd: both are ignored, AP = 1. Had the region been an ordinary instance: one true and one false
    # positive before the last true one (AP < 1); had it been dropped: two false positives (AP ~ 1/3).
    evaluator = CocoEvaluator(crowd_only_data)
    evaluator.add(0, _detection((10, 12, 30, 32), 2, 0.8))
    evaluator.add(1, _concat(_detection((30, 20, 54, 44), 2, 0.95), _detection((32, 22, 52, 42), 2, 0.9)))
    summary = evaluator.summarize()
    assert summary["bbox"]["AP"] == pytest.approx(1.0)
    assert summary["segm"]["AP"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- nothing to learn from
def test_no_usable_instance_is_refused_before_training_starts(tmp_path):
    # One crowd region and one zero-width box: after filtering nothing is left to learn from.
    bad_box = {**annotation(2, 2, 1, 5, 5, 10), "bbox": [5, 5, 0, 10]}
    path = write_coco(tmp_path, [annotation(1, 1, 3, 10, 12, 20, crowd=True), bad_box])
    with pytest.warns(UserWarning):
        dataset = CocoDataset(path, allow_empty=True, max_skip_fraction=1.0)
    model = tiny_model(dataset.num_classes)
    trainer = Trainer(model, dataset, out_dir=tmp_path / "run", progress=False)
    with pytest.raises(DataError) as caught:
        trainer.train(1)
    assert path in str(caught.value) and "no" in str(caught.value) and "instance" in str(caught.value)
    assert trainer.state.step == 0
    assert not (tmp_path / "run" / "train_log.jsonl").exists()  # not one step logged
    assert trainer.checkpoints.latest() is None


# ---------------------------------------------------------------------------------------------- blank and tiny images
@pytest.mark.parametrize("size", [(64, 64), (1, 1), (8, 8)])
def test_blank_and_tiny_images_give_empty_correctly_shaped_detections(size):
    model = tiny_model(4, detection_min_confidence=0.99)
    found = model.predict([np.zeros(size + (3,), dtype=np.uint8)])
    assert len(found) == 1
    found = found[0]
    assert found.boxes.shape == (0, 4) and found.boxes.dtype == torch.float32
    assert found.labels.shape == (0,) and found.labels.dtype == torch.int64
    assert found.scores.shape == (0,)
    assert found.masks.shape == (0,) + size and found.masks.dtype == torch.bool


def test_evaluation_of_zero_detections_warns_and_reports_zero_or_nan(tmp_path):
    path = write_coco(tmp_path, [annotation(1, 1, 3, 10, 12, 20), annotation(2, 2, 1, 5, 5, 30)])
    dataset = CocoDataset(path)
    model = tiny_model(dataset.num_classes, detection_min_confidence=0.99)
    evaluator = CocoEvaluator(dataset)
    for i in range(len(dataset)):
        evaluator.add(i, model.predict([dataset.load_image(i)])[0])
    assert evaluator.results() == []
    with pytest.warns(UserWarning, match="no detections"):
        summary = evaluator.summarize()
    for iou_type in ("bbox", "segm"):
        metrics = summary[iou_type]
        # 20x20 = 400 px is small, 30x30 = 900 px too (< 32^2): small has ground truth, medium and large none.
        assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["APs"] == 0.0 and metrics["AR100"] == 0.0
        assert math.isnan(metrics["APm"]) and math.isnan(metrics["APl"])
        assert metrics["per_class"] == {"a": 0.0, "b": 0.0}


# ---------------------------------------------------------------------------------------------- NaN loss
def test_nan_loss_stops_training_without_a_step_and_the_checkpoint_is_from_before(tmp_path):
    dataset = ShapesDataset(4, 64, 64, seed=0)
    model = tiny_model(dataset.num_classes)
    trainer = Trainer(model, dataset, out_dir=tmp_path, progress=False)
    trainer.train(1)  # steps 1 and 2, checkpoint epoch_0001 at step 2
    assert trainer.state.step == 2

    forward, calls, before = model.forward, [], {}

    def forward_with_nan(images, targets):
        calls.append(1)
        losses = forward(images, targets)
        if len(calls) == 2:  # global step 4: step 3 has been applied and is in no checkpoint
            before["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
            before["optimizer"] = {k: {n: t.clone() for n, t in v.items()} for k, v in trainer.optimizer.state.items()}
            losses["mrcnn_mask"] = losses["mrcnn_mask"] * float("nan")
        return losses

    model.forward = forward_with_nan
    with pytest.raises(TrainingError) as caught:
        trainer.train(2)
    message = str(caught.value)
    assert "step 4" in message
    assert "mrcnn_mask=nan" in message
    for name in LOSS_NAMES:
        assert f"{name}=" in message
    # No optimiser step: the weights and the optimiser's momentum are those after step 3.
    assert trainer.state.step == 3
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before["params"][name]), name
    for key, state in trainer.optimizer.state.items():
        for name, tensor in state.items():
            assert torch.equal(tensor, before["optimizer"][key][name])
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    # The last good checkpoint loads and is the one from before step 4 (epoch 1, step 2), with other weights
    # than the in-memory model after step 3.
    latest = trainer.checkpoints.latest()
    assert latest.name == "epoch_0001.pt"
    saved = load_file(latest)
    assert saved["step"] == 2
    restored = tiny_model(dataset.num_classes, seed=1)
    restored.load_state_dict(saved["model"])
    differs = [n for n, p in restored.named_parameters() if not torch.equal(p, before["params"][n])]
    assert differs  # step 3 changed the weights after the checkpoint


# ---------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """A finished run of two 1-step epochs: checkpoints epoch_0001.pt and epoch_0002.pt."""
    out = tmp_path_factory.mktemp("run")
    dataset = ShapesDataset(2, 64, 64, seed=3)
    trainer = Trainer(tiny_model(dataset.num_classes), dataset, out_dir=out, progress=False)
    trainer.train(2)
    return out, dataset


def _copy_run(run, tmp_path):
    out, dataset = run
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run", dataset


def test_resume_from_a_truncated_checkpoint_names_it_and_the_previous_one(two_epoch_run, tmp_path):
    out, dataset = _copy_run(two_epoch_run, tmp_path)
    damaged = out / "checkpoints" / "epoch_0002.pt"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    trainer = Trainer(tiny_model(dataset.num_classes), dataset, out_dir=out, progress=False)
    with pytest.raises(CheckpointError) as caught:
        trainer.resume()
    message = str(caught.value)
    assert str(damaged) in message
    assert "epoch_0001.pt" in message and "previous" in message
    assert damaged.read_bytes() == data[: len(data) // 2]  # the damaged file is left for the person to look at


def test_resume_with_another_config_is_refused_showing_the_difference(two_epoch_run, tmp_path):
    out, dataset = _copy_run(two_epoch_run, tmp_path)
    model = tiny_model(dataset.num_classes, learning_rate=0.005)
    initial = {n: t.clone() for n, t in model.state_dict().items()}
    trainer = Trainer(model, dataset, out_dir=out, progress=False)
    with pytest.raises(CheckpointError) as caught:
        trainer.resume()
    message = str(caught.value)
    assert "learning_rate" in message and "0.01" in message and "0.005" in message
    assert "epoch_0002.pt" in message
    assert "fpn_channels" not in message  # only the fields that differ
    assert all(torch.equal(t, initial[n]) for n, t in model.state_dict().items())  # nothing was loaded
    assert trainer.state.step == 0


def test_resume_with_the_same_config_goes_on(two_epoch_run, tmp_path):
    out, dataset = _copy_run(two_epoch_run, tmp_path)
    trainer = Trainer(tiny_model(dataset.num_classes, seed=5), dataset, out_dir=out, progress=False)
    assert trainer.resume()
    assert (trainer.state.epoch, trainer.state.step) == (2, 2)
    saved = load_file(out / "checkpoints" / "epoch_0002.pt")["model"]
    assert all(torch.equal(t, saved[n]) for n, t in trainer.model.state_dict().items())


# ---------------------------------------------------------------------------------------------- fine-tuning
def test_finetuning_weights_of_another_class_count_lists_and_reinitialises_the_heads():
    source = tiny_model(num_classes=6, seed=1)
    target = tiny_model(num_classes=3, seed=2)
    initial = {n: t.clone() for n, t in target.state_dict().items()}
    skipped = load_matching_weights(target, source)
    # The class-dependent outputs: class logits, per-class box deltas and per-class mask logits.
    assert sorted(skipped) == sorted([
        "box_head.class_logits.weight", "box_head.class_logits.bias", "box_head.deltas.weight",
        "box_head.deltas.bias", "mask_head.mask_logits.weight", "mask_head.mask_logits.bias",
    ])
    theirs = source.state_dict()
    for name, tensor in target.state_dict().items():
        if name in skipped:
            assert torch.equal(tensor, initial[name]), name  # left as freshly initialised
        else:
            assert torch.equal(tensor, theirs[name]), name  # copied


# ---------------------------------------------------------------------------------------------- killed loader worker
class DyingShapes(ShapesDataset):
    """Shapes whose data-loader worker kills itself (SIGKILL, as the OOM killer does) on one image, once."""

    def __init__(self, *args, trigger, victim, **kwargs):
        super().__init__(*args, **kwargs)
        self.trigger, self.victim = str(trigger), victim

    def __getitem__(self, index):
        if index == self.victim and torch.utils.data.get_worker_info() is not None and os.path.exists(self.trigger):
            os.remove(self.trigger)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(index)


def test_killed_loader_worker_stops_the_run_naming_it_and_the_run_resumes(tmp_path):
    trigger = tmp_path / "armed"
    dataset = DyingShapes(4, 64, 64, seed=0, trigger=trigger, victim=2)
    out = tmp_path / "run"
    trainer = Trainer(tiny_model(dataset.num_classes), dataset, out_dir=out, num_workers=1, progress=False)
    trainer.train(1)
    trigger.touch()  # the worker of epoch 2 dies on image 2
    with pytest.raises(TrainingError) as caught:
        trainer.train(2)
    assert not trigger.exists()  # it did die there
    message = str(caught.value)
    assert "worker 0" in message
    pid = int(trainer.worker_log.pids[0])
    assert pid > 0 and str(pid) in message and pid != os.getpid()
    # The images it was given, the one it died on last.
    given = message.split("the one it was loading last: ")[1].split(" (torch:")[0]
    assert given.endswith(repr(dataset.image_reference(2)))
    assert "epoch_0001.pt" in message and "resume" in message

    resumed = Trainer(tiny_model(dataset.num_classes, seed=9), dataset, out_dir=out, num_workers=1, progress=False)
    assert resumed.resume()
    assert (resumed.state.epoch, resumed.state.step) == (1, 2)
    state = resumed.train(2)
    assert (state.epoch, state.step) == (2, 4)
    assert resumed.checkpoints.latest().name == "epoch_0002.pt"
