"""Box geometry: delta coding (R-CNN Eq. 1-4) by hand and round trip, clipping, sizes, scaling."""
import math

import pytest
import torch

from maskrcnn.boxes import DELTA_CLAMP, box_sizes, clip_boxes, decode_deltas, encode_deltas, keep_min_size

STD_DEVS = [(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2), (10.0, 10.0, 5.0, 5.0)]


def random_boxes(generator, count, dtype):
    xy = torch.rand(count, 2, generator=generator, dtype=dtype) * 500
    wh = torch.rand(count, 2, generator=generator, dtype=dtype) * 200 + 1
    return torch.cat((xy, xy + wh), dim=1)


@pytest.mark.parametrize("std_dev", STD_DEVS)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-3), (torch.float64, 1e-9)])
def test_encode_decode_round_trip(std_dev, dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    reference = random_boxes(generator, 200, dtype)
    target = random_boxes(generator, 200, dtype)
    deltas = encode_deltas(reference, target, std_dev)
    assert deltas.shape == (200, 4) and deltas.dtype == dtype
    torch.testing.assert_close(decode_deltas(deltas, reference, std_dev), target, rtol=0, atol=tolerance)


def test_decode_encode_round_trip_from_deltas():
    generator = torch.Generator().manual_seed(1)
    reference = random_boxes(generator, 50, torch.float64)
    deltas = torch.randn(50, 4, generator=generator, dtype=torch.float64) * 0.3
    std = (0.1, 0.1, 0.2, 0.2)
    torch.testing.assert_close(encode_deltas(reference, decode_deltas(deltas, reference, std), std), deltas)


@pytest.mark.parametrize("std_dev", STD_DEVS)
def test_known_deltas(std_dev):
    reference = torch.tensor([[10.0, 20.0, 30.0, 60.0]], dtype=torch.float64)  # w 20, h 40, centre (20, 40)
    # Shift right by half the width (10 px) and down by a quarter of the height (10 px), double the width,
    # halve the height: dx = 0.5, dy = 0.25, dw = log 2, dh = log 0.5, each divided by its std dev.
    target = torch.tensor([[10.0, 40.0, 50.0, 60.0]], dtype=torch.float64)  # w 40, h 20, centre (30, 50)
    expected = torch.tensor([[0.5, 0.25, math.log(2.0), math.log(0.5)]], dtype=torch.float64) / torch.tensor(std_dev, dtype=torch.float64)
    torch.testing.assert_close(encode_deltas(reference, target, std_dev), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(decode_deltas(expected, reference, std_dev), target, rtol=0, atol=1e-12)


def test_zero_deltas_give_back_the_reference():
    reference = torch.tensor([[1.5, 2.5, 7.0, 9.0], [0.0, 0.0, 100.0, 50.0]])
    assert torch.equal(decode_deltas(torch.zeros(2, 4), reference, (0.1, 0.1, 0.2, 0.2)), reference)


def test_identical_boxes_encode_to_zero():
    boxes = torch.tensor([[3.0, 4.0, 13.0, 24.0]])
    assert torch.equal(encode_deltas(boxes, boxes, (0.1, 0.1, 0.2, 0.2)), torch.zeros(1, 4))


def test_decode_broadcasts_over_classes():
    # detection layer shape: deltas (R, C, 4) against ROIs (R, 1, 4)
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 30.0]])
    deltas = torch.zeros(2, 3, 4)
    deltas[1, 2, 0] = 0.5  # ROI 1, class 2: shift right by half of 20 px
    decoded = decode_deltas(deltas, rois[:, None, :], (1.0, 1.0, 1.0, 1.0))
    assert decoded.shape == (2, 3, 4)
    assert decoded[1, 2].tolist() == [20.0, 10.0, 40.0, 30.0]
    assert decoded[1, 1].tolist() == [10.0, 10.0, 30.0, 30.0]


def test_huge_dw_is_clamped():
    reference = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    deltas = torch.tensor([[0.0, 0.0, 1000.0, 1000.0]], dtype=torch.float64)
    decoded = decode_deltas(deltas, reference, (1.0, 1.0, 1.0, 1.0))
    assert torch.isfinite(decoded).all()
    # exp(log(1000/16)) * 16 = 1000 px wide and high, centred on (8, 8)
    torch.testing.assert_close(decoded, torch.tensor([[-492.0, -492.0, 508.0, 508.0]], dtype=torch.float64))
    assert DELTA_CLAMP == pytest.approx(math.log(1000.0 / 16))
    # the clamp applies after the std dev: dw = 50 * 0.2 = 10 > clamp as well
    decoded = decode_deltas(torch.tensor([[0.0, 0.0, 50.0, 0.0]], dtype=torch.float64), reference, (0.1, 0.1, 0.2, 0.2))
    assert decoded[0, 2] - decoded[0, 0] == pytest.approx(1000.0)


def test_clip_boxes():
    boxes = torch.tensor([
        [-5.0, -3.0, 20.0, 12.0],   # crosses the top-left corner
        [90.0, 40.0, 130.0, 70.0],  # crosses the right and bottom edge
        [10.0, 10.0, 20.0, 20.0],   # inside
        [150.0, 80.0, 160.0, 90.0],  # wholly outside: collapses onto the edge
    ])
    clipped = clip_boxes(boxes, 60, 100)  # height 60, width 100
    assert clipped.tolist() == [
        [0.0, 0.0, 20.0, 12.0],
        [90.0, 40.0, 100.0, 60.0],
        [10.0, 10.0, 20.0, 20.0],
        [100.0, 60.0, 100.0, 60.0],
    ]
    # leading dimensions are kept
    assert clip_boxes(boxes.reshape(2, 2, 4), 60, 100).shape == (2, 2, 4)


def test_box_sizes_and_keep_min_size():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 5.0],   # 10 x 5
        [0.0, 0.0, 2.0, 20.0],   # 2 x 20: too narrow
        [0.0, 0.0, 3.0, 3.0],    # exactly 3 x 3: kept (>=)
        [5.0, 5.0, 5.0, 9.0],    # zero width
    ])
    widths, heights = box_sizes(boxes)
    assert widths.tolist() == [10.0, 2.0, 3.0, 0.0]
    assert heights.tolist() == [5.0, 20.0, 3.0, 4.0]
    assert keep_min_size(boxes, 3.0).tolist() == [0, 2]
    assert keep_min_size(boxes, 0.0).tolist() == [0, 1, 2, 3]
    assert keep_min_size(boxes, 100.0).tolist() == []
