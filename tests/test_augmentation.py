"""`maskrcnn train` augments by default (horizontal flips, and a shorter side drawn per image where the config
resizes); --no-augment turns both off."""
import pytest

from maskrcnn import cli
from maskrcnn.data import HorizontalFlip


class _Stop(Exception):
    """Raised by the recording Trainer: the test needs the arguments, not a training run."""


@pytest.fixture
def trainer_arguments(monkeypatch):
    import maskrcnn.train

    seen = {}

    def record(self, model, dataset, **kwargs):
        seen.update(kwargs, config=model.config)
        raise _Stop

    monkeypatch.setattr(maskrcnn.train.Trainer, "__init__", record)
    return seen


def _train(tmp_path, *flags):
    with pytest.raises(_Stop):
        cli.main(["train", "--data", "shapes:4:64:1", "--out", str(tmp_path / "run"), "--no-progress", *flags])


def test_train_flips_and_draws_sizes_by_default(tmp_path, trainer_arguments, capsys):
    _train(tmp_path, "--preset", "torchvision")
    assert isinstance(trainer_arguments["transform"], HorizontalFlip) and trainer_arguments["transform"].p == 0.5
    assert trainer_arguments["config"].image_min_dim_choices == (640, 672, 704, 736, 768, 800)
    assert "augmentation: horizontal flip" in capsys.readouterr().out


def test_a_preset_that_does_not_resize_gets_flips_only(tmp_path, trainer_arguments):
    _train(tmp_path, "--preset", "demo")
    assert isinstance(trainer_arguments["transform"], HorizontalFlip)
    assert trainer_arguments["config"].image_min_dim_choices == ()


def test_no_augment_gives_none(tmp_path, trainer_arguments, capsys):
    _train(tmp_path, "--preset", "torchvision", "--no-augment")
    assert trainer_arguments["transform"] is None
    assert trainer_arguments["config"].image_min_dim_choices == ()
    assert "augmentation: none (--no-augment)" in capsys.readouterr().out


def test_choices_the_user_sets_are_kept(tmp_path, trainer_arguments):
    _train(tmp_path, "--preset", "torchvision", "--set", "image_min_dim_choices=[600, 800]")
    assert trainer_arguments["config"].image_min_dim_choices == (600, 800)
