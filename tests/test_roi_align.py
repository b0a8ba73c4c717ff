"""Pyramid ROIAlign: FPN Eq. 1 level assignment at its boundaries, bilinear values by hand, batch and order,
roi_align_cpu against torchvision's roi_align, every output row filled from its level."""
import pytest
import torch

from torchvision.ops import roi_align

from maskrcnn.roi_align import PyramidROIAlign, assign_levels, boxes_with_batch_index, roi_align_cpu


def square(side: float, x: float = 0.0, y: float = 0.0) -> list[float]:
    return [x, y, x + side, y + side]


@pytest.mark.parametrize("side, level", [
    (112.0, 3),    # floor(4 + log2(112/224)) = floor(3) = 3
    (224.0, 4),    # canonical size: canonical level
    (448.0, 5),    # floor(4 + 1) = 5
    (111.9, 2),    # floor(4 + log2(0.4996)) = floor(2.9987) = 2
    (223.9, 3),
    (447.9, 4),
    (56.0, 2),     # floor(4 - 2) = 2
    (1.0, 2),      # tiny: clamped up to P2
    (0.0, 2),      # empty box: log2(0) = -inf, clamped to P2
    (896.0, 5),    # floor(4 + 2) = 6, clamped down to P5
    (5000.0, 5),
])
def test_assign_levels_boundaries(side, level):
    boxes = torch.tensor([square(side, 10.0, 20.0)], dtype=torch.float64)
    assert assign_levels(boxes).tolist() == [level]


def test_assign_levels_uses_sqrt_of_area_for_non_square_boxes():
    # 56 x 224 has sqrt(area) = 112 -> level 3; 448 x 112 has sqrt(area) = 224 -> level 4
    boxes = torch.tensor([[0.0, 0.0, 56.0, 224.0], [0.0, 0.0, 448.0, 112.0]])
    assert assign_levels(boxes).tolist() == [3, 4]
    assert assign_levels(boxes).dtype == torch.int64


def test_assign_levels_settings():
    boxes = torch.tensor([square(100.0)])
    # canonical size 100 at level 4: exactly 4; max_level 3 clamps it down
    assert assign_levels(boxes, canonical_size=100, canonical_level=4).tolist() == [4]
    assert assign_levels(boxes, canonical_size=100, canonical_level=4, max_level=3).tolist() == [3]


def test_boxes_with_batch_index():
    rois = boxes_with_batch_index([torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros(0, 4), torch.tensor([[5.0, 6.0, 7.0, 8.0]] * 2)])
    assert rois.tolist() == [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 5, 6, 7, 8]]


def pooler(output_size, sampling_ratio=2):
    return PyramidROIAlign(output_size=output_size, strides=(4, 8, 16, 32), sampling_ratio=sampling_ratio,
                           canonical_size=224, canonical_level=4)


def pyramid_with_p2(p2: torch.Tensor) -> list[torch.Tensor]:
    """P2 as given, (N, 1, 5, 5); P3..P5 filled with a value that would show if used."""
    n = p2.shape[0]
    return [p2] + [torch.full((n, 1, 5, 5), -1000.0, dtype=p2.dtype) for _ in range(3)]


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_bilinear_values_on_arange(sampling_ratio):
    # P2 (stride 4) holds f(y, x) = 5y + x on a 5 x 5 grid. The box (4, 4, 12, 12) in image pixels is (1, 1, 3, 3)
    # on P2 (sqrt(area) = 8 px: level 2). With a 2 x 2 output each bin is 1 x 1 cell and its samples average to
    # the bin centre (1.5 or 2.5) because f is linear: 5 * 1.5 + 1.5 = 9, 10, 14, 15. ROI pooling's rounding
    # would give whole grid values instead.
    p2 = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5)
    pooled = pooler(2, sampling_ratio)(pyramid_with_p2(p2), [torch.tensor([[4.0, 4.0, 12.0, 12.0]], dtype=torch.float64)])
    assert pooled.shape == (1, 1, 2, 2)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([[9.0, 10.0], [14.0, 15.0]], dtype=torch.float64))


def test_bilinear_values_on_product_feature():
    # f(y, x) = x * y is bilinear, so interpolation reproduces it exactly. The box (2, 6, 14, 10) pixels is
    # (0.5, 1.5, 3.5, 2.5) on P2 (sqrt(area) = 6.9 px: level 2); a 2 x 2 output has bins 1.5 cells wide and 0.5
    # high, and sampling_ratio 1 samples the bin centres x in {1.25, 2.75}, y in {1.75, 2.25}.
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    p2 = (xs * ys).to(torch.float64)[None, None]
    pooled = pooler(2, 1)(pyramid_with_p2(p2), [torch.tensor([[2.0, 6.0, 14.0, 10.0]], dtype=torch.float64)])
    expected = torch.tensor([[1.75 * 1.25, 1.75 * 2.75], [2.25 * 1.25, 2.25 * 2.75]], dtype=torch.float64)
    torch.testing.assert_close(pooled[0, 0], expected)


def test_rois_use_their_own_image_features():
    p2 = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5)
    p2 = torch.cat((p2, p2 + 100.0))  # image 1 = image 0 + 100
    box = torch.tensor([[4.0, 4.0, 12.0, 12.0]], dtype=torch.float64)
    pooled = pooler(2)(pyramid_with_p2(p2), [box, box.repeat(2, 1)])
    assert pooled.shape == (3, 1, 2, 2)
    first = torch.tensor([[9.0, 10.0], [14.0, 15.0]], dtype=torch.float64)
    torch.testing.assert_close(pooled[0, 0], first)
    torch.testing.assert_close(pooled[1, 0], first + 100.0)
    torch.testing.assert_close(pooled[2, 0], first + 100.0)


def test_output_order_equals_input_order_across_levels():
    # Each level is filled with its own number, so the pooled value tells which level a box was taken from.
    size = 512
    pyramid = [torch.full((2, 1, size // s, size // s), float(level)) for level, s in zip(range(2, 6), (4, 8, 16, 32))]
    image0 = torch.tensor([square(448.0), square(20.0, 5, 5), square(112.0, 30, 40)])  # levels 5, 2, 3
    image1 = torch.tensor([square(224.0, 100, 100), square(60.0, 1, 2)])  # levels 4, 2
    pooled = pooler(7)(pyramid, [image0, image1])
    assert pooled.shape == (5, 1, 7, 7)
    assert pooled.mean(dim=(1, 2, 3)).tolist() == [5.0, 2.0, 3.0, 4.0, 2.0]


def test_no_boxes_gives_empty_output():
    pyramid = [torch.zeros(1, 8, 5, 5) for _ in range(4)]
    pooled = pooler(7)(pyramid, [torch.zeros(0, 4)])
    assert pooled.shape == (0, 8, 7, 7)


def random_rois(generator, count, images, height, width):
    """(count, 5) rows: image index and boxes in image pixels (stride 4), some reaching past the map, some tiny."""
    centre = torch.rand(count, 2, generator=generator, dtype=torch.float64) * torch.tensor([width * 4.0, height * 4.0])
    size = torch.rand(count, 2, generator=generator, dtype=torch.float64) * width * 3 + 0.05
    boxes = torch.cat((centre - size / 2, centre + size / 2), dim=1)
    index = torch.randint(0, images, (count, 1), generator=generator).to(torch.float64)
    return torch.cat((index, boxes), dim=1)


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("output_size", [7, 14])
def test_roi_align_cpu_equals_torchvision_values_and_gradients(sampling_ratio, aligned, output_size):
    # The independent reference is torchvision's kernel itself; float64, so only summation order may differ.
    generator = torch.Generator().manual_seed(sampling_ratio * 10 + output_size + aligned)
    features = torch.randn(3, 5, 9, 13, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(generator, 60, 3, 9, 13)
    expected = roi_align(features, rois, output_size, 0.25, sampling_ratio, aligned)
    got = roi_align_cpu(features, rois, output_size, 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    expected_grad, = torch.autograd.grad(expected, features, upstream)
    got_grad, = torch.autograd.grad(got, features, upstream)
    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-12)
    assert expected_grad.abs().sum() > 0


def test_roi_align_cpu_reads_channels_last_and_handles_no_rois():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 4, 8, 8, generator=generator)
    rois = random_rois(generator, 10, 2, 8, 8).float()
    expected = roi_align(features, rois, 7, 0.25, 2, False)
    got = roi_align_cpu(features.contiguous(memory_format=torch.channels_last), rois, 7, 0.25, 2, False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert roi_align_cpu(features, rois[:0], 7, 0.25, 2, False).shape == (0, 4, 7, 7)


def test_pyramid_uses_torchvision_for_adaptive_sampling_and_export():
    pooler_adaptive = pooler(7, sampling_ratio=0)
    feature = torch.zeros(1, 2, 4, 4)
    assert not pooler_adaptive.uses_cpu_kernel(feature)
    assert pooler(7, sampling_ratio=2).uses_cpu_kernel(feature)


def test_pyramid_roi_align_fills_every_row():
    # The output buffer is not zeroed: every box's row must come from its level's roi_align.
    generator = torch.Generator().manual_seed(5)
    features = [torch.rand(2, 3, 64 // 2 ** k, 64 // 2 ** k, generator=generator, dtype=torch.float64) for k in range(4)]
    sizes = torch.tensor([20.0, 60.0, 130.0, 250.0], dtype=torch.float64)  # levels 2, 3, 4 and 5 (FPN Eq. 1)
    boxes = [torch.stack((torch.full((4,), 3.0, dtype=torch.float64), torch.full((4,), 5.0, dtype=torch.float64),
                          3.0 + sizes, 5.0 + sizes * (1 + i)), dim=1) for i in range(2)]
    pooler = PyramidROIAlign(output_size=7, strides=(4, 8, 16, 32), sampling_ratio=2, canonical_size=224, canonical_level=4)
    got = pooler(features, boxes)
    expected = []
    for image, image_boxes in enumerate(boxes):
        for box in image_boxes:
            side = torch.sqrt((box[2] - box[0]) * (box[3] - box[1]))
            level = int(torch.floor(4 + torch.log2(side / 224) + 1e-6).clamp(2, 5)) - 2
            row = torch.cat((torch.tensor([float(image)], dtype=torch.float64), box))[None]
            expected.append(roi_align(features[level], row, 7, spatial_scale=1 / 4 / 2 ** level, sampling_ratio=2))
    # roi_align_cpu sums in another order than torchvision's kernel: equal to float64 rounding
    torch.testing.assert_close(got, torch.cat(expected), rtol=0, atol=1e-12)
