"""The proposal layer on hand-made RPN outputs: order, decoding, clipping, top-k, NMS, limits."""
import math

import torch

from maskrcnn.boxes import clip_to_window
from maskrcnn.frame import PixelFrame
from maskrcnn.proposals import propose
from maskrcnn.rpn import RPNOutput

SETTINGS = dict(pre_nms_limit=1000, pre_nms_per_level=True, nms_threshold=0.7, nms_per_level=True,
                post_nms_limit=1000, min_size=0.0, std_dev=(1.0, 1.0, 1.0, 1.0), frame=PixelFrame())
BIG_WINDOW = (0, 0, 1000, 1000)  # (y1, x1, y2, x2)

# Five anchors far apart from each other (no overlap: NMS keeps all).
ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],
    [100.0, 0.0, 120.0, 20.0],
    [200.0, 0.0, 230.0, 30.0],
    [0.0, 100.0, 40.0, 140.0],
    [100.0, 100.0, 150.0, 150.0],
])


def rpn_output(logits, level_sizes=None, deltas=None):
    objectness = torch.tensor(logits, dtype=torch.float32)
    if objectness.dim() == 1:
        objectness = objectness[None]
    n, count = objectness.shape[:2]
    if deltas is None:
        deltas = torch.zeros(n, count, 4)
    return RPNOutput(objectness, deltas, list(level_sizes or [count]))


def propose_with(rpn, anchors=ANCHORS, windows=None, **changes):
    settings = dict(SETTINGS, **changes)
    windows = windows or [BIG_WINDOW] * rpn.deltas.shape[0]
    return propose(rpn, anchors, windows, **settings)


def test_output_shape_and_descending_objectness():
    proposals = propose_with(rpn_output([0.1, 3.0, -1.0, 2.0, 0.5]))
    assert isinstance(proposals, list) and len(proposals) == 1
    assert proposals[0].shape == (5, 4)
    # by decreasing objectness: anchors 1, 3, 4, 0, 2 (zero deltas: the anchors themselves)
    assert torch.equal(proposals[0], ANCHORS[[1, 3, 4, 0, 2]])


def test_each_image_of_a_batch_has_its_own_order():
    rpn = rpn_output([[0.1, 3.0, -1.0, 2.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    first, second = propose_with(rpn)
    assert torch.equal(first, ANCHORS[[1, 3, 4, 0, 2]])
    assert torch.equal(second, ANCHORS)


def test_softmax_objectness_ranks_by_object_probability():
    # (N, L, 2) logits (background, object): the object probability orders the anchors
    logits = [[[0.0, 1.0], [0.0, -2.0], [3.0, 0.0], [0.0, 4.0], [0.0, 0.0]]]
    proposals = propose_with(rpn_output(logits))
    assert torch.equal(proposals[0], ANCHORS[[3, 0, 4, 1, 2]])


def test_deltas_are_decoded_with_std_dev():
    deltas = torch.zeros(1, 5, 4)
    deltas[0, 0] = torch.tensor([5.0, 0.0, 0.0, 0.0])  # dx = 5 * 0.1 = 0.5 of the 10 px width
    deltas[0, 4] = torch.tensor([0.0, 0.0, 0.0, 2.0 * math.log(2.0)])  # dh = 0.2 * 2 log 2: height times 2 ** 0.4
    proposals = propose_with(rpn_output([5.0, -1.0, -2.0, -3.0, 4.0], deltas=deltas), std_dev=(0.1, 0.1, 0.2, 0.2))[0]
    torch.testing.assert_close(proposals[0], torch.tensor([5.0, 0.0, 15.0, 10.0]))
    height = 50.0 * 2 ** 0.4
    torch.testing.assert_close(proposals[1], torch.tensor([100.0, 125.0 - height / 2, 150.0, 125.0 + height / 2]))


def test_proposals_are_clipped_to_the_window():
    anchors = torch.tensor([[-10.0, -5.0, 30.0, 20.0], [50.0, 40.0, 120.0, 90.0]])
    rpn = rpn_output([2.0, 1.0])
    # window at the origin: the image is 60 high and 100 wide inside a larger padded batch
    proposals = propose_with(rpn, anchors, [(0, 0, 60, 100)])[0]
    assert proposals.tolist() == [[0.0, 0.0, 30.0, 20.0], [50.0, 40.0, 100.0, 60.0]]
    # a centred window (square padding): y in [10, 70], x in [20, 110]
    proposals = propose_with(rpn, anchors, [(10, 20, 70, 110)])[0]
    assert proposals.tolist() == [[20.0, 10.0, 30.0, 20.0], [50.0, 40.0, 110.0, 70.0]]


def test_clip_to_window_directly():
    boxes = torch.tensor([[[-5.0, -5.0, 500.0, 500.0]]])
    assert clip_to_window(boxes, (0, 0, 40, 30)).tolist() == [[[0.0, 0.0, 30.0, 40.0]]]
    assert clip_to_window(boxes, (8, 16, 40, 30)).tolist() == [[[16.0, 8.0, 30.0, 40.0]]]


def test_top_k_per_level_and_over_all_levels():
    # level 0 holds anchors 0..2 (scores 5, 4, 3), level 1 anchors 3..4 (scores 1, 0)
    rpn = rpn_output([5.0, 4.0, 3.0, 1.0, 0.0], level_sizes=[3, 2])
    per_level = propose_with(rpn, pre_nms_limit=2, pre_nms_per_level=True)[0]
    assert torch.equal(per_level, ANCHORS[[0, 1, 3, 4]])
    overall = propose_with(rpn, pre_nms_limit=2, pre_nms_per_level=False)[0]
    assert torch.equal(overall, ANCHORS[[0, 1]])


def test_post_nms_limit_keeps_the_best():
    proposals = propose_with(rpn_output([0.1, 3.0, -1.0, 2.0, 0.5]), post_nms_limit=2)[0]
    assert torch.equal(proposals, ANCHORS[[1, 3]])


def test_min_size_drops_small_proposals():
    # anchor 0 is 10 x 10, all others at least 20 x 20
    proposals = propose_with(rpn_output([9.0, 3.0, -1.0, 2.0, 0.5]), min_size=15.0)[0]
    assert torch.equal(proposals, ANCHORS[[1, 3, 4, 2]])


def test_nms_removes_an_overlapping_lower_scored_box():
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],   # score 2
        [0.0, 0.0, 10.0, 11.0],   # IoU 100 / 110 = 0.91 with anchor 0, score 1: removed
        [0.0, 0.0, 10.0, 20.0],   # IoU 0.5 with anchor 0, 0.55 with anchor 1: kept at threshold 0.7
        [50.0, 50.0, 60.0, 60.0],  # far away, score 0.5: kept
    ])
    rpn = rpn_output([2.0, 1.0, 0.0, 0.5])
    proposals = propose_with(rpn, anchors, nms_per_level=False)[0]
    assert torch.equal(proposals, anchors[[0, 3, 2]])
    # with a threshold below 0.5 the third box goes as well
    proposals = propose_with(rpn, anchors, nms_per_level=False, nms_threshold=0.45)[0]
    assert torch.equal(proposals, anchors[[0, 3]])


def test_nms_per_level_keeps_overlapping_boxes_of_different_levels():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 11.0]])  # IoU 0.91
    rpn = rpn_output([2.0, 1.0], level_sizes=[1, 1])
    assert torch.equal(propose_with(rpn, anchors, nms_per_level=True)[0], anchors)
    assert torch.equal(propose_with(rpn, anchors, nms_per_level=False)[0], anchors[:1])
