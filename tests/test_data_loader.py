"""Batching, seeded order, skipping unreadable images; validate_dataset and load_dataset_spec."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.data import (CocoDataset, Dataset, HorizontalFlip, MaskFolderDataset, ShapesDataset, ViaDataset,
                           collate, load_dataset_spec, make_loader, validate_dataset)
from maskrcnn.errors import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


class Files(Dataset):
    """Plain image files of different sizes; image i has i instances (one-pixel-high stripes)."""

    def __init__(self, folder, sizes):
        super().__init__()
        self.add_class("files", 1, "thing")
        for i, (width, height) in enumerate(sizes):
            path = folder / f"{i}.png"
            Image.new("RGB", (width, height), (i, i, i)).save(path)
            self.add_image("files", i, str(path))
        self.prepare()

    def load_mask(self, image_index):
        with Image.open(self.image_info[image_index]["path"]) as image:
            width, height = image.size
        masks = np.zeros((image_index, height, width), dtype=bool)
        for k in range(image_index):
            masks[k, k % height, :] = True
        return masks, np.ones(image_index, dtype=np.int64)


def _ids(loader):
    return [[int(image[0, 0, 0] * 255 + 0.5) for image in images] for images, _ in loader]


def test_collate_keeps_sizes_and_drops_skipped():
    a = (torch.zeros(3, 4, 5), {"labels": torch.tensor([1])})
    b = (torch.zeros(3, 7, 2), {"labels": torch.tensor([], dtype=torch.int64)})
    images, targets = collate([a, None, b])
    assert [tuple(i.shape) for i in images] == [(3, 4, 5), (3, 7, 2)]
    assert len(targets) == 2 and targets[1]["labels"].shape == (0,)


def test_loader_batches_different_sizes_and_empty_images(tmp_path):
    dataset = Files(tmp_path, [(8, 6), (5, 9), (7, 7), (4, 4)])
    batches = list(make_loader(dataset, batch_size=3, shuffle=False, seed=0))
    assert len(batches) == 2
    images, targets = batches[0]
    assert [tuple(i.shape) for i in images] == [(3, 6, 8), (3, 9, 5), (3, 7, 7)]
    # Image 0 has no objects and is still a sample.
    assert targets[0]["boxes"].shape == (0, 4) and targets[0]["masks"].shape == (0, 6, 8)
    assert targets[2]["boxes"].tolist() == [[0, 0, 7, 1], [0, 1, 7, 2]]


def test_drop_empty(tmp_path):
    dataset = Files(tmp_path, [(4, 4)] * 4)
    assert sorted(sum(_ids(make_loader(dataset, 2, shuffle=True, seed=0, drop_empty=True)), [])) == [1, 2, 3]


def test_order_is_seeded(tmp_path):
    dataset = Files(tmp_path, [(4, 4)] * 12)
    loader = make_loader(dataset, batch_size=4, shuffle=True, seed=5)
    first, second = _ids(loader), _ids(loader)
    assert first == _ids(make_loader(dataset, batch_size=4, shuffle=True, seed=5))
    assert first != second  # the next epoch is shuffled again
    assert sorted(sum(first, [])) == list(range(12))
    assert first != _ids(make_loader(dataset, batch_size=4, shuffle=True, seed=6))


def test_augmentation_is_seeded_and_same_with_workers():
    dataset = ShapesDataset(6, seed=1)

    def boxes(loader):
        return [t["boxes"] for _, targets in loader for t in targets]

    plain = boxes(make_loader(dataset, 3, shuffle=True, seed=2, transform=HorizontalFlip(0.5)))
    again = boxes(make_loader(dataset, 3, shuffle=True, seed=2, transform=HorizontalFlip(0.5)))
    workers = boxes(make_loader(dataset, 3, shuffle=True, seed=2, num_workers=1, transform=HorizontalFlip(0.5)))
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(plain, again, workers))


def test_unreadable_image_is_skipped_with_a_warning(tmp_path):
    dataset = Files(tmp_path, [(4, 4)] * 3)
    (tmp_path / "1.png").write_bytes(b"not a png")
    loader = make_loader(dataset, batch_size=3, shuffle=False, seed=0)
    with pytest.warns(DataWarning, match=r"1\.png"):
        batches = list(loader)
    assert _ids(batches) == [[0, 2]]
    assert loader.dataset.skipped == [str(tmp_path / "1.png")]


def test_validate_lists_every_problem(tmp_path):
    dataset = Files(tmp_path, [(4, 4)] * 4)
    (tmp_path / "1.png").write_bytes(b"")
    Image.new("RGB", (5, 5)).save(tmp_path / "3.png")  # masks are made from the size, so they still agree
    original = dataset.load_mask

    def broken(index):
        masks, ids = original(index)
        if index == 2:
            masks[0] = False  # an empty mask
            masks = masks[:, :, :3]  # and a size mismatch
        return masks, ids

    dataset.load_mask = broken
    dataset.load_problems = []
    problems = validate_dataset(dataset)
    messages = [(p.image_id, p.message) for p in problems]
    assert any(i == 1 and "0 bytes" in m for i, m in messages)
    assert any(i == 2 and "empty mask" in m for i, m in messages)
    assert any(i == 2 and "4x3" in m for i, m in messages)
    assert not any(i in (0, 3) for i, _ in messages)
    assert all(p.path.endswith(f"{p.image_id}.png") for p in problems)


def test_validate_includes_load_time_skips(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    polygon = [1, 1, 9, 1, 9, 9, 1, 9]
    data = {"images": [{"id": 1, "width": 20, "height": 20, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 3], "segmentation": [polygon]},
                            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8],
                             "segmentation": [polygon]}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.warns(DataWarning):
        dataset = CocoDataset(tmp_path / "c.json", tmp_path, max_skip_fraction=0.5)
    problems = validate_dataset(dataset)
    assert [p.annotation_id for p in problems] == [5]


def test_specs(tmp_path):
    shapes = load_dataset_spec("shapes:3:64x80:9")
    assert isinstance(shapes, ShapesDataset) and len(shapes) == 3 and shapes.load_image(0).shape == (64, 80, 3)
    assert np.array_equal(shapes.load_image(1), ShapesDataset(3, 64, 80, seed=9).load_image(1))
    assert load_dataset_spec("shapes:2").load_image(0).shape == (128, 128, 3)

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "width": 8, "height": 8, "file_name": "a.png"}], "categories": [], "annotations": []}
    (tmp_path / "c.json").write_text(json.dumps(data))
    coco = load_dataset_spec(f"coco:{tmp_path / 'c.json'}", allow_empty=True)  # image folder = the JSON's folder
    assert isinstance(coco, CocoDataset) and coco.image_info[0]["path"] == str(tmp_path / "a.png")

    (tmp_path / "v.json").write_text(json.dumps({"k": {"filename": "a.png", "size": 1, "regions": []}}))
    assert isinstance(load_dataset_spec(f"via:{tmp_path / 'v.json'}:{tmp_path}", allow_empty=True), ViaDataset)

    (tmp_path / "m").mkdir()
    Image.fromarray(np.ones((8, 8), dtype=np.uint8)).save(tmp_path / "m" / "a_mask.png")
    assert isinstance(load_dataset_spec(f"masks:{tmp_path}:{tmp_path / 'm'}"), MaskFolderDataset)


@pytest.mark.parametrize("spec", ["", "pascalvoc:x", "coco", "shapes:many", "shapes:3:big", "masks:onlyone", "coco::x"])
def test_bad_spec_lists_the_accepted_forms(spec):
    with pytest.raises(DataError, match="shapes:COUNT|must be"):
        load_dataset_spec(spec)


def test_a_missing_image_is_named_once_when_skipped_and_when_validated(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "width": 8, "height": 8, "file_name": "a.png"},
                       {"id": 7, "width": 8, "height": 8, "file_name": "gone.png"}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 4, 4],
                             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    dataset = CocoDataset(tmp_path / "c.json", tmp_path)
    loader = make_loader(dataset, batch_size=2, shuffle=False, seed=0)
    with pytest.warns(DataWarning) as caught:
        (batch,) = list(loader)
    message = str(caught[0].message)
    assert message.count("gone.png") == 1 and message.count("image 7") == 1 and "image file not found" in message
    assert len(batch[0]) == 1 and batch.skipped == [(dataset.image_reference(1), "image file not found")]
    (problem,) = validate_dataset(dataset)
    assert str(problem).count("gone.png") == 1 and str(problem).count("image 7") == 1
