"""Tiled prediction: tile layout, and merging checked exactly with an oracle predictor.

The oracle reads objects off a label image (channel 0 holds each object's id, 0 is background) and returns, for
whatever window it is given, every object visible there with its exact mask, its box and a score. On the whole
image it is a perfect single pass; on a tile it sees what a model would see there: objects cut by the tile's
edges. A correct merge of its tiles therefore gives back exactly the single pass.
"""
import numpy as np
import pytest
import torch

from maskrcnn import Config, MaskRCNN
from maskrcnn.errors import ConfigError
from maskrcnn.mask_crops import MaskCrops
from maskrcnn.structures import Detections
from maskrcnn.tiling import drop_duplicates, predict_tiled, tile_positions, tile_windows


def oracle(images):
    """One Detections per (h, w, 3) uint8 label image: one instance per object id present."""
    out = []
    for image in images:
        ids = image[:, :, 0].astype(np.int64)
        present = [int(i) for i in np.unique(ids) if i > 0]
        masks = torch.from_numpy(np.stack([ids == i for i in present])) if present else torch.zeros((0, *ids.shape), dtype=torch.bool)
        boxes = torch.zeros((len(present), 4))
        for k, mask in enumerate(masks):
            ys, xs = torch.where(mask)
            boxes[k] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        labels = torch.tensor([1 + i % 3 for i in present], dtype=torch.int64)
        scores = torch.tensor([0.5 + i / 1000 for i in present], dtype=torch.float32)
        order = torch.argsort(scores, descending=True)
        out.append(Detections(boxes[order], labels[order], scores[order], masks[order]))
    return out


def label_image(height, width, rectangles):
    """(H, W, 3) uint8 with object k + 1 filling rectangle k = (x0, y0, x1, y1) in channel 0."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(rectangles):
        image[y0:y1, x0:x1, 0] = k + 1
    return image


def assert_same_instances(merged: Detections, single: Detections):
    """The same set of (mask, label) pairs, each once."""
    assert len(merged) == len(single)
    merged_masks, single_masks = merged.full_masks(), single.full_masks()
    for k in range(len(single)):
        matches = [m for m in range(len(merged)) if torch.equal(merged_masks[m], single_masks[k])]
        assert len(matches) == 1, f"instance {k} found {len(matches)} times"
        assert int(merged.labels[matches[0]]) == int(single.labels[k])


def test_tile_positions_align_the_last_tile_with_the_edge():
    assert tile_positions(1000, 256, 64) == [0, 192, 384, 576, 744]
    assert tile_positions(448, 256, 64) == [0, 192]
    assert tile_positions(256, 256, 64) == [0]
    assert tile_positions(100, 256, 64) == [0]
    windows = tile_windows(100, 300, 256, 64)
    assert [(t.y0, t.x0, t.y1, t.x1) for t in windows] == [(0, 0, 100, 256), (0, 44, 100, 300)]


def test_bad_tiling_settings_are_config_errors():
    with pytest.raises(ConfigError, match="--overlap"):
        tile_windows(100, 100, 64, 64)
    with pytest.raises(ConfigError, match="--batch-size"):
        predict_tiled(oracle, np.zeros((10, 10, 3), np.uint8), tile=64, overlap=8, batch_size=0)


def test_object_cut_by_one_edge_is_taken_whole_from_the_other_tile():
    # Tiles x 0..256 and 192..448. Object 1 crosses x = 256 (cut in the first tile, whole in the second);
    # object 2 lies in the overlap (whole in both); object 3 crosses x = 192 (cut in the second tile).
    image = label_image(256, 448, [(230, 40, 290, 90), (200, 120, 250, 160), (170, 190, 220, 230)])
    merged = predict_tiled(oracle, image, tile=256, overlap=64)
    assert merged.is_compact
    assert_same_instances(merged, oracle([image])[0])
    assert torch.equal(merged.boxes[merged.labels == 2], torch.tensor([[230.0, 40.0, 290.0, 90.0]]))


def test_object_at_the_corner_of_four_tiles_larger_than_the_overlap_is_joined():
    # 448x448: four tiles, corners at 192 and 256. The square 150..300 is cut in all four (150 > 64 overlap).
    image = label_image(448, 448, [(150, 150, 300, 300)])
    merged = predict_tiled(oracle, image, tile=256, overlap=64, batch_size=3)
    assert len(merged) == 1
    assert torch.equal(merged.full_masks()[0], torch.from_numpy(image[:, :, 0] == 1))
    assert merged.boxes[0].tolist() == [150.0, 150.0, 300.0, 300.0]
    assert int(merged.labels[0]) == 2
    assert float(merged.scores[0]) == pytest.approx(0.501)


def test_joined_score_is_the_pixel_weighted_mean_of_the_pieces():
    image = label_image(256, 448, [(100, 50, 350, 80)])  # 250 px wide: cut in both tiles

    def scored_by_area(images):  # a score that depends on how much of the object the tile sees
        found = oracle(images)
        return [Detections(d.boxes, d.labels, d.masks.flatten(1).sum(1).float() / 10000, d.masks) for d in found]

    merged = predict_tiled(scored_by_area, image, tile=256, overlap=64)
    left, right = (256 - 100) * 30, (350 - 192) * 30  # pixels of each piece
    expected = (left * left / 10000 + right * right / 10000) / (left + right)
    assert len(merged) == 1
    assert float(merged.scores[0]) == pytest.approx(expected, rel=1e-6)
    assert merged.boxes[0].tolist() == [100.0, 50.0, 350.0, 80.0]


def test_tiles_with_nothing_and_an_empty_image():
    image = label_image(600, 600, [(20, 20, 60, 60)])
    merged = predict_tiled(oracle, image, tile=256, overlap=64)
    assert_same_instances(merged, oracle([image])[0])
    empty = predict_tiled(oracle, np.zeros((600, 500, 3), np.uint8), tile=256, overlap=64)
    assert len(empty) == 0 and empty.image_size == (600, 500) and isinstance(empty.masks, MaskCrops)


def test_image_smaller_than_one_tile_is_the_single_pass():
    image = label_image(100, 150, [(0, 0, 30, 30), (100, 60, 150, 100)])
    merged = predict_tiled(oracle, image, tile=256, overlap=64)
    single = oracle([image])[0]
    assert torch.equal(merged.boxes, single.boxes) and torch.equal(merged.scores, single.scores)
    assert torch.equal(merged.full_masks(), single.masks)


def test_many_objects_on_an_image_not_a_multiple_of_the_stride_match_the_single_pass():
    rng = np.random.default_rng(0)
    height, width, rectangles, taken = 530, 770, [], np.zeros((530, 770), bool)
    while len(rectangles) < 60:
        w, h = (int(v) for v in rng.integers(8, 100, size=2))  # some larger than the 48 px overlap
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if not taken[y0:y0 + h, x0:x0 + w].any():
            taken[y0:y0 + h, x0:x0 + w] = True
            rectangles.append((x0, y0, x0 + w, y0 + h))
    image = label_image(height, width, rectangles)
    merged = predict_tiled(oracle, image, tile=128, overlap=48, batch_size=4)
    assert_same_instances(merged, oracle([image])[0])
    assert (merged.scores[:-1] >= merged.scores[1:]).all()


def test_no_cap_unless_asked():
    rectangles = [(x, y, x + 10, y + 10) for x in range(2, 400, 20) for y in range(2, 200, 20)]  # 200 objects
    image = label_image(200, 400, rectangles)
    assert len(predict_tiled(oracle, image, tile=128, overlap=32)) == 200
    capped = predict_tiled(oracle, image, tile=128, overlap=32, max_detections=7)
    assert len(capped) == 7
    assert capped.scores.tolist() == pytest.approx([0.5 + i / 1000 for i in range(200, 193, -1)])


def test_a_real_model_on_one_tile_gives_its_plain_prediction():
    torch.manual_seed(0)
    model = MaskRCNN(Config.demo())
    image = np.random.default_rng(1).integers(0, 256, size=(96, 120, 3), dtype=np.uint8)
    plain = model.predict([image])[0]
    assert len(plain) > 0
    exact = predict_tiled(lambda tiles: model.predict(tiles), image, tile=128, overlap=32, duplicate_iou=None)
    assert torch.equal(exact.boxes, plain.boxes) and torch.equal(exact.labels, plain.labels)
    assert torch.equal(exact.full_masks(), plain.masks)
    # By default the masks found twice go: the plain prediction less greedy mask NMS at 0.5, worked out here
    # on the full masks.
    tiled = model.predict_tiled(image, tile=128, overlap=32)
    full = plain.masks.flatten(1).float()  # (D, H*W)
    inter = full @ full.T
    iou = inter / (full.sum(1)[:, None] + full.sum(1)[None, :] - inter).clamp(min=1)
    kept = []
    for k in range(len(plain)):
        if all(iou[k, m] < 0.5 for m in kept):
            kept.append(k)
    assert len(kept) < len(plain)  # the random model finds some masks twice, so the step is tested
    assert torch.equal(tiled.boxes, plain.boxes[kept]) and torch.equal(tiled.full_masks(), plain.masks[kept])


def test_a_real_model_over_several_tiles_keeps_masks_inside_their_boxes_of_the_image():
    torch.manual_seed(0)
    model = MaskRCNN(Config.demo())
    image = np.random.default_rng(2).integers(0, 256, size=(200, 260, 3), dtype=np.uint8)
    found = model.predict_tiled(image, tile=128, overlap=32, batch_size=2)
    assert found.image_size == (200, 260) and len(found) > 0
    for crop, x0, y0 in found.masks:
        assert 0 <= x0 and x0 + crop.shape[1] <= 260 and 0 <= y0 and y0 + crop.shape[0] <= 200


def masks_of(height, width, rectangles):
    masks = torch.zeros((len(rectangles), height, width), dtype=torch.bool)
    for k, (x0, y0, x1, y1) in enumerate(rectangles):
        masks[k, y0:y1, x0:x1] = True
    return masks


def test_an_object_found_twice_in_one_tile_is_kept_once():
    # Two boxes on one 40x40 object: the second is looser (box IoU 0.44, below box NMS's 0.5), its mask
    # nearly the same (IoU 40*40 / (40*40 + 2*40) = 0.95). A neighbour touching the object stays.
    masks = masks_of(200, 200, [(50, 50, 90, 90), (50, 50, 90, 92), (90, 50, 130, 90)])
    boxes = torch.tensor([[50.0, 50, 90, 90], [40, 40, 100, 100], [90, 50, 130, 90]])

    def twice(images):
        return [Detections(boxes, torch.tensor([1, 2, 1]), torch.tensor([0.9, 0.6, 0.8]), masks) for _ in images]

    merged = predict_tiled(twice, np.zeros((200, 200, 3), np.uint8), tile=256, overlap=64)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.8])
    assert torch.equal(merged.full_masks(), masks[[0, 2]])
    kept_all = predict_tiled(twice, np.zeros((200, 200, 3), np.uint8), tile=256, overlap=64, duplicate_iou=None)
    assert len(kept_all) == 3


def test_drop_duplicates_is_greedy_in_score_order():
    # Mask IoU of a and b 100/120, of b and c 120/150, of a and c 100/150 < 0.7: b goes because of a, so c stays.
    masks = masks_of(20, 40, [(0, 0, 10, 10), (0, 0, 10, 12), (0, 0, 10, 15)])
    found = Detections(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 15]]), torch.tensor([1, 1, 1]),
                       torch.tensor([0.9, 0.8, 0.7]), MaskCrops.from_full(masks))
    kept = drop_duplicates(found, 0.7)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(drop_duplicates(found[torch.tensor([], dtype=torch.int64)], 0.5)) == 0
