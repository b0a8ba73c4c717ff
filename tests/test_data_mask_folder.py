"""MaskFolderDataset: PennFudan pairing, instance ids to masks, size checks."""
import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import MaskFolderDataset
from maskrcnn.errors import DataError, DataWarning

W, H = 20, 16


def _label_image():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[2:6, 3:8] = 1  # 4 x 5 = 20 pixels
    labels[10:16, 12:20] = 2  # 6 x 8 = 48 pixels
    return labels


def _pennfudan(tmp_path, suffix="_mask", stems=("FudanPed00001", "FudanPed00002")):
    images, masks = tmp_path / "PNGImages", tmp_path / "PedMasks"
    images.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    for stem in stems:
        Image.new("RGB", (W, H), (1, 2, 3)).save(images / f"{stem}.png")
        Image.fromarray(_label_image(), mode="L").save(masks / f"{stem}{suffix}.png")
    return images, masks


def test_pennfudan_layout(tmp_path):
    dataset = MaskFolderDataset(*_pennfudan(tmp_path), class_name="pedestrian")
    assert dataset.class_names == ["BG", "pedestrian"]
    assert [info["id"] for info in dataset.image_info] == ["FudanPed00001", "FudanPed00002"]
    masks, class_ids = dataset.load_mask(0)
    assert masks.shape == (2, H, W) and class_ids.tolist() == [1, 1]
    assert [int(m.sum()) for m in masks] == [20, 48]
    assert dataset.load_target(0)["boxes"].tolist() == [[3, 2, 8, 6], [12, 10, 20, 16]]


def test_explicit_suffix_and_same_stem(tmp_path):
    dataset = MaskFolderDataset(*_pennfudan(tmp_path, suffix="-ids"), mask_suffix="-ids")
    assert len(dataset) == 2
    (tmp_path / "same").mkdir()
    dataset = MaskFolderDataset(*_pennfudan(tmp_path / "same", suffix="", stems=("x",)))
    assert [info["mask_path"].endswith("PedMasks/x.png") for info in dataset.image_info] == [True]


def test_masks_next_to_images(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    Image.fromarray(_label_image()).save(tmp_path / "a_mask.png")
    dataset = MaskFolderDataset(tmp_path, tmp_path)
    assert [info["id"] for info in dataset.image_info] == ["a"]  # the mask is not taken for an image


def test_palette_and_16bit_ids(tmp_path):
    images, masks = _pennfudan(tmp_path, stems=("p",))
    palette = Image.fromarray(_label_image() * 3, mode="P")  # ids 3 and 6, stored as palette indices
    palette.putpalette([0, 0, 0] + [255, 255, 255] * 255)
    palette.save(masks / "p_mask.png")
    assert [int(m.sum()) for m in MaskFolderDataset(images, masks).load_mask(0)[0]] == [20, 48]
    Image.fromarray(_label_image().astype(np.uint16) * 1000).save(masks / "p_mask.png")
    assert [int(m.sum()) for m in MaskFolderDataset(images, masks).load_mask(0)[0]] == [20, 48]


def test_image_without_mask_is_left_out_with_a_warning(tmp_path):
    images, masks = _pennfudan(tmp_path)
    Image.new("RGB", (W, H)).save(images / "lonely.png")
    with pytest.warns(DataWarning, match="1 images have no mask.*lonely.png"):
        dataset = MaskFolderDataset(images, masks)
    assert len(dataset) == 2
    assert any("lonely.png" in str(p) for p in dataset.load_problems)


def test_mask_of_another_size(tmp_path):
    images, masks = _pennfudan(tmp_path)
    Image.fromarray(np.zeros((H, W + 1), dtype=np.uint8)).save(masks / "FudanPed00002_mask.png")
    dataset = MaskFolderDataset(images, masks)
    with pytest.raises(DataError, match="FudanPed00002_mask.png.*FudanPed00002.png"):
        dataset.load_mask(1)


def test_no_pairs_or_no_folder(tmp_path):
    images, masks = _pennfudan(tmp_path)
    with pytest.raises(DataError, match="no image has a mask"):
        MaskFolderDataset(images, masks, mask_suffix="_other")
    with pytest.raises(DataError, match="missing.*not found"):
        MaskFolderDataset(images, tmp_path / "missing")
