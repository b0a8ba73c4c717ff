"""Windowed image sources (large_images.py) and `maskrcnn predict --tile` end to end on a small model."""
import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import maskrcnn
from maskrcnn.cli import main
from maskrcnn.data import read_image
from maskrcnn.errors import DataError
from maskrcnn.large_images import ArraySource, PillowSource, TiffSource, open_image


def _picture(height=70, width=90):
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_tiff_is_memory_mapped_and_read_by_window(tmp_path):
    image = _picture()
    tifffile.imwrite(tmp_path / "a.tif", image)
    source = open_image(tmp_path / "a.tif")
    assert isinstance(source, TiffSource) and isinstance(source.array, np.memmap)
    assert (source.height, source.width) == (70, 90)
    assert np.array_equal(source.read(10, 20, 40, 85), image[10:40, 20:85])


def test_compressed_and_planar_tiffs(tmp_path):
    image = _picture()
    tifffile.imwrite(tmp_path / "z.tif", image, compression="zlib")
    assert np.array_equal(open_image(tmp_path / "z.tif").read(5, 6, 50, 60), image[5:50, 6:60])
    tifffile.imwrite(tmp_path / "p.tif", image.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    planar = open_image(tmp_path / "p.tif")
    assert (planar.height, planar.width) == (70, 90)
    assert np.array_equal(planar.read(0, 0, 70, 90), image)


def test_png_windows_match_read_image(tmp_path):
    image = _picture()
    Image.fromarray(image).save(tmp_path / "a.png")
    source = open_image(tmp_path / "a.png")
    assert isinstance(source, PillowSource)
    assert np.array_equal(source.read(3, 4, 33, 77), read_image(tmp_path / "a.png")[3:33, 4:77])


def test_tiling_lifts_the_size_guard_that_the_plain_path_keeps(tmp_path, monkeypatch):
    Image.fromarray(_picture()).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the bomb error comes at twice this
    with pytest.raises(DataError, match="decompression-bomb"):
        read_image(tmp_path / "a.png")
    with pytest.raises(DataError, match="max_pixels"):
        open_image(tmp_path / "a.png", max_pixels=100)
    assert open_image(tmp_path / "a.png").read(0, 0, 70, 90).shape == (70, 90, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def test_gray_array_windows_come_out_rgb():
    gray = _picture()[:, :, 0]
    window = ArraySource(gray).read(0, 0, 10, 12)
    assert window.shape == (10, 12, 3) and np.array_equal(window[:, :, 2], gray[:10, :12])


def test_predict_tile_writes_rle_results_of_the_whole_image(tmp_path):
    torch.manual_seed(0)
    model = maskrcnn.MaskRCNN(maskrcnn.Config.demo())
    maskrcnn.save(model, tmp_path / "model.pt")
    tifffile.imwrite(tmp_path / "big.tif", _picture(150, 230))
    code = main(["predict", "--weights", str(tmp_path / "model.pt"), str(tmp_path / "big.tif"), "--out",
                 str(tmp_path / "out"), "--tile", "128", "--overlap", "32", "--batch-size", "2",
                 "--max-detections", "5", "--no-progress"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert 0 < len(results) <= 5
    for row in results:
        assert row["segmentation"]["size"] == [150, 230]
        assert mask_utils.decode(row["segmentation"]).shape == (150, 230)
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert (images[0]["height"], images[0]["width"]) == (150, 230)
    assert np.asarray(Image.open(tmp_path / "out" / images[0]["picture"])).shape == (150, 230, 3)


def test_predict_refuses_an_overlap_as_large_as_the_tile(tmp_path, capsys):
    Image.fromarray(_picture()).save(tmp_path / "a.png")
    code = main(["predict", "--weights", "unused.pt", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--tile", "64", "--overlap", "64"])
    assert code == 2 and "--overlap" in capsys.readouterr().err


def test_picture_canvas_is_the_whole_image_for_every_source(tmp_path, monkeypatch):
    import maskrcnn.large_images as large_images

    monkeypatch.setattr(large_images, "STRIP_ROWS", 16)  # several strips, the last one short
    image = _picture()
    Image.fromarray(image).save(tmp_path / "rgb.png")
    Image.fromarray(image[:, :, 1]).save(tmp_path / "gray.png")
    tifffile.imwrite(tmp_path / "a.tif", image)
    rgb = open_image(tmp_path / "rgb.png")
    assert large_images.picture_canvas(rgb) is rgb.image  # handed over: no second full-size copy
    for name in ("rgb.png", "gray.png", "a.tif"):
        canvas = large_images.picture_canvas(open_image(tmp_path / name))
        assert canvas.mode == "RGB"
        assert np.array_equal(np.asarray(canvas), read_image(tmp_path / name)), name


def test_compact_picture_blends_each_mask_over_its_crop():
    from maskrcnn.compact_pictures import draw_compact
    from maskrcnn.structures import Detections
    from maskrcnn.visualize import instance_colors

    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    masks = torch.zeros((2, 60, 80), dtype=torch.bool)
    masks[0, 10:50, 10:40] = True
    masks[1, 30:50, 30:70] = True  # overlaps the first: blended over it, in order
    boxes = torch.tensor([[10, 10, 40, 50], [30, 30, 70, 50]], dtype=torch.float32)
    found = Detections(boxes, torch.tensor([1, 1]), torch.tensor([0.9, 0.8]), masks).compact()
    drawn = draw_compact(image, found, ["bg", "shape"])
    first, second = (np.asarray(c, dtype=np.float32) for c in instance_colors(2))
    once = np.rint(0.55 * 100 + 0.45 * first)
    twice = np.rint(0.55 * once + 0.45 * second)
    assert np.array_equal(drawn[25, 20], once)  # the first mask only, below its caption, inside its box
    assert np.array_equal(drawn[45, 35], twice)  # both masks, below the second caption
    assert np.array_equal(drawn[45, 55], np.rint(0.55 * 100 + 0.45 * second))
    assert np.array_equal(drawn[5, 75], [100, 100, 100])  # outside every box
    assert np.array_equal(image[25, 20], [100, 100, 100])  # the input is left as it was
