"""The shared preprocessing function: every image mode becomes 8-bit RGB; bad files get a reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlx.errors import ImageError
from tlx.imaging import load_image


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "RGB", "1"])
def test_every_mode_becomes_uint8_rgb(tmp_path, mode):
    image = Image.new("RGB", (30, 20), (200, 100, 50)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    path = _save(tmp_path, f"img.{fmt.lower()}", image, format=fmt)
    pixels = load_image(path, 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)
    path = _save(tmp_path, "deep.png", Image.fromarray(ramp))
    pixels = load_image(path, None)
    assert pixels.shape == (8, 8, 3)
    # Clipping would make almost everything 255; scaling keeps the ramp.
    assert pixels[0, 0, 0] == 0 and 240 <= pixels[-1, -1, 0] <= 255 and 100 < pixels[4, 0, 0] < 160


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    path = _save(tmp_path, "cutout.png", Image.fromarray(rgba, "RGBA"))
    assert (load_image(path, None) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(tmp_path, "rotated.jpg", image, exif=exif.tobytes(), quality=95)
    pixels = load_image(path, None)
    assert pixels.shape == (40, 20, 3)  # portrait after orientation
    assert pixels[:15].mean() > 200 and pixels[25:].mean() < 50  # white half now on top


def test_resize_to_height_width(tmp_path):
    path = _save(tmp_path, "a.png", Image.new("RGB", (50, 30)))
    assert load_image(path, (24, 40)).shape == (24, 40, 3)


def test_same_pixels_from_path_bytes_and_pil(tmp_path):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    path = _save(tmp_path, "noise.jpg", image, quality=90)
    from_path = load_image(path, 20)
    assert np.array_equal(from_path, load_image(path.read_bytes(), 20))
    assert np.array_equal(from_path, load_image(Image.open(path), 20))


@pytest.mark.parametrize("content, reason", [
    (b"", "not an image"),
    (b"hello, I am text", "not an image"),
])
def test_non_images_get_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        load_image(path, 16)


def test_truncated_image_gets_a_reason(tmp_path):
    path = _save(tmp_path, "whole.jpg", Image.new("RGB", (200, 200), (10, 200, 30)), quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(truncated, 16)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png", 16)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path, "big.png", Image.new("L", (400, 300)))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, 16, max_pixels=100_000)
