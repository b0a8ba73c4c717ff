"""Training in bounded time: --max-steps / max_steps stops exactly and resumes mid-epoch on the same batches,
a time budget stops, checkpoints every N steps; unreadable images counted by the trainer."""
import json

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import load_file
from maskrcnn.data import ShapesDataset
from maskrcnn.errors import ConfigError, DataError
from maskrcnn.train import Trainer


def _trainer(out, count=4, **kwargs) -> Trainer:
    """Demo-preset model on 64x64 shapes, 2 images a batch: count / 2 steps an epoch. A constant learning
    rate: max_steps ends the schedule where the run ends, which would tell a stopped run from a longer one."""
    torch.manual_seed(0)
    data = ShapesDataset(count, 64, 64, seed=3)
    config = maskrcnn.Config.demo(image_min_dim=64, image_max_dim=64, images_per_batch=2, lr_warmup_steps=0,
                                  lr_schedule="constant")
    return Trainer(maskrcnn.MaskRCNN(config, class_names=data.class_names), data, out_dir=out, progress=False, **kwargs)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in both runs, so weights can be compared exactly
    yield
    torch.set_num_threads(threads)


def test_max_steps_stops_exactly_and_resumes_mid_epoch_with_the_same_weights(tmp_path, one_thread):
    stopped = _trainer(tmp_path / "stopped")
    state = stopped.train(epochs=5, max_steps=3)  # 2 steps an epoch: step 3 is epoch 2's first
    assert (state.step, state.epoch, state.position) == (3, 1, 1)
    names = [p.name for p in stopped.checkpoints.list_checkpoints()]
    assert names == ["epoch_0001.pt", "epoch_0002_step_00000003.pt"]
    assert stopped.checkpoints.latest().name == "epoch_0002_step_00000003.pt"

    resumed = _trainer(tmp_path / "stopped")
    assert resumed.resume() and (resumed.state.step, resumed.state.position) == (3, 1)
    assert resumed.train(epochs=2).step == 4  # only epoch 2's second batch was left
    log = [json.loads(line) for line in (tmp_path / "stopped" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]

    straight = _trainer(tmp_path / "straight")
    straight.train(epochs=2)
    ours, theirs = load_file(tmp_path / "stopped" / "checkpoints" / "epoch_0002.pt"), load_file(tmp_path / "straight" / "checkpoints" / "epoch_0002.pt")
    for name, value in theirs["model"].items():  # step 4 saw the same images as in one go
        assert torch.equal(value, ours["model"][name]), name


def test_max_steps_already_reached_trains_nothing(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train(epochs=1, max_steps=1)
    assert trainer.train(epochs=3, max_steps=1).step == 1
    with pytest.raises(ConfigError, match="max_steps"):
        trainer.train(epochs=3, max_steps=0)


def test_time_budget_stops_after_the_step_that_spends_it(tmp_path):
    trainer = _trainer(tmp_path)
    state = trainer.train(epochs=3, time_budget=1e-9)  # spent during the first step, whatever the machine
    assert state.step == 1 and state.epoch == 0
    assert [p.name for p in trainer.checkpoints.list_checkpoints()] == ["epoch_0001_step_00000001.pt"]


@pytest.mark.parametrize("every, expected", [
    (2, ["epoch_0001_step_00000002.pt", "epoch_0002_step_00000004.pt", "epoch_0002.pt"]),
    (4, ["epoch_0002_step_00000004.pt", "epoch_0002.pt"]),  # step 6, the run's end, is always kept
])
def test_checkpoint_every_n_steps(tmp_path, every, expected):
    trainer = _trainer(tmp_path, count=6, checkpoint_every=every, keep_checkpoints=None)  # 3 steps an epoch
    trainer.train(epochs=2)
    assert [p.name for p in trainer.checkpoints.list_checkpoints()] == expected
    assert [load_file(p)["step"] for p in trainer.checkpoints.list_checkpoints()] == [int(n[-11:-3]) if "step" in n else 6 for n in expected]


class Unreadable(ShapesDataset):
    """Shapes whose images listed in `broken` cannot be read."""

    def __init__(self, *args, broken=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.broken = set(broken)

    def load_image(self, index):
        if index in self.broken:
            raise DataError(f"image {index}: shape_{index}.png: cannot read the image")
        return super().load_image(index)


def test_too_many_unreadable_images_stop_training_with_their_list(tmp_path):
    data = Unreadable(20, 64, 64, seed=1, broken=(3, 7))
    config = maskrcnn.Config.demo(image_min_dim=64, image_max_dim=64, images_per_batch=4, lr_warmup_steps=0)
    trainer = Trainer(maskrcnn.MaskRCNN(config, class_names=data.class_names), data, out_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning), pytest.raises(DataError) as caught:
        trainer.train(epochs=1)  # 2 of 20 > 5%
    message = str(caught.value)
    assert "max_unreadable_fraction=0.05" in message and "shape_3.png" in message and "shape_7.png" in message
    assert not (tmp_path / "checkpoints" / "epoch_0001.pt").exists()

    allowing = Trainer(maskrcnn.MaskRCNN(config, class_names=data.class_names), data, out_dir=tmp_path / "b",
                       progress=False, max_unreadable_fraction=0.1)
    with pytest.warns(UserWarning):
        assert allowing.train(epochs=1).step == 5
    assert set(allowing.unreadable) == {data.image_reference(3), data.image_reference(7)}
