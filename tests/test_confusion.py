"""The confusion matrix and per-class precision, recall and F1, on hand-made images with the counts worked out
by hand: a correct detection, a wrong class, a duplicate, a miss, a detection on a crowd region, a detection
below the score threshold."""
import math

import numpy as np
import pytest
import torch

from maskrcnn.confusion import confusion_matrix, errors, image_confusion, precision_recall_f1
from maskrcnn.structures import Detections

H = W = 40


def instances(boxes, labels, scores=None) -> Detections:
    """Detections whose masks fill their (integer) boxes exactly, so box and mask IoU agree."""
    masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    scores = scores if scores is not None else [1.0] * len(boxes)
    return Detections(boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      labels=torch.tensor(labels, dtype=torch.int64), scores=torch.tensor(scores, dtype=torch.float32),
                      masks=masks)


# Ground truth: a class-1 square, a class-2 square, a class-1 square nobody finds, and a class-2 crowd region.
GROUND_TRUTH = instances([(0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30), (20, 20, 40, 40)], [1, 2, 1, -2])
DETECTIONS = instances(
    [(0, 0, 10, 10),    # class 1 on the class-1 square: correct
     (0, 0, 10, 9),     # class 1 again on it (IoU 0.9): a duplicate, spurious
     (20, 0, 30, 10),   # class 3 on the class-2 square: wrong class
     (22, 22, 30, 30),  # class 1 inside the crowd region (IoU with it 0.16, all of it covered): ignored
     (10, 30, 20, 40),  # class 2 on nothing: spurious
     (0, 20, 10, 30)],  # class 1 on the third square, but below the score threshold: not counted, a miss
    [1, 1, 3, 1, 2, 1], [0.9, 0.8, 0.7, 0.6, 0.55, 0.1])


@pytest.mark.parametrize("use_masks", [True, False])
def test_each_kind_of_error_lands_in_its_cell(use_masks):
    matrix = image_confusion(GROUND_TRUTH, DETECTIONS, 4, iou_threshold=0.5, score_threshold=0.5, use_masks=use_masks)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1, 1] = 1  # the correct detection
    expected[0, 1] = 1  # the duplicate
    expected[2, 3] = 1  # class-2 object detected as class 3
    expected[0, 2] = 1  # class 2 on nothing
    expected[1, 0] = 1  # the missed class-1 square (its detection scores 0.1 < 0.5)
    np.testing.assert_array_equal(matrix, expected)
    assert errors(matrix) == 4


def test_a_lower_score_threshold_turns_the_miss_into_a_hit():
    matrix = image_confusion(GROUND_TRUTH, DETECTIONS, 4, score_threshold=0.0)
    assert matrix[1, 1] == 2 and matrix[1, 0] == 0


def test_the_best_scored_detection_takes_the_object_and_its_own_class_comes_first():
    # The class-2 detection scores higher but is the wrong class; the class-1 one still gets the object.
    truth = instances([(0, 0, 10, 10)], [1])
    found = instances([(0, 0, 10, 10), (0, 0, 10, 10)], [2, 1], [0.9, 0.5])
    matrix = image_confusion(truth, found, 3)
    assert matrix[1, 1] == 1 and matrix[0, 2] == 1 and matrix.sum() == 2


def test_below_the_iou_threshold_is_a_miss_and_a_spurious_detection():
    truth = instances([(0, 0, 10, 10)], [1])
    found = instances([(5, 0, 15, 10)], [1])  # IoU 50 / 150 = 1/3
    assert image_confusion(truth, found, 2, iou_threshold=0.5).tolist() == [[0, 1], [1, 0]]
    assert image_confusion(truth, found, 2, iou_threshold=0.3).tolist() == [[0, 0], [0, 1]]


def test_empty_images():
    empty = instances([], [])
    assert image_confusion(empty, empty, 3).sum() == 0
    assert image_confusion(instances([(0, 0, 5, 5)], [2]), empty, 3)[2, 0] == 1
    assert image_confusion(empty, instances([(0, 0, 5, 5)], [2]), 3)[0, 2] == 1


def test_the_matrix_sums_over_images():
    total = confusion_matrix([GROUND_TRUTH, GROUND_TRUTH], [DETECTIONS, DETECTIONS], 4, score_threshold=0.5)
    np.testing.assert_array_equal(total, 2 * image_confusion(GROUND_TRUTH, DETECTIONS, 4, score_threshold=0.5))
    with pytest.raises(ValueError):
        confusion_matrix([GROUND_TRUTH], [], 4)


def test_precision_recall_f1_by_hand():
    # rows: ground truth BG, a, b; columns: detected BG, a, b.
    matrix = np.array([[0, 2, 1],
                       [3, 6, 1],
                       [0, 2, 0]])
    values = precision_recall_f1(matrix)
    # a: tp 6, fp 2 (spurious) + 2 (b detected as a) = 4, fn 3 (missed) + 1 (detected as b) = 4
    assert values["tp"].tolist() == [6, 0] and values["fp"].tolist() == [4, 2] and values["fn"].tolist() == [4, 2]
    assert values["precision"][0] == pytest.approx(0.6) and values["recall"][0] == pytest.approx(0.6)
    assert values["f1"][0] == pytest.approx(0.6)
    # b: tp 0, fp 1 + 1, fn 2 -> precision 0, recall 0, F1 0 (not NaN)
    assert values["precision"][1] == 0.0 and values["recall"][1] == 0.0 and values["f1"][1] == 0.0


def test_precision_recall_f1_unequal_and_undefined():
    matrix = np.array([[0, 1, 0, 0],
                       [1, 3, 0, 0],
                       [0, 0, 0, 0],
                       [2, 0, 0, 0]])
    values = precision_recall_f1(matrix)
    assert values["precision"][0] == pytest.approx(0.75) and values["recall"][0] == pytest.approx(0.75)
    assert values["f1"][0] == pytest.approx(0.75)
    assert math.isnan(values["precision"][1]) and math.isnan(values["recall"][1]) and math.isnan(values["f1"][1])
    assert math.isnan(values["precision"][2]) and values["recall"][2] == 0.0 and math.isnan(values["f1"][2])
    # one with P = 1/2, R = 1/4: F1 = 2 * 1/8 / (3/4) = 1/3
    values = precision_recall_f1(np.array([[0, 1], [3, 1]]))
    assert values["f1"][0] == pytest.approx(1 / 3)
