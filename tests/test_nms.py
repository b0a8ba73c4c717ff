"""Batched NMS (nms.py): the grouped CPU path against torchvision's batched_nms, in float64 with many exact
score ties."""
import pytest
import torch
from torchvision.ops import batched_nms as torchvision_batched_nms

from maskrcnn.nms import batched_nms


@pytest.mark.parametrize("count, groups", [(3000, 90), (1500, 5), (600, 7), (0, 1)])
def test_grouped_nms_equals_torchvision(count, groups):
    generator = torch.Generator().manual_seed(count)
    corner = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 300
    boxes = torch.cat((corner, corner + 5 + torch.rand(count, 2, generator=generator, dtype=torch.float64) * 80), dim=1)
    scores = (torch.rand(count, generator=generator, dtype=torch.float64) * 20).round() / 20  # many exact ties
    idxs = torch.randint(0, groups, (count,), generator=generator)
    expected = torchvision_batched_nms(boxes, scores, idxs, 0.5)
    got = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got, expected)
    if count > 1000:  # the grouped path (not torchvision's own call) ran, and NMS dropped something
        assert 0 < len(got) < count
