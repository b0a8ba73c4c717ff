"""MaskCrops: the compact masks of Detections, checked against full (N, H, W) masks."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskrcnn.evaluation import _encode_masks, coco_results
from maskrcnn.mask_crops import MaskCrops
from maskrcnn.structures import Detections


def _masks():
    """(4, 7, 9): a block inside, one touching the top-left corner, one the bottom-right, one empty."""
    masks = torch.zeros((4, 7, 9), dtype=torch.bool)
    masks[0, 2:5, 3:6] = True
    masks[0, 3, 4] = False  # a hole
    masks[1, 0:2, 0:3] = True
    masks[2, 5:7, 6:9] = True
    masks[2, 6, 6] = False
    return masks


def test_from_full_crops_to_tight_boxes_and_back():
    masks = _masks()
    crops = MaskCrops.from_full(masks)
    assert crops.shape == (4, 7, 9)
    assert crops.offsets.tolist() == [[3, 2], [0, 0], [6, 5], [0, 0]]
    assert [tuple(c.shape) for c in crops.crops] == [(3, 3), (2, 3), (2, 3), (0, 0)]
    assert torch.equal(crops.full(), masks)
    assert crops.areas().tolist() == [8, 6, 5, 0]
    assert crops.mask_boxes().tolist() == [[3, 2, 6, 5], [0, 0, 3, 2], [6, 5, 9, 7], [0, 0, 0, 0]]


def test_rle_from_crops_equals_rle_of_full_masks():
    masks = _masks()
    assert MaskCrops.from_full(masks).to_rle() == _encode_masks(masks.numpy())


def test_rle_of_random_masks_decodes_to_the_masks():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 13, 11)) > 0.6)
    rles = MaskCrops.from_full(masks).to_rle()
    decoded = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)
    assert np.array_equal(decoded, masks.numpy())


def test_indexing_keeps_crops_and_offsets():
    crops = MaskCrops.from_full(_masks())
    picked = crops[torch.tensor([False, True, True, False])]
    assert torch.equal(picked.full(), _masks()[1:3])
    assert torch.equal(crops[torch.tensor([2, 0])].full(), _masks()[[2, 0]])
    assert torch.equal(crops[1:2].full(), _masks()[1:2])


def test_a_crop_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="leaves"):
        MaskCrops([torch.ones((3, 3), dtype=torch.bool)], torch.tensor([[7, 0]]), (7, 9))


def test_detections_compact_and_full_masks_and_coco_results():
    masks = _masks()[:3]
    boxes = torch.tensor([[3, 2, 6, 5], [0, 0, 3, 2], [6, 5, 9, 7]], dtype=torch.float32)
    dets = Detections(boxes, torch.tensor([1, 2, 3]), torch.tensor([0.9, 0.8, 0.7]), masks)
    compact = dets.compact()
    assert compact.is_compact and not dets.is_compact
    assert compact.image_size == (7, 9)
    assert torch.equal(compact.full_masks(), masks)
    assert torch.equal(compact[torch.tensor([1])].full_masks(), masks[1:2])
    assert coco_results(compact, 5) == coco_results(dets, 5)
