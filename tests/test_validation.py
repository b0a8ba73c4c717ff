"""Validation during training: measured without changing the run (batch-norm statistics, module modes, random
streams), logged beside the training losses, best.pt by a chosen metric, early stopping, TensorBoard files
(and one line without the tensorboard package)."""
import builtins
import json
import math
import random

import numpy as np
import pytest
import torch

import maskrcnn
from maskrcnn.data import ShapesDataset
from maskrcnn.errors import ConfigError
from maskrcnn.train import Trainer
from maskrcnn.validation import METRICS, Monitor, untouched, validate

SIZE = 64
CLASSES = ["BG", "square", "circle", "triangle"]


def tiny_model(seed: int = 0) -> maskrcnn.MaskRCNN:
    torch.manual_seed(seed)
    config = maskrcnn.Config.demo(image_min_dim=SIZE, image_max_dim=SIZE, images_per_batch=2)
    return maskrcnn.MaskRCNN(config, class_names=CLASSES)


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_validation_changes_no_batch_norm_statistic_no_mode_and_no_random_stream():
    model = tiny_model()
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()  # as freeze_unselected_norms leaves a frozen trunk: it must stay in eval mode
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7), np.random.seed(7), random.seed(7)

    metrics, pictures = validate(model, ShapesDataset(3, SIZE, SIZE, seed=5), batch_size=2, pictures=2)

    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]
    for name, value in model.state_dict().items():  # running_mean, running_var, num_batches_tracked included
        assert torch.equal(value, buffers[name]), name
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert set(metrics) == set(METRICS)
    assert all(math.isfinite(metrics[name]) and metrics[name] > 0 for name in ("loss", "rpn_class", "mrcnn_class"))
    assert metrics["loss"] == pytest.approx(sum(metrics[n] for n in ("rpn_class", "rpn_bbox", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask")))
    assert len(pictures) == 2 and pictures[0].shape == (SIZE, SIZE, 3) and pictures[0].dtype == np.uint8


def test_a_forward_in_train_mode_would_have_moved_the_statistics():
    # The counterpart of the test above: without `untouched` the same losses change the running statistics.
    model = tiny_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    image, target = ShapesDataset(1, SIZE, SIZE, seed=5)[0]
    with torch.no_grad():
        model([image], [target])
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in before.items())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    with untouched(model):
        model([image], [target])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert model.training


def test_monitor_best_and_patience():
    ap = Monitor("segm_AP", patience=2)
    assert [ap.update(v, s) for s, v in enumerate([0.1, 0.3, 0.2, float("nan")])] == [True, True, False, False]
    assert ap.best == 0.3 and ap.best_step == 1 and ap.should_stop
    assert "segm_AP has not improved for 2 evaluations" in ap.stop_reason()
    loss = Monitor("loss")
    assert [loss.update(v, s) for s, v in enumerate([2.0, 1.0, 1.5])] == [True, True, False]
    assert not loss.should_stop  # no patience: never
    with pytest.raises(ConfigError, match="segm_APx"):
        Monitor("segm_APx")
    with pytest.raises(ConfigError, match="patience"):
        Monitor("loss", patience=0)


def _trainer(tmp_path, **options) -> Trainer:
    return Trainer(tiny_model(), ShapesDataset(4, SIZE, SIZE, seed=1), out_dir=tmp_path, seed=0, progress=False,
                   val_dataset=ShapesDataset(2, SIZE, SIZE, seed=9), **options)


def test_every_n_steps_validation_is_logged_best_pt_kept_and_patience_stops(tmp_path):
    lines = []
    # "loss" on a tiny model: the validation loss moves every step, so improvements and stalls both happen;
    # with patience 1 the run stops at the first evaluation that does not improve.
    trainer = _trainer(tmp_path, eval_every=1, best_metric="loss", patience=1, report=lines.append,
                       keep_checkpoints=2)  # 2 images a batch: 2 steps an epoch
    state = trainer.train(epochs=5)
    records = read_log(tmp_path / "train_log.jsonl")
    validations = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "loss" in r]
    assert [v["step"] for v in validations] == [s["step"] for s in steps]  # one after every step
    assert {f"val_{name}" for name in METRICS} <= set(validations[0])
    values = [v["val_loss"] for v in validations]
    # It stopped at the first evaluation that was not a new best (patience 1), so every one before improved.
    first_stall = next(k for k in range(1, len(values)) if values[k] >= min(values[:k]))
    assert len(values) == first_stall + 1 and state.step == first_stall + 1 < 10
    best = first_stall - 1
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["metric"] == "loss" and saved["value"] == pytest.approx(min(values)) and saved["step"] == validations[best]["step"]
    assert isinstance(maskrcnn.load(tmp_path / "best.pt"), maskrcnn.MaskRCNN)
    assert any("early stop: loss has not improved for 1 evaluations" in line for line in lines)
    assert len(trainer.checkpoints.list_checkpoints()) <= 2  # keep


def test_epoch_validation_and_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")  # the extra; the test below covers its absence
    lines = []
    trainer = _trainer(tmp_path, tensorboard=True, report=lines.append)
    trainer.train(epochs=1)
    validations = [r for r in read_log(tmp_path / "train_log.jsonl") if "val_segm_AP" in r]
    assert len(validations) == 1 and validations[0]["step"] == 2
    assert (tmp_path / "best.pt").is_file()  # the first evaluation is always the best so far
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/mrcnn_mask", "lr", "val/loss", "val/segm_AP", "val/bbox_AP"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("val/segm_AP")] == pytest.approx([validations[0]["val_segm_AP"]])
    assert {"val/picture_0", "val/picture_1"} <= set(tags["images"])
    assert not any("tensorboard package" in line for line in lines)


def test_without_tensorboard_nothing_is_written_and_one_line_says_how_to_get_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    lines = []
    trainer = _trainer(tmp_path, tensorboard=True, report=lines.append)
    trainer.train(epochs=1, max_steps=1)
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    hints = [line for line in lines if "maskrcnn[tensorboard]" in line]
    assert len(hints) == 1
    assert any("val_loss" in r for r in read_log(tmp_path / "train_log.jsonl"))  # the JSON log is still complete
