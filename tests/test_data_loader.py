"""The loader (data/loader.py): batching, seeded order, skipping unreadable images, and a missing image named
once whether it is skipped or validated."""
import json

import pytest
import torch
from files_dataset import Files
from PIL import Image

from maskrcnn.data import CocoDataset, HorizontalFlip, ShapesDataset, collate, make_loader, validate_dataset
from maskrcnn.errors import DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


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
