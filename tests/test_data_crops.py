"""Training crops (data/crops.py): cut instances, their boxes and masks checked on hand-made cases."""
import numpy as np
import pytest
import torch

from maskrcnn.data.crops import RandomCrop, crop, mask_boxes


def _target(height, width, rectangles, labels=None):
    """Instances filling rectangles (x0, y0, x1, y1)."""
    masks = torch.zeros((len(rectangles), height, width), dtype=torch.bool)
    for k, (x0, y0, x1, y1) in enumerate(rectangles):
        masks[k, y0:y1, x0:x1] = True
    boxes = torch.tensor(rectangles, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor(labels or [1] * len(rectangles), dtype=torch.int64)
    return {"boxes": boxes, "labels": labels, "masks": masks}


def test_crop_cuts_masks_and_recomputes_boxes_by_hand():
    # 20x30 image, crop rows 5..15, columns 10..25 (h=10, w=15).
    target = _target(20, 30, [(12, 6, 16, 9),    # wholly inside -> (2, 1, 6, 4)
                              (5, 8, 14, 12),    # 9x4=36 px, 4x4=16 inside (44%) -> dropped at 0.5
                              (20, 12, 28, 20),  # 8x8=64 px, 5x3=15 inside -> dropped
                              (22, 0, 26, 14)],  # 4x14=56 px, 3x9=27 inside (48%) -> kept at 0.4
                     labels=[1, 2, 3, 2])
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30)
    cut_image, cut = crop(image, target, 5, 10, 10, 15, min_visible=0.4)
    assert torch.equal(cut_image, image[:, 5:15, 10:25])
    assert cut["labels"].tolist() == [1, 2, 2]
    assert cut["boxes"].tolist() == [[2, 1, 6, 4], [0, 3, 4, 7], [12, 0, 15, 9]]
    expected = torch.zeros((10, 15), dtype=torch.bool)
    expected[0:9, 12:15] = True
    assert torch.equal(cut["masks"][2], expected)
    _, strict = crop(image, target, 5, 10, 10, 15, min_visible=0.5)
    assert strict["labels"].tolist() == [1]


def test_an_l_shaped_instance_gets_the_box_of_what_is_left():
    target = _target(12, 12, [(0, 0, 10, 2)])
    target["masks"][0, 0:10, 0:2] = True  # an L: top row and left column
    _, cut = crop(torch.zeros(3, 12, 12), target, 0, 1, 12, 11, min_visible=0.1)
    assert cut["boxes"].tolist() == [[0, 0, 9, 10]]  # the left column is only partly kept (x=1 is inside)


def test_crowd_boxes_are_shifted_and_clipped():
    target = _target(20, 20, [(2, 2, 6, 6)])
    target["crowd_boxes"] = torch.tensor([[8.0, 8.0, 30.0, 12.0], [0.0, 0.0, 3.0, 3.0]])
    _, cut = crop(torch.zeros(3, 20, 20), target, 5, 5, 10, 10, min_visible=0.5)
    assert cut["crowd_boxes"].tolist() == [[3.0, 3.0, 10.0, 7.0]]


def test_random_crop_holds_a_whole_instance_when_it_fits():
    target = _target(300, 400, [(50, 60, 90, 100), (300, 200, 340, 230)])
    transform = RandomCrop(128, negative_fraction=0.0)
    for seed in range(20):
        image, cut = transform(torch.zeros(3, 300, 400), target, np.random.default_rng(seed))
        assert image.shape == (3, 128, 128)
        assert len(cut["labels"]) >= 1
        areas = cut["masks"].flatten(1).sum(1).tolist()
        assert 1600 in areas or 1200 in areas  # one of the two, whole
        assert torch.equal(cut["boxes"], mask_boxes(cut["masks"]))


def test_negative_crops_hold_no_instance_where_there_is_room():
    target = _target(300, 400, [(10, 10, 50, 50)])
    transform = RandomCrop(128, negative_fraction=1.0)
    empties = sum(len(transform(torch.zeros(3, 300, 400), target, np.random.default_rng(seed))[1]["labels"]) == 0
                  for seed in range(20))
    assert empties == 20


def test_an_image_no_larger_than_the_crop_is_left_as_is():
    target = _target(100, 120, [(10, 10, 50, 50)])
    image = torch.rand(3, 100, 120)
    out_image, out = RandomCrop(128)(image, target, np.random.default_rng(0))
    assert out_image is image and out is target


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_visible"):
        RandomCrop(128, min_visible=0.0)


def test_train_with_crop_trains_on_crops(tmp_path):
    from maskrcnn.runs import TrainOptions, train

    lines = []
    options = TrainOptions(preset="demo", overrides=("images_per_batch=2",), epochs=1, max_steps=1, val_fraction=0.0,
                           progress=False, tensorboard=False, crop=96)
    state = train("shapes:4:160", tmp_path / "run", options, report=lines.append)
    assert state.step == 1
    assert any("random 96 px crops around objects" in line for line in lines)
