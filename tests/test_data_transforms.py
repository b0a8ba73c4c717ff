"""Augmentation keeps image, boxes and masks aligned; mini-masks round-trip."""
import numpy as np
import pytest
import torch

from maskrcnn.data import Compose, HorizontalFlip, ShapesDataset, default_min_dim_choices, expand_masks, minimize_masks
from maskrcnn.data.dataset import masks_to_boxes


def _sample():
    image = torch.zeros(3, 10, 12)
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 1:4] = True  # columns 1..3 -> box x 1..4
    masks[1, 6:10, 7:12] = True
    image[0][masks[0]] = 1.0
    target = {"boxes": torch.tensor([[1.0, 2, 4, 5], [7, 6, 12, 10]]), "labels": torch.tensor([1, 2]), "masks": masks}
    return image, target


def test_flip_moves_boxes_like_masks():
    image, target = _sample()
    flipped_image, flipped = HorizontalFlip(p=1.0)(image, target, np.random.default_rng(0))
    # By hand: W = 12, x1' = 12 - x2, x2' = 12 - x1.
    assert flipped["boxes"].tolist() == [[8, 2, 11, 5], [0, 6, 5, 10]]
    np.testing.assert_array_equal(masks_to_boxes(flipped["masks"].numpy()), flipped["boxes"].numpy())
    assert torch.equal(flipped_image[0] > 0, flipped["masks"][0])
    assert torch.equal(target["boxes"], _sample()[1]["boxes"])  # the input was not changed in place


def test_flip_probability_zero_and_real_data():
    image, target = _sample()
    same_image, same = HorizontalFlip(p=0.0)(image, target, np.random.default_rng(0))
    assert same_image is image and same is target
    dataset = ShapesDataset(3, seed=7)
    for i in range(3):
        image, target = dataset[i]
        _, flipped = HorizontalFlip(1.0)(image, target, np.random.default_rng(0))
        np.testing.assert_array_equal(masks_to_boxes(flipped["masks"].numpy()), flipped["boxes"].numpy())


def test_default_scale_choices_are_detectron2s_multi_scale_sizes():
    # detectron2's INPUT.MIN_SIZE_TRAIN for its multi-scale schedules
    assert default_min_dim_choices(800) == (640, 672, 704, 736, 768, 800)
    assert default_min_dim_choices(100) == (80, 84, 88, 92, 96, 100)


def test_flip_is_seeded():
    transform = Compose([HorizontalFlip(0.5)])
    draws = [transform(*_sample(), np.random.default_rng(seed))[1]["boxes"][0, 0].item() for seed in range(8)]
    assert draws == [transform(*_sample(), np.random.default_rng(seed))[1]["boxes"][0, 0].item() for seed in range(8)]
    assert set(draws) == {1.0, 8.0}  # both outcomes occur over eight seeds


def test_user_hook_in_compose():
    def darken(image, target, rng):
        return image * 0.5, target

    image, target = _sample()
    out_image, _ = Compose([darken, HorizontalFlip(1.0)])(image, target, np.random.default_rng(0))
    assert out_image.max() == 0.5


def test_mini_masks_round_trip():
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 4:12, 8:24] = True  # a full rectangle survives exactly
    masks[1, 16:32, 0:16] = np.tri(16, dtype=bool)  # a triangle survives approximately
    boxes = masks_to_boxes(masks)
    mini = minimize_masks(boxes, masks, (8, 8))
    assert mini.shape == (2, 8, 8) and mini.dtype == bool and mini[0].all()
    back = expand_masks(boxes, mini, (32, 32))
    assert back.shape == (2, 32, 32)
    np.testing.assert_array_equal(back[0], masks[0])
    assert (back[1] != masks[1]).sum() < 0.15 * masks[1].sum()
    assert not back[1][:16].any()  # nothing outside its box
    mini_t = minimize_masks(torch.from_numpy(boxes), torch.from_numpy(masks), (8, 8))
    assert isinstance(mini_t, torch.Tensor) and torch.equal(mini_t, torch.from_numpy(mini))


def test_mini_mask_rejects_empty_box():
    with pytest.raises(ValueError, match="box 0"):
        minimize_masks(np.array([[3.0, 3, 3, 8]]), np.ones((1, 10, 10), dtype=bool), (4, 4))
