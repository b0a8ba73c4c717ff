"""Anchors: counts from the seed, hand-written cell anchors, order, strides, and torchvision as a reference."""
import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from maskrcnn.anchors import AnchorGenerator, cell_anchors, grid_anchors

SEED_SCALES = (32, 64, 128, 256, 512)
SEED_STRIDES = (4, 8, 16, 32, 64)
SEED_RATIOS = (0.5, 1.0, 2.0)


def seed_generator(**overrides):
    settings = dict(scales=SEED_SCALES, ratios=SEED_RATIOS, strides=SEED_STRIDES, anchor_stride=1,
                    round_to_pixels=False, stride_from_feature_size=False)
    settings.update(overrides)
    return AnchorGenerator(**settings)


def feature_sizes_for(side: int):
    return [(side // s, side // s) for s in SEED_STRIDES]


@pytest.mark.parametrize("side, expected", [(512, 65_472), (1024, 261_888)])
def test_seed_anchor_counts(side, expected):
    # Seed: (128^2 + 64^2 + 32^2 + 16^2 + 8^2) * 3 = 65,472 for 512 px; 1024 px has four times as many.
    levels = seed_generator()(feature_sizes_for(side), (side, side), torch.float32, "cpu")
    assert sum(len(level) for level in levels) == expected
    assert [len(level) for level in levels] == [(side // s) ** 2 * 3 for s in SEED_STRIDES]


def test_cell_anchors_scale_32_by_hand():
    # width = 32 * sqrt(r), height = 32 / sqrt(r): 22.627.../45.254... for r = 0.5, 32/32 for r = 1.
    a = 16 * math.sqrt(0.5)  # 11.3137...
    b = 16 * math.sqrt(2.0)  # 22.6274...
    expected = torch.tensor([
        [-a, -b, a, b],
        [-16.0, -16.0, 16.0, 16.0],
        [-b, -a, b, a],
    ], dtype=torch.float64)
    cells = cell_anchors(32, SEED_RATIOS, round_to_pixels=False)
    assert cells.shape == (3, 4)
    torch.testing.assert_close(cells, expected, rtol=0, atol=1e-12)
    # Every anchor of a level has area scale^2, whatever its ratio.
    areas = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    torch.testing.assert_close(areas, torch.full((3,), 1024.0, dtype=torch.float64))


def test_cell_anchors_rounded_to_pixels():
    expected = torch.tensor([
        [-11.0, -23.0, 11.0, 23.0],
        [-16.0, -16.0, 16.0, 16.0],
        [-23.0, -11.0, 23.0, 11.0],
    ], dtype=torch.float64)
    assert torch.equal(cell_anchors(32, SEED_RATIOS, round_to_pixels=True), expected)


def test_grid_anchors_order_is_y_then_x_then_ratio():
    cell = cell_anchors(32, SEED_RATIOS, round_to_pixels=True)
    anchors = grid_anchors(cell, (2, 3), (4, 4), anchor_stride=1)  # 2 rows, 3 columns, stride 4
    assert anchors.shape == (2 * 3 * 3, 4)
    for y in range(2):
        for x in range(3):
            for r in range(3):
                index = (y * 3 + x) * 3 + r
                shift = torch.tensor([4.0 * x, 4.0 * y, 4.0 * x, 4.0 * y], dtype=torch.float64)
                assert torch.equal(anchors[index], cell[r] + shift), (y, x, r)
    # Hand-written: the anchor at row 1, column 2, ratio 1 is centred on (8, 4).
    assert anchors[(1 * 3 + 2) * 3 + 1].tolist() == [-8.0, -12.0, 24.0, 20.0]


def test_grid_anchors_with_anchor_stride_2_skips_every_other_cell():
    cell = torch.tensor([[-1.0, -1.0, 1.0, 1.0]])
    anchors = grid_anchors(cell, (3, 4), (8, 8), anchor_stride=2)
    # rows 0, 2 and columns 0, 2 of the feature map: centres x in {0, 16}, y in {0, 16}
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).tolist()
    assert centres == [[0.0, 0.0], [16.0, 0.0], [0.0, 16.0], [16.0, 16.0]]


def test_levels_come_in_order_p2_to_p6_with_their_own_scale():
    levels = seed_generator()(feature_sizes_for(256), (256, 256), torch.float64, "cpu")
    for level, scale, stride in zip(levels, SEED_SCALES, SEED_STRIDES):
        # first anchor: ratio 0.5 at (0, 0); ratio 1 anchor is a square of side `scale`
        square = level[1]
        assert square.tolist() == [-scale / 2, -scale / 2, scale / 2, scale / 2]
        # the fourth anchor is the next column: shifted by one stride in x
        assert (level[3] - level[0]).tolist() == [stride, 0.0, stride, 0.0]


def test_level_strides_from_feature_size_as_torchvision():
    # An 800 x 1216 padded batch: P6 is 13 x 19 (P5 25 x 38 subsampled by 2, rounded up), so
    # torchvision's stride is 800 // 13 = 61 in y and 1216 // 19 = 64 in x.
    sizes = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    generator = seed_generator(stride_from_feature_size=True)
    assert generator.level_strides(sizes, (800, 1216)) == [(4, 4), (8, 8), (16, 16), (32, 32), (61, 64)]
    fixed = seed_generator(stride_from_feature_size=False)
    assert fixed.level_strides(sizes, (800, 1216)) == [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64)]


def test_matches_torchvision_anchor_generator_for_torchvision_preset():
    # Config.torchvision(): ratios (2, 1, 0.5) as width/height are torchvision's (0.5, 1, 2) as height/width,
    # rounded cell anchors, strides from the feature size.
    padded = (800, 1216)
    sizes = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    ours = AnchorGenerator(scales=SEED_SCALES, ratios=(2.0, 1.0, 0.5), strides=SEED_STRIDES, anchor_stride=1,
                           round_to_pixels=True, stride_from_feature_size=True)(sizes, padded, torch.float32, "cpu")
    reference = TorchvisionAnchorGenerator(sizes=tuple((s,) for s in SEED_SCALES), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    images = ImageList(torch.zeros(1, 3, *padded), [padded])
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]
    expected = reference(images, features)[0]
    assert expected.shape == (sum(h * w * 3 for h, w in sizes), 4)
    torch.testing.assert_close(torch.cat(ours), expected, rtol=0, atol=1e-4)


def test_dtype_and_cache():
    generator = seed_generator()
    first = generator(feature_sizes_for(128), (128, 128), torch.float64, "cpu")
    assert all(level.dtype == torch.float64 for level in first)
    again = generator(feature_sizes_for(128), (128, 128), torch.float64, "cpu")
    assert all(a is b for a, b in zip(first, again))
    single = generator(feature_sizes_for(128), (128, 128), torch.float32, "cpu")
    assert all(level.dtype == torch.float32 for level in single)
    assert generator.anchors_per_location == 3
