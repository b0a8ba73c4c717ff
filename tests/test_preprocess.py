"""Pre-processing: the training-time choice of each image's size (scale augmentation) and inference's fixed size."""
import pytest
import torch

import maskrcnn
from maskrcnn.errors import ConfigError
from maskrcnn.preprocess import Preprocessor, window_size

CHOICES = (32, 48, 64)


def _preprocessor(**overrides) -> Preprocessor:
    settings = dict(resize_mode="shorter_side", min_dim=64, max_dim=200, size_divisor=32, pixel_mean=(0.5,) * 3,
                    pixel_std=(0.25,) * 3, min_dim_choices=CHOICES)
    settings.update(overrides)
    return Preprocessor(**settings)


def test_training_draws_each_images_shorter_side_from_the_choices():
    preprocessor = _preprocessor()
    images = [torch.rand(3, 40, 60) for _ in range(8)]
    generator = torch.Generator().manual_seed(0)
    batch = preprocessor.training_batch(images, generator)
    short_sides = [min(window_size(w)) for w in batch.windows]
    assert set(short_sides) <= set(CHOICES) and len(set(short_sides)) >= 2  # same-size images, different sizes
    # By hand: shorter side 40 -> d, longer side 60 -> 1.5 d (floor, as torchvision's resize)
    assert [window_size(w) for w in batch.windows] == [(d, int(1.5 * d)) for d in short_sides]
    assert batch.scales == [(d / 40, int(1.5 * d) / 60) for d in short_sides]
    again = preprocessor.training_batch(images, torch.Generator().manual_seed(0))
    assert again.windows == batch.windows  # the generator fixes the draws


def test_inference_always_uses_image_min_dim():
    preprocessor = _preprocessor()
    for _ in range(3):
        batch = preprocessor([torch.rand(3, 40, 60), torch.rand(3, 50, 50)])
        assert [window_size(w) for w in batch.windows] == [(64, 96), (64, 64)]


def test_no_choices_is_the_configured_size():
    batch = _preprocessor(min_dim_choices=()).training_batch([torch.rand(3, 40, 60)], torch.Generator().manual_seed(0))
    assert window_size(batch.windows[0]) == (64, 96)


def test_the_model_resizes_target_masks_to_the_drawn_size_and_predicts_at_image_min_dim():
    config = maskrcnn.Config.demo(image_resize_mode="shorter_side", image_min_dim=64, image_max_dim=200,
                                  image_min_dim_choices=CHOICES)
    torch.manual_seed(0)
    model = maskrcnn.MaskRCNN(config)
    windows, mask_sizes = [], []
    training_batch, resize_masks = model.preprocessor.training_batch, model.preprocessor.resize_masks

    def record_batch(images, generator=None):
        batch = training_batch(images, generator)
        windows.extend(window_size(w) for w in batch.windows)
        return batch

    def record_masks(masks, size):
        resized = resize_masks(masks, size)
        mask_sizes.append(tuple(resized.shape[-2:]))
        return resized

    model.preprocessor.training_batch, model.preprocessor.resize_masks = record_batch, record_masks
    images = [torch.rand(3, 40, 60) for _ in range(4)]
    masks = torch.zeros(1, 40, 60, dtype=torch.bool)
    masks[0, 10:30, 20:50] = True
    targets = [{"boxes": torch.tensor([[20.0, 10, 50, 30]]), "labels": torch.tensor([1]), "masks": masks} for _ in images]
    model.train()
    torch.manual_seed(1)
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert len(windows) == 4 and {min(w) for w in windows} <= set(CHOICES) and len({min(w) for w in windows}) >= 2
    assert mask_sizes == windows  # each image's masks resized to that image's drawn size
    predicted = model.predict([torch.rand(3, 40, 60)])
    assert len(windows) == 4  # predict does not draw
    assert predicted[0].masks.shape[-2:] == (40, 60)


def test_choices_must_resize_something():
    with pytest.raises(ConfigError, match="image_min_dim_choices"):
        maskrcnn.Config.demo(image_min_dim_choices=(96, 128))  # the demo's image_resize_mode is "none"
    with pytest.raises(ConfigError, match="image_min_dim_choices"):
        maskrcnn.Config.matterport(image_min_dim_choices=(640, 800))
    with pytest.raises(ConfigError, match="image_min_dim_choices"):
        maskrcnn.Config.torchvision(image_min_dim_choices=(0, 800))
