"""read_image / to_rgb_array: every conversion checked against pixel values worked out by hand."""
import numpy as np
import pytest
from PIL import Image

from maskrcnn.data.images import image_size, read_image, to_rgb_array
from maskrcnn.errors import DataError


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trips(tmp_path):
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = read_image(_save(tmp_path, "a.png", Image.fromarray(array)))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("size", [(1, 1), (8, 8)])
def test_tiny_images_load(tmp_path, size):
    out = read_image(_save(tmp_path, "tiny.png", Image.new("RGB", size, (1, 2, 3))))
    assert out.shape == (size[1], size[0], 3)
    assert (out == [1, 2, 3]).all()


def test_16bit_is_divided_by_257(tmp_path):
    values = np.array([[65535, 25700], [0, 257]], dtype=np.uint16)
    path = _save(tmp_path, "g16.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    np.testing.assert_array_equal(out[:, :, 0], [[255, 100], [0, 1]])
    assert (out[:, :, 0] == out[:, :, 2]).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.array([[0, 77], [200, 255]], dtype=np.uint8)
    out = read_image(_save(tmp_path, "g.png", Image.fromarray(gray, mode="L")))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_palette_is_looked_up(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putdata([0, 1])
    out = read_image(_save(tmp_path, "p.png", image))
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [200, 100, 50]])


def test_rgba_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.array([[[100, 150, 200, 0], [10, 20, 30, 128]]], dtype=np.uint8)
    out = read_image(_save(tmp_path, "a.png", Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_cmyk_converts_to_rgb(tmp_path):
    # Pure cyan ink (C=255) is RGB (0, 255, 255); no ink is white.
    cmyk = np.array([[[255, 0, 0, 0], [0, 0, 0, 0]]], dtype=np.uint8)
    out = read_image(_save(tmp_path, "c.tif", Image.fromarray(cmyk, mode="CMYK")))
    np.testing.assert_array_equal(out[0], [[0, 255, 255], [255, 255, 255]])


def test_exif_orientation_is_applied(tmp_path):
    # Stored 3 wide x 2 high with a red top-left pixel; orientation 6 means "rotate 90 degrees clockwise to view".
    stored = np.zeros((2, 3, 3), dtype=np.uint8)
    stored[0, 0] = [255, 0, 0]
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = _save(tmp_path, "rot.png", image, exif=exif)
    out = read_image(path)
    assert out.shape == (3, 2, 3)
    # Clockwise rotation moves the top-left pixel to the top-right.
    np.testing.assert_array_equal(out[0, 1], [255, 0, 0])
    assert out[:, :, 0].sum() == 255
    assert image_size(path) == (3, 2)


def test_expected_size_mismatch_names_the_file(tmp_path):
    path = _save(tmp_path, "s.png", Image.new("RGB", (5, 4)))
    assert read_image(path, expected_size=(4, 5)).shape == (4, 5, 3)
    with pytest.raises(DataError, match="s.png.*4x5.*5x4"):
        read_image(path, expected_size=(5, 4))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jpg.*not found"):
        read_image(tmp_path / "nope.jpg")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg.*0 bytes"):
        read_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not pixels")
    with pytest.raises(DataError, match="notes.png"):
        read_image(path)


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path, "full.jpg", Image.fromarray(noise), quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(cut)


def test_decompression_bomb_limit_is_respected_not_disabled(tmp_path, monkeypatch):
    path = _save(tmp_path, "big.png", Image.new("RGB", (40, 40)))
    # 1600 pixels is over twice a limit of 100: Pillow refuses it, and so must we, naming the file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="big.png.*MAX_IMAGE_PIXELS"):
        read_image(path)
    assert Image.MAX_IMAGE_PIXELS == 100  # our code did not switch the global limit off


def test_max_pixels(tmp_path):
    path = _save(tmp_path, "m.png", Image.new("RGB", (10, 10)))
    assert read_image(path, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(DataError, match="m.png.*max_pixels=99"):
        read_image(path, max_pixels=99)


def test_to_rgb_array_forms():
    gray = np.array([[0, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_array(gray), [[[0, 0, 0], [9, 9, 9]]])
    np.testing.assert_array_equal(to_rgb_array(gray[:, :, None]), to_rgb_array(gray))
    rgba = np.array([[[1, 2, 3, 4]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_array(rgba), [[[1, 2, 3]]])
    np.testing.assert_array_equal(to_rgb_array(np.array([[65535, 25700]], dtype=np.uint16))[0, :, 0], [255, 100])
    np.testing.assert_array_equal(to_rgb_array(np.array([[0.0, 1.0]]))[0, :, 1], [0, 255])
    with pytest.raises(ValueError, match="shape"):
        to_rgb_array(np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        to_rgb_array(np.zeros((2, 2), dtype=np.int32))
