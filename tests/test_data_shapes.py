"""ShapesDataset: deterministic, masks agree with the picture, shapes inside the image."""
import numpy as np
import pytest
import torch

from maskrcnn.data import ShapesDataset


def test_classes():
    dataset = ShapesDataset(2)
    assert dataset.class_names == ["BG", "square", "circle", "triangle"]
    assert dataset.num_classes == 4
    assert [dataset.get_source_class_id(i, "shapes") for i in (1, 2, 3)] == [1, 2, 3]


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = ShapesDataset(5, seed=3), ShapesDataset(5, seed=3), ShapesDataset(5, seed=4)
    for i in range(5):
        np.testing.assert_array_equal(a.load_image(i), b.load_image(i))
        np.testing.assert_array_equal(a.load_mask(i)[0], b.load_mask(i)[0])
    assert any(not np.array_equal(a.load_image(i), c.load_image(i)) for i in range(5))
    # Rendering twice gives the same pixels (nothing random at load time).
    np.testing.assert_array_equal(a.load_image(2), a.load_image(2))


def test_masks_match_the_painted_pixels():
    dataset = ShapesDataset(20, seed=0)
    for i in range(len(dataset)):
        info = dataset.image_info[i]
        image = dataset.load_image(i)
        masks, class_ids = dataset.load_mask(i)
        assert masks.dtype == bool and masks.shape == (len(class_ids), 128, 128)
        assert 1 <= len(class_ids) <= 4 and set(class_ids) <= {1, 2, 3}
        # Visible masks never overlap, and every pixel outside them is background.
        assert masks.sum(0).max() <= 1
        outside = ~masks.any(0)
        assert (image[outside] == info["background"]).all()
        for mask in masks:
            colours = np.unique(image[mask], axis=0)
            assert len(colours) == 1 and tuple(colours[0]) != tuple(info["background"])
            assert mask.sum() >= 16


def test_square_has_the_expected_box_and_area():
    # Find an image whose single top shape is a square and check it against its spec by hand:
    # half-size s centred at (cx, cy) covers columns cx-s .. cx+s-1, i.e. box (cx-s, cy-s, cx+s, cy+s), area (2s)^2.
    dataset = ShapesDataset(40, seed=1)
    checked = 0
    for i in range(len(dataset)):
        shapes = dataset.image_info[i]["shapes"]
        name, _, cx, cy, s = shapes[-1]
        if name != "square":
            continue
        masks, class_ids = dataset.load_mask(i)
        target = dataset.load_target(i)
        assert class_ids[-1] == 1
        assert masks[-1].sum() == (2 * s) ** 2
        assert target["boxes"][-1].tolist() == [cx - s, cy - s, cx + s, cy + s]
        checked += 1
    assert checked > 0


def test_occlusion_removes_hidden_pixels_from_earlier_masks():
    dataset = ShapesDataset(1)
    info = dataset.image_info[0]
    info["background"] = (0, 0, 0)
    # Square A covers 20..59, square B (on top) covers 30..69: A keeps 40*40 - 30*30 = 700 pixels.
    info["shapes"] = [("square", (255, 0, 0), 40, 40, 20), ("square", (0, 255, 0), 50, 50, 20)]
    masks, class_ids = dataset.load_mask(0)
    assert masks[0].sum() == 700 and masks[1].sum() == 1600
    assert not (masks[0] & masks[1]).any()
    image = dataset.load_image(0)
    assert (image[masks[0]] == (255, 0, 0)).all() and (image[masks[1]] == (0, 255, 0)).all()


def test_hidden_shape_is_dropped_and_not_drawn():
    dataset = ShapesDataset(1)
    info = dataset.image_info[0]
    info["background"] = (0, 0, 0)
    # The square covers rows 30..89; the circle spans rows 74..93, so only a sliver of its bottom would show:
    # too little to learn from, so it is neither labelled nor drawn (no red pixel left unlabelled).
    info["shapes"] = [("circle", (255, 0, 0), 60, 84, 10), ("square", (0, 0, 255), 60, 60, 30)]
    masks, class_ids = dataset.load_mask(0)
    assert class_ids.tolist() == [1] and masks[0].sum() == 60 * 60
    assert not (dataset.load_image(0) == (255, 0, 0)).all(-1).any()


def test_shapes_stay_inside_and_other_sizes_work():
    dataset = ShapesDataset(10, height=64, width=96, seed=5, min_shapes=2, max_shapes=3)
    for i in range(len(dataset)):
        for _, _, cx, cy, s in dataset.image_info[i]["shapes"]:
            assert cx - s >= 0 and cx + s <= 96 and cy - s >= 0 and cy + s <= 64
        image, target = dataset[i]
        assert image.shape == (3, 64, 96) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert target["masks"].shape[1:] == (64, 96)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_shapes"):
        ShapesDataset(3, min_shapes=3, max_shapes=2)
