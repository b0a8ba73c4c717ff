"""Training: gradients reaching every head, layer selection, the schedule, resume in a new process,
a non-finite loss stopping before the optimiser step, and overfitting a few images."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import load_file
from maskrcnn.data import ShapesDataset
from maskrcnn.errors import TrainingError
from maskrcnn.evaluation import evaluate_map
from maskrcnn.train import Trainer, learning_rate_at, select_trainable

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAD_PREFIXES = ("rpn.", "box_head.", "mask_head.", "backbone.fpn.")
TRUNK_PREFIX = "backbone.trunk."


def tiny_config(size: int = 64, **overrides) -> maskrcnn.Config:
    return maskrcnn.Config.demo(image_min_dim=size, image_max_dim=size, **overrides)


def snapshot(named) -> dict:
    return {name: value.detach().clone() for name, value in named}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return maskrcnn.MaskRCNN(tiny_config())


# ---------------------------------------------------------------------------------------------- gradients
def test_one_backward_reaches_every_parameter_of_every_head_and_the_trunk():
    torch.manual_seed(0)
    model = maskrcnn.MaskRCNN(tiny_config(size=128), class_names=["BG", "square", "circle", "triangle"])
    small, large = ShapesDataset(1, 96, 112, seed=2), ShapesDataset(1, 128, 128, seed=4)
    (image_a, target_a), (image_b, target_b) = small[0], large[0]
    model.train()
    losses = model([image_a, image_b], [target_a, target_b])
    sum(losses.values()).backward()

    checked = 0
    for name, parameter in model.named_parameters():
        assert name.startswith(HEAD_PREFIXES + (TRUNK_PREFIX,)), name  # nothing outside these groups
        if not parameter.requires_grad:  # frozen batch norm (train_bn=False) has no trainable parameters
            continue
        assert parameter.grad is not None, f"{name}: no gradient"
        assert torch.count_nonzero(parameter.grad) > 0, f"{name}: gradient is all zero"
        checked += 1
    assert checked == len(list(model.parameters()))  # the demo preset trains batch norm: nothing excluded

    # The box and mask losses use each positive's true class only: class 0 (background) never gets one.
    assert torch.count_nonzero(model.box_head.deltas.weight.grad[:4]) == 0  # (C*4, hidden): rows of class 0
    assert torch.count_nonzero(model.mask_head.mask_logits.weight.grad[0]) == 0  # (C, channels, 1, 1)
    present = set(target_a["labels"].tolist()) | set(target_b["labels"].tolist())
    for class_id in range(1, 4):
        has_gradient = bool(torch.count_nonzero(model.mask_head.mask_logits.weight.grad[class_id]) > 0)
        assert has_gradient == (class_id in present), class_id


# ---------------------------------------------------------------------------------------------- layer choices
def _trunk_names(model, *stages) -> set:
    return {n for n, _ in model.named_parameters() if any(n.startswith(f"{TRUNK_PREFIX}{s}.") for s in stages)}


def _expected_selection(model, layers: str) -> set:
    every = {n for n, _ in model.named_parameters()}
    heads = {n for n in every if n.startswith(HEAD_PREFIXES)}
    return {
        "heads": heads,
        "5+": heads | _trunk_names(model, "layer4"),
        "4+": heads | _trunk_names(model, "layer3", "layer4"),
        "3+": heads | _trunk_names(model, "layer2", "layer3", "layer4"),
        "all": every,
        r"mask_head\..*": {n for n in every if n.startswith("mask_head.")},
        r"(rpn|box_head)\..*": {n for n in every if n.startswith(("rpn.", "box_head."))},
    }[layers]


@pytest.mark.parametrize("layers", [
    "heads", "all", r"mask_head\..*", r"(rpn|box_head)\..*",
    "5+", "4+", "3+",
])
def test_layer_choice_selects_the_expected_parameter_groups(tiny_model, layers):
    model = tiny_model
    every = {n for n, _ in model.named_parameters()}
    heads = _expected_selection(model, "heads")
    assert heads and every - heads == {n for n in every if n.startswith(TRUNK_PREFIX)}
    # Each choice adds whole stages: layer1, conv1 and bn1 stay out of "3+".
    assert _trunk_names(model, "layer1") and not (_trunk_names(model, "layer1") & _expected_selection(model, "3+"))
    select_trainable(model, "all")
    try:
        chosen = select_trainable(model, layers)
        assert set(chosen) == _expected_selection(model, layers)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == set(chosen)
    finally:
        select_trainable(model, "all")


def test_a_new_layer_choice_turns_the_previous_one_off(tiny_model):
    select_trainable(tiny_model, "all")
    select_trainable(tiny_model, "heads")
    assert {n for n, p in tiny_model.named_parameters() if p.requires_grad} == _expected_selection(tiny_model, "heads")
    select_trainable(tiny_model, "all")


@pytest.mark.parametrize("layers", ["(unclosed", "[z-a]", "no_such_layer.*"])
def test_invalid_or_empty_layer_choice_is_a_value_error(tiny_model, layers):
    with pytest.raises(ValueError, match="layers="):
        select_trainable(tiny_model, layers)


def _heads_step(tmp_path):
    torch.manual_seed(0)
    data = ShapesDataset(2, 64, 64, seed=6)
    model = maskrcnn.MaskRCNN(tiny_config(images_per_batch=2, lr_warmup_steps=0), class_names=data.class_names)
    before_parameters = snapshot(model.named_parameters())
    before_state = snapshot(model.state_dict().items())
    Trainer(model, data, out_dir=tmp_path, progress=False).train(epochs=1, layers="heads")
    return model, before_parameters, before_state


def test_heads_only_training_leaves_the_trunk_parameters_unchanged(tmp_path):
    model, before, _ = _heads_step(tmp_path)
    for name, parameter in model.named_parameters():
        if name.startswith(TRUNK_PREFIX):
            assert torch.equal(parameter, before[name]), f"{name} changed"
        else:
            assert not torch.equal(parameter, before[name]), f"{name} did not change"


def test_heads_only_training_leaves_the_trunk_state_unchanged(tmp_path):
    model, _, before = _heads_step(tmp_path)
    changed = [name for name, value in model.state_dict().items()
               if name.startswith(TRUNK_PREFIX) and not torch.equal(value, before[name])]
    assert changed == []


# ---------------------------------------------------------------------------------------------- schedule
def test_learning_rate_warm_up_then_cosine_by_hand():
    rate = lambda step: learning_rate_at(step, 110, base=0.1, warmup_steps=10, schedule="cosine")
    assert rate(0) == pytest.approx(0.01)  # base / 10
    assert rate(5) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))  # = 0.055, half-way up the line
    assert rate(10) == pytest.approx(0.1)  # cosine starts at the base
    assert rate(35) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))  # a quarter: 0.08536
    assert rate(60) == pytest.approx(0.05)  # half-way
    assert rate(110) == pytest.approx(0.0, abs=1e-12)
    assert rate(150) == pytest.approx(0.0, abs=1e-12)  # past the end stays at 0


def test_learning_rate_step_and_constant_by_hand():
    rate = lambda step: learning_rate_at(step, 100, base=0.02, warmup_steps=0, schedule="step", drops=(0.5, 0.75))
    assert [rate(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002])
    assert learning_rate_at(3, 100, base=0.02, warmup_steps=4, schedule="constant") == pytest.approx(0.02 * (0.1 + 0.9 * 0.75))
    assert learning_rate_at(80, 100, base=0.02, warmup_steps=4, schedule="constant") == 0.02


# ---------------------------------------------------------------------------------------------- resume
RESUME_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    import maskrcnn
    from maskrcnn.data import ShapesDataset
    from maskrcnn.train import Trainer

    out, mode = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    data = ShapesDataset(4, 64, 64, seed=3)
    config = maskrcnn.Config.demo(image_min_dim=64, image_max_dim=64, images_per_batch=2, lr_warmup_steps=3,
                                  lr_schedule="cosine", learning_rate=0.01)
    model = maskrcnn.MaskRCNN(config, class_names=data.class_names)
    trainer = Trainer(model, data, out_dir=out, seed=5, progress=False)
    if mode == "stop":  # the process ends right after the first epoch's checkpoint is written
        save = trainer.save_checkpoint
        def save_then_stop():
            save()
            raise SystemExit(0)
        trainer.save_checkpoint = save_then_stop
    if mode == "resume" and not trainer.resume():
        sys.exit("nothing to resume from")
    trainer.train(epochs=2, layers="all")
""")


def _run_training(out_dir: Path, mode: str) -> None:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(out_dir), mode], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_resume_in_a_new_process_gives_the_same_weights(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _run_training(straight, "full")  # 2 epochs x 2 steps in one go
    _run_training(interrupted, "stop")  # epoch 1 (steps 1-2), then the process ends
    stopped = load_file(interrupted / "checkpoints" / "epoch_0001.pt")
    assert not (interrupted / "checkpoints" / "epoch_0002.pt").exists()
    _run_training(interrupted, "resume")  # a new process: epoch 2 (steps 3-4) from the checkpoint

    # What a checkpoint holds.
    assert {"model", "optimizer", "step", "epoch", "rng", "config", "class_names"} <= set(stopped)
    assert stopped["step"] == 2 and stopped["epoch"] == 1
    assert stopped["class_names"] == ["BG", "square", "circle", "triangle"]
    expected_config = tiny_config(images_per_batch=2, lr_warmup_steps=3, lr_schedule="cosine", learning_rate=0.01)
    assert maskrcnn.Config.from_dict(stopped["config"]) == expected_config
    assert {"python", "numpy", "torch"} <= set(stopped["rng"])
    assert len(stopped["optimizer"]["state"]) > 0  # the optimiser's per-parameter state is saved

    one_go = load_file(straight / "checkpoints" / "epoch_0002.pt")
    resumed = load_file(interrupted / "checkpoints" / "epoch_0002.pt")
    assert one_go["step"] == resumed["step"] == 4
    # CPU arithmetic in one thread is deterministic: the weights agree exactly (tolerance 0).
    assert one_go["model"].keys() == resumed["model"].keys()
    for name, value in one_go["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    # The optimiser's state (momentum or Adam moments, whichever the preset uses) agrees exactly too.
    assert one_go["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    for index, state in one_go["optimizer"]["state"].items():
        for key, value in state.items():
            other = resumed["optimizer"]["state"][index][key]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (index, key)
    # Training did go on after the stop: epoch 2 differs from epoch 1.
    assert any(not torch.equal(value, stopped["model"][name]) for name, value in resumed["model"].items())


# ---------------------------------------------------------------------------------------------- non-finite loss
def test_nan_loss_stops_before_the_optimiser_step(tmp_path):
    torch.manual_seed(0)
    data = ShapesDataset(2, 64, 64, seed=8)
    model = maskrcnn.MaskRCNN(tiny_config(images_per_batch=1, lr_warmup_steps=0), class_names=data.class_names)
    trainer = Trainer(model, data, out_dir=tmp_path, progress=False)
    real_forward, calls, seen = model.forward, [], {}

    def forward_with_nan_at_step_3(images, targets):
        calls.append(1)
        if len(calls) == 3:
            seen["parameters"] = snapshot(model.named_parameters())  # after step 2, before step 3
        losses = real_forward(images, targets)
        if len(calls) == 3:
            losses["mrcnn_mask"] = losses["mrcnn_mask"] * float("nan")
            seen["values"] = {name: float(value.detach()) for name, value in losses.items()}
        return losses

    model.forward = forward_with_nan_at_step_3
    with pytest.raises(TrainingError) as raised:
        trainer.train(epochs=2, layers="all")  # 2 steps an epoch: step 3 opens epoch 2
    message = str(raised.value)
    assert "step 3" in message
    for name, value in seen["values"].items():
        assert f"{name}={value}" in message
    assert "mrcnn_mask=nan" in message
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, seen["parameters"][name]), f"{name} changed after the NaN"
    assert trainer.state.step == 2
    # The last good checkpoint is untouched and still the latest; the log holds steps 1 and 2 only.
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["path"] == "epoch_0001.pt"
    assert not (tmp_path / "checkpoints" / "epoch_0002.pt").exists()
    logged = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged] == [1, 2]


# ---------------------------------------------------------------------------------------------- overfitting
class Repeated(torch.utils.data.Dataset):
    """The same few images over and over, so that one epoch holds every step (one checkpoint, one schedule)."""

    def __init__(self, dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, index):
        return self.dataset[index % len(self.dataset)]

    def image_reference(self, index) -> str:
        return self.dataset.image_reference(index % len(self.dataset))


OVERFIT_IMAGES, OVERFIT_SIZE, OVERFIT_STEPS = 4, 96, 80
# Measured on this 2-core machine, one thread: about 60 s of CPU for the 80 steps, box and mask mAP@0.5 1.0;
# on identical targets the trained model's mrcnn_bbox was 0.32x the untrained one's (0.47x after 60 steps),
# the other four under 0.05x. SGD (lr 0.02, warm-up 10) reached mAP 0.98 in 80 steps; AdamW converges faster.
OVERFIT_CONFIG = dict(images_per_batch=OVERFIT_IMAGES, optimizer="adamw", learning_rate=1e-3, lr_warmup_steps=10,
                      lr_schedule="cosine")


def _losses_on(model, images, targets, seed, proposals_to_use=None, monkeypatch=None):
    """The model's five losses on a batch with the target sampling seeded; optionally with given proposals."""
    recorded = []
    real_propose = model.propose_training  # the proposal layer the model's training forward calls

    def propose(*args, **kwargs):
        found = real_propose(*args, **kwargs) if proposals_to_use is None else proposals_to_use
        recorded.append(found)
        return found

    monkeypatch.setattr(model, "propose_training", propose)
    torch.manual_seed(seed)
    with torch.no_grad():
        losses = {name: value.item() for name, value in model(images, targets).items()}
    monkeypatch.setattr(model, "propose_training", real_propose)
    return losses, recorded[0]


def test_overfit_a_few_images(tmp_path, monkeypatch):
    import copy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 shared cores one thread wastes nothing on spinning workers
    try:
        _overfit(tmp_path, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _overfit(tmp_path, monkeypatch):
    import copy

    torch.manual_seed(0)
    data = ShapesDataset(OVERFIT_IMAGES, OVERFIT_SIZE, OVERFIT_SIZE, seed=1)
    model = maskrcnn.MaskRCNN(tiny_config(OVERFIT_SIZE, **OVERFIT_CONFIG), class_names=data.class_names)
    untrained = copy.deepcopy(model)
    trainer = Trainer(model, Repeated(data, OVERFIT_STEPS), out_dir=tmp_path, progress=False)
    trainer.train(epochs=1, layers="all")
    history = [record for record in trainer.state.history if "loss" in record]
    assert len(history) == OVERFIT_STEPS
    names = ("rpn_class", "rpn_bbox", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask")
    first = history[0]
    last = {name: sum(r[name] for r in history[-5:]) / 5 for name in names}  # the last 5 steps, against noise

    # Each loss against its first step. mrcnn_bbox is left out here: at the first step the random RPN proposes
    # nothing near an object, so the only positive ROIs are the ground-truth boxes themselves, whose box
    # targets are 0 and the loss starts near 0 (0.02); it rises as real proposals appear.
    for name in ("rpn_class", "rpn_bbox", "mrcnn_class", "mrcnn_mask"):
        assert last[name] < 0.25 * first[name], (name, first[name], last[name])

    # All five on identical targets: the trained and the untrained model on the same images, the same
    # proposals (the trained model's) and the same sampled anchors and ROIs.
    images, targets = zip(*(data[i] for i in range(len(data))))
    trained_losses, proposals = _losses_on(copy.deepcopy(model), list(images), list(targets), 11, monkeypatch=monkeypatch)
    untrained_losses, _ = _losses_on(untrained, list(images), list(targets), 11, proposals, monkeypatch)
    for name in names:
        assert trained_losses[name] < 0.5 * untrained_losses[name], (name, untrained_losses[name], trained_losses[name])

    scores = evaluate_map(model, data, batch_size=OVERFIT_IMAGES)
    assert scores["mask_map50"] >= 0.9, scores
    assert scores["box_map50"] >= 0.9, scores


# ---------------------------------------------------------------------------------------------- gradient scaler
def _scaled_trainer(out, init_scale: float) -> Trainer:
    """A demo-preset trainer whose loss scaler is enabled on the CPU (torch.amp.GradScaler("cpu")), so that its
    state changes step by step: growth_interval 1 doubles the scale after every step with finite gradients."""
    torch.manual_seed(0)
    data = ShapesDataset(4, 64, 64, seed=3)
    config = tiny_config(images_per_batch=2, lr_warmup_steps=0, lr_schedule="constant")
    trainer = Trainer(maskrcnn.MaskRCNN(config, class_names=data.class_names), data, out_dir=out, progress=False)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1)
    return trainer


def test_checkpoint_holds_the_gradient_scaler_and_resume_restores_it(tmp_path):
    trainer = _scaled_trainer(tmp_path, init_scale=2.0 ** 10)
    trainer.train(epochs=1)  # two steps
    grown = trainer.scaler.get_scale()
    assert grown == 2.0 ** 12  # 1024 doubled after each of the two steps
    saved = load_file(trainer.checkpoints.latest())["scaler"]
    assert saved == trainer.scaler.state_dict() and saved["scale"] == grown
    resumed = _scaled_trainer(tmp_path, init_scale=1.0)
    assert resumed.resume()
    assert resumed.scaler.get_scale() == grown and resumed.scaler.state_dict() == saved


def test_a_disabled_scaler_saves_an_empty_state_that_resume_skips(tmp_path):
    trainer = _scaled_trainer(tmp_path, init_scale=2.0 ** 10)
    trainer.scaler = torch.amp.GradScaler("cuda", enabled=False)  # training without CUDA amp
    trainer.train(epochs=1, max_steps=1)
    assert load_file(trainer.checkpoints.latest())["scaler"] == {}
    resumed = _scaled_trainer(tmp_path, init_scale=8.0)
    assert resumed.resume() and resumed.scaler.get_scale() == 8.0  # nothing to load: the scaler is as built


# ---------------------------------------------------------------------------------------------- learning rate
def test_linear_scaling_rule_from_the_reference_batch_and_a_user_rate_as_given():
    preset = maskrcnn.Config.torchvision(num_classes=3)
    assert (preset.learning_rate, preset.lr_reference_batch) == (0.02, 16)
    assert preset.lr_schedule == "step" and preset.lr_steps == (16 / 26, 22 / 26)
    assert preset.training_learning_rate(2)[0] == pytest.approx(0.0025)  # 0.02 x 2 / 16
    assert preset.training_learning_rate(16)[0] == pytest.approx(0.02)
    assert "linear scaling rule" in preset.training_learning_rate(2)[1]
    assert maskrcnn.Config.torchvision_v2(num_classes=3).training_learning_rate(4)[0] == pytest.approx(0.005)
    for user in (maskrcnn.Config.torchvision(num_classes=3, learning_rate=0.01), preset.replace(learning_rate=0.01),
                 maskrcnn.Config.torchvision_v2(num_classes=3, learning_rate=0.01)):
        assert user.training_learning_rate(2) == (0.01, "learning_rate 0.01 as given")
    demo = maskrcnn.Config.demo()
    assert (demo.optimizer, demo.learning_rate, demo.images_per_batch, demo.lr_reference_batch) == ("adamw", 0.002, 8, 0)
    assert demo.training_learning_rate(8)[0] == 0.002


def test_trainer_steps_at_the_scaled_rate_and_says_why(tmp_path):
    torch.manual_seed(0)
    data = ShapesDataset(2, 64, 64, seed=3)
    config = tiny_config(images_per_batch=2, lr_warmup_steps=0, lr_schedule="constant", optimizer="sgd",
                         learning_rate=0.02, lr_reference_batch=16)
    lines = []
    trainer = Trainer(maskrcnn.MaskRCNN(config, class_names=data.class_names), data, out_dir=tmp_path,
                      progress=False, report=lines.append)
    trainer.train(epochs=1)
    assert trainer.state.history[0]["lr"] == pytest.approx(0.0025)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert any(line.startswith("learning rate 0.0025 (0.02 x 2 / 16") for line in lines)
