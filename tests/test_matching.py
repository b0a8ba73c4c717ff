"""IoU matching and balanced sampling (maskrcnn.matching), on hand-written IoU matrices and label vectors."""
import torch

from maskrcnn.matching import label_anchors, sample_labels
from maskrcnn.structures import IGNORE, NEGATIVE, POSITIVE

P, N, I = POSITIVE, NEGATIVE, IGNORE


def test_thresholds_and_best_anchor_of_each_ground_truth():
    # Rows: ground truths; columns: anchors.
    iou = torch.tensor([
        [0.80, 0.50, 0.20, 0.10, 0.70, 0.30, 0.0],
        [0.10, 0.60, 0.25, 0.00, 0.00, 0.00, 0.0],
    ])
    labels, matched = label_anchors(iou, positive_iou=0.7, negative_iou=0.3, allow_low_quality=False)
    # a0 0.8 >= 0.7; a1 best 0.6 lies between; a2 0.25 and a3 0.1 below 0.3; a4 exactly 0.7 is positive;
    # a5 exactly 0.3 is not below 0.3, so ignored; a6 touches nothing.
    assert labels.tolist() == [P, I, N, N, P, I, N]
    assert matched[[0, 1, 4]].tolist() == [0, 1, 0]

    labels, matched = label_anchors(iou, positive_iou=0.7, negative_iou=0.3, allow_low_quality=True)
    # Ground truth 1's best anchor (a1, IoU 0.6 < 0.7) becomes positive and is matched to it.
    assert labels.tolist() == [P, P, N, N, P, I, N]
    assert matched[[0, 1, 4]].tolist() == [0, 1, 0]


def test_best_anchor_ties_are_all_positive_and_take_that_ground_truth():
    iou = torch.tensor([
        [0.40, 0.40, 0.10],
        [0.45, 0.00, 0.20],
    ])
    labels, matched = label_anchors(iou, 0.7, 0.3, allow_low_quality=True)
    # gt0's best is 0.4 at a0 and a1 (a tie); gt1's best is 0.45 at a0. Each of a0, a1 is some truth's best.
    assert labels.tolist() == [P, P, N]
    assert matched[1].item() == 0
    # a0 is the best of both; it must point at one of them whose best it is.
    assert matched[0].item() in (0, 1)


def test_no_ground_truth_gives_only_negatives():
    labels, matched = label_anchors(torch.zeros((0, 5)), 0.7, 0.3, allow_low_quality=True)
    assert labels.tolist() == [N] * 5
    assert matched.tolist() == [0] * 5


def _labels(positives: int, negatives: int, ignored: int) -> torch.Tensor:
    return torch.tensor([P] * positives + [N] * negatives + [I] * ignored)


def test_too_many_positives_keep_exactly_the_ratio():
    labels = _labels(300, 1000, 50)
    sampled = sample_labels(labels, 256, 0.5, torch.Generator().manual_seed(0))
    assert (sampled == P).sum().item() == int(256 * 0.5) == 128
    assert (sampled == N).sum().item() == 128
    # Nothing is relabelled across kinds: kept positives were positives, kept negatives were negatives.
    assert bool((labels[sampled == P] == P).all()) and bool((labels[sampled == N] == N).all())
    assert bool((sampled[labels == I] == I).all())
    assert labels.tolist() == _labels(300, 1000, 50).tolist()  # the input is left alone


def test_ratio_rounds_down():
    sampled = sample_labels(_labels(100, 100, 0), 64, 0.33)
    assert (sampled == P).sum().item() == 21  # int(64 * 0.33) = int(21.12)
    assert (sampled == N).sum().item() == 64 - 21


def test_few_positives_are_all_kept_and_negatives_fill_up():
    sampled = sample_labels(_labels(10, 1000, 0), 256, 0.5)
    assert (sampled == P).sum().item() == 10
    assert (sampled == N).sum().item() == 246


def test_fewer_labels_than_the_sample_size_are_all_kept():
    labels = _labels(10, 50, 7)
    assert sample_labels(labels, 256, 0.5).tolist() == labels.tolist()


def test_positive_share_and_total_never_exceed_the_limits():
    generator = torch.Generator().manual_seed(1)
    for positives, negatives, size, fraction in [(0, 500, 256, 0.5), (500, 0, 256, 0.5), (129, 129, 256, 0.5),
                                                 (40, 3, 32, 0.25), (7, 7, 5, 1.0)]:
        sampled = sample_labels(_labels(positives, negatives, 3), size, fraction, generator)
        kept_positive = (sampled == P).sum().item()
        assert kept_positive == min(positives, int(size * fraction))
        assert kept_positive + (sampled == N).sum().item() == min(size, kept_positive + negatives)


def test_same_generator_seed_same_sample():
    labels = _labels(300, 300, 0)
    a = sample_labels(labels, 64, 0.5, torch.Generator().manual_seed(5))
    b = sample_labels(labels, 64, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_a_best_anchor_keeps_its_own_best_ground_truth():
    """torchvision's `set_low_quality_matches_` and matterport's `build_rpn_targets` both regress such an anchor
    onto the ground truth it overlaps most, not onto the one whose best it is."""
    iou = torch.tensor([
        [0.90, 0.625, 0.0],
        [0.30, 0.533, 0.0],
    ])
    labels, matched = label_anchors(iou, 0.7, 0.3, allow_low_quality=True)
    # a1 is gt1's best (0.533), so positive; its own best is gt0 (0.625)
    assert labels.tolist() == [P, P, N]
    assert matched[:2].tolist() == [0, 0]
