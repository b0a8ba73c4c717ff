"""Batched NMS (nms.py): the grouped CPU path against torchvision's batched_nms, in float64 with many exact
score ties; the first kept boxes of a sorted list against the whole NMS cut to as many."""
import pytest
import torch
from torchvision.ops import batched_nms as torchvision_batched_nms

from maskrcnn import nms as nms_module
from maskrcnn.nms import batched_nms, first_kept_nms


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


@pytest.mark.parametrize("count, keep, first_prefix, grows", [
    (20000, 100, 1024, False), (3000, 100, 16, True), (3000, 2999, 64, True), (50, 100, 1024, False), (0, 100, 1024, False)])
def test_first_kept_equals_the_whole_nms_cut_to_as_many(count, keep, first_prefix, grows, monkeypatch):
    """The detection layer's case (20,000 candidates, 100 kept), and small first prefixes that must grow."""
    monkeypatch.setattr(nms_module, "FIRST_PREFIX", first_prefix)
    generator = torch.Generator().manual_seed(count + keep)
    corner = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 100
    boxes = torch.cat((corner, corner + 20 + torch.rand(count, 2, generator=generator, dtype=torch.float64) * 60), dim=1)
    scores = torch.arange(count, 0, -1, dtype=torch.float64)  # distinct and decreasing, as the detection layer's rank
    idxs = torch.randint(0, 5, (count,), generator=generator)  # few classes: overlaps within each
    expected = torchvision_batched_nms(boxes, scores, idxs, 0.5)[:keep]
    got = first_kept_nms(boxes, scores, idxs, 0.5, keep)
    assert torch.equal(got, expected)
    if grows:  # some of the boxes kept lie beyond the first prefix: it had to grow to find them
        assert int(expected.max()) >= first_prefix
    if count == 20000:  # NMS suppressed boxes within the first ones kept, so the comparison is not trivial
        assert int(expected.max()) >= keep
