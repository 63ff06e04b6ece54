"""The shared preprocessing function: every image mode becomes 8-bit RGB; bad files get a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from tlx import imaging
from tlx.errors import ImageError, TlxError
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


@pytest.mark.parametrize("version", [1, 2])
def test_same_pixels_from_path_bytes_and_pil(tmp_path, version):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    path = _save(tmp_path, "noise.jpg", image, quality=90)
    from_path = load_image(path, 20, version=version)
    assert np.array_equal(from_path, load_image(path.read_bytes(), 20, version=version))
    assert np.array_equal(from_path, load_image(Image.open(path), 20, version=version))


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


# --- preprocessing versions ---------------------------------------------------------------

def _smooth_photo(width, height, seed=0) -> np.ndarray:
    """Photo-like pixels: smooth at the scale of a few pixels (random noise is not a photo:
    any reduction changes it completely)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))


def _version1_by_hand(source, size):
    """Version 1 as it was written before versions existed: full decode, EXIF, RGB, one resize."""
    image = Image.open(source) if not isinstance(source, np.ndarray) else Image.fromarray(source)
    image = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def test_version_1_is_the_exact_path_of_old_models(tmp_path):
    photo = _smooth_photo(640, 480)
    path = _save(tmp_path, "photo.jpg", Image.fromarray(photo), quality=90)
    for source in (path, photo):
        assert np.array_equal(load_image(source, (40, 30), version=1), _version1_by_hand(source, (40, 30)))


def _centre_subsample_by_hand(array, size):
    fy, fx = (max(1, int(array.shape[a] / size[a] / 2.0)) for a in (0, 1))
    kept = array[fy // 2::fy, fx // 2::fx][:array.shape[0] // fy, :array.shape[1] // fx]
    return np.asarray(imaging.to_rgb(Image.fromarray(np.ascontiguousarray(kept)))
                      .resize((size[1], size[0]), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (720, 1280, 3), (481, 641, 4), (333, 777), (50, 60, 3)])
@pytest.mark.parametrize("size", [(16, 16), (24, 40)])
def test_version_2_array_is_the_centre_pixel_of_each_cell(shape, size):
    rng = np.random.default_rng(sum(shape))
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(load_image(array, size, version=2), _centre_subsample_by_hand(array, size))


def test_version_2_strided_arrays_bgr_and_crops():
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    for view in (frame[..., ::-1], frame[100:600, 200:1100], frame[::-1]):  # BGR->RGB, a crop, flipped
        assert np.array_equal(load_image(view, 20, version=2), _centre_subsample_by_hand(view, (20, 20)))


def test_version_2_array_close_to_the_same_pixels_from_a_file(tmp_path):
    """A frame and the same pixels saved losslessly differ only by subsampling against box
    averaging before the same final resize."""
    frame = _smooth_photo(1280, 720, seed=11)
    path = _save(tmp_path, "frame.png", Image.fromarray(frame))
    diff = np.abs(load_image(frame, 160, version=2).astype(int) - load_image(path, 160, version=2))
    assert 0 < diff.mean() < 1.0 and diff.max() <= 8


def test_version_2_from_path_and_bytes_identical_with_decoder_reduction(tmp_path):
    photo = _smooth_photo(1280, 960, seed=3)
    path = _save(tmp_path, "big.jpg", Image.fromarray(photo), quality=90)
    from_path = load_image(path, 32, version=2)
    assert np.array_equal(from_path, load_image(path.read_bytes(), 32, version=2))
    # The decoder reduced (1280x960 -> 160x120 at 1/8 scale for a 32 px model): not
    # version 1's pixels, but close to them on a photo-like image.
    exact = load_image(path, 32, version=1).astype(int)
    diff = np.abs(from_path.astype(int) - exact)
    assert 0 < diff.mean() < 1.0 and diff.max() <= 4


@pytest.mark.parametrize("frame, target, decoded", [
    ((640, 480), 160, (320, 240)), ((1920, 1080), 160, (480, 270)), ((1920, 1080), 224, (480, 270)), ((1920, 1080), 300, (960, 540)),
    ((300, 200), 160, (300, 200)),
])
def test_version_2_jpeg_decoder_scale_never_below_the_input(tmp_path, frame, target, decoded):
    path = _save(tmp_path, "frame.jpg", Image.new("RGB", frame, (90, 120, 30)), quality=90)
    image = Image.open(path)
    imaging._draft_jpeg(image, (target, target))
    assert image.size == decoded


def test_version_2_close_to_version_1_on_camera_frames():
    for width, height in ((640, 480), (1280, 720), (1920, 1080)):
        frame = _smooth_photo(width, height, seed=width)
        diff = np.abs(load_image(frame, 160, version=2).astype(int) - load_image(frame, 160, version=1))
        assert diff.mean() < 1.5 and diff.max() <= 24, (width, height, diff.mean(), diff.max())


def test_version_2_changes_nothing_for_images_under_twice_the_input():
    photo = _smooth_photo(300, 200)
    assert np.array_equal(load_image(photo, 160, version=2), load_image(photo, 160, version=1))
    assert np.array_equal(load_image(photo, None, version=2), photo)


def test_version_2_reads_only_the_kept_pixels_of_a_frame():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[1::3, 3::6] = 200  # the centre pixel of each 3x6 cell (gap 2 for 160 px)
    assert imaging._subsample_array(frame, (160, 160)).shape == (360, 320, 3)
    assert (load_image(frame, 160, version=2) == 200).all()


# --- version 3: arrays box-averaged before the final resize; everything else as version 2 ----

def _in_order_by_hand(image, size, box):
    """Bilinear from `box` of `image` to `size` (height, width): across, then down."""
    across = image.resize((size[1], image.height), Image.Resampling.BILINEAR, box=(box[0], 0, box[2], image.height))
    return np.asarray(across.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=(0, box[1], size[1], box[3])))


def _version3_array_by_hand(array, size):
    """Version 2's kept pixels, then Image.reduce by the whole factors that keep at least the
    input size, then bilinear from the reduced image (the same geometry: its box in the
    reduced image's coordinates), across and then down."""
    fy, fx = (max(1, int(array.shape[a] / size[a] / 2.0)) for a in (0, 1))
    kept = array[fy // 2::fy, fx // 2::fx][:array.shape[0] // fy, :array.shape[1] // fx]
    image = imaging.to_rgb(Image.fromarray(np.ascontiguousarray(kept)))
    ry, rx = max(1, image.height // size[0]), max(1, image.width // size[1])
    reduced = image.reduce((rx, ry)) if (rx, ry) != (1, 1) else image
    return _in_order_by_hand(reduced, size, (0, 0, image.width / rx, image.height / ry))


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (720, 1280, 3), (480, 640, 3), (320, 448, 3),
                                   (481, 641, 4), (333, 777), (50, 60, 3), (1920, 1080, 3), (900, 300, 3)])
@pytest.mark.parametrize("size", [(16, 16), (24, 40), (160, 160)])
def test_version_3_array_is_version_2s_kept_pixels_box_averaged_then_bilinear(shape, size):
    array = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(load_image(array, size, version=3), _version3_array_by_hand(array, size))


def test_version_3_files_bytes_and_pil_images_are_version_2s_reduction_resized_in_order(tmp_path):
    """Files as version 2 reduces them (JPEG draft, Image.reduce), then the resize across and
    then down: version 2's pixels wherever Pillow runs its passes in that order itself."""
    for width, height in ((1280, 960), (199, 142), (142, 199), (300, 900)):
        photo = _smooth_photo(width, height, seed=width)
        for name, options in (("big.jpg", {"quality": 90}), ("big.png", {})):
            path = _save(tmp_path, name, Image.fromarray(photo), **options)
            image = Image.open(path)
            imaging._draft_jpeg(image, (160, 160))
            image = imaging.to_rgb(image)
            fx, fy = int(image.width / 160 / 2.0) or 1, int(image.height / 160 / 2.0) or 1
            box = (0, 0, image.width / fx, image.height / fy)
            expected = _in_order_by_hand(image.reduce((fx, fy)) if fx * fy > 1 else image, (160, 160), box)
            for source in (path, path.read_bytes()):
                assert np.array_equal(load_image(source, 160, version=3), expected), (width, height, name)
            if name.endswith(".png"):  # a PIL image is never drafted behind the caller's back
                assert np.array_equal(load_image(Image.open(path), 160, version=3), expected)
    wide = _smooth_photo(1280, 960, seed=5)  # shrinks most across: every Pillow goes across first
    assert np.array_equal(load_image(wide, 160, version=3), _version3_array_by_hand(wide, (160, 160)))


def _reordered_sources():
    """Images whose height shrinks much more than their width, the shapes Pillow 13 resizes
    down first and Pillow 12 and earlier across first, as PNG files and as arrays."""
    import io

    for seed, (width, height) in enumerate([(142, 199), (167, 200), (300, 900), (1080, 1920)]):
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        yield png.getvalue()
        yield pixels


def test_version_3_pixels_are_the_same_on_every_pillow():
    """The SHA-256 of version 3's pixels of these images, as Pillow 11.1 and numpy 2.2 (what
    Raspberry Pi OS Trixie ships) computed them, and as Pillow 13 computes them: one value.
    Version 2 differs on these shapes between the two (by 1 on about one value in six)."""
    import hashlib

    digest = hashlib.sha256()
    for source in _reordered_sources():
        digest.update(load_image(source, 160, version=3).tobytes())
    assert digest.hexdigest() == "f37c93d7a48917e15fd4db0bf8cfec45543a57ae9428f6345a0b7ad879b0ccda"


def test_version_3_changes_nothing_for_arrays_under_twice_the_input():
    photo = _smooth_photo(300, 200)
    assert np.array_equal(load_image(photo, 160, version=3), load_image(photo, 160, version=2))


def test_version_3_close_to_version_1_on_real_camera_frames():
    """Measured on these frames: mean 0.7-2.6 levels from the exact path, max 11-61 at sharp
    edges (version 2: mean 0-1.7, max 0-40): a 2x3 box where version 1 has a wider triangle.
    What that does to predictions: benchmarks/results/preprocess_speed.md."""
    for frame in _real_frames():
        diff = np.abs(load_image(frame, 160, version=3).astype(int) - load_image(frame, 160, version=1))
        assert diff.mean() < 3.0 and diff.max() <= 80, (frame.shape, diff.mean(), diff.max())


def test_new_runs_use_version_3():
    assert imaging.PREPROCESSING_VERSION == 3 and imaging.check_version(3) == 3


def test_version_2_keeps_exif_rotation_and_transparency(tmp_path):
    image = Image.new("RGB", (800, 400), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 400, 400))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "rotated.jpg", image, exif=exif.tobytes(), quality=95)
    pixels = load_image(path, (40, 20), version=2)
    assert pixels[:15].mean() > 200 and pixels[25:].mean() < 50
    rgba = np.zeros((900, 900, 4), np.uint8)
    assert (load_image(rgba, 16, version=2) == 255).all()


def test_unknown_version_is_a_clear_error():
    with pytest.raises(TlxError, match="preprocessing version 9.*known: 1 .*2 .*Upgrade tlx"):
        load_image(np.zeros((8, 8, 3), np.uint8), 4, version=9)


def test_version_of_runs_and_models():
    assert imaging.version_of(None) == 1 and imaging.version_of({"image_size": [8, 8]}) == 1
    assert imaging.version_of({"preprocessing": 2}) == 2  # a run's options
    assert imaging.version_of({"preprocessing": {"function": "x", "version": 2}}) == 2  # tlx.json
    assert imaging.version_of({"preprocessing": {"function": "x"}}) == 1  # tlx.json of older exports


# --- version 2 arrays: the one-pass gather gives the previous route's pixels ----------------

def _real_frames():
    """Real photos at camera sizes (scikit-image's bundled ones, scaled like a camera would)."""
    from skimage import data

    for photo in (data.chelsea(), data.coffee(), data.astronaut()):
        for width, height in ((640, 480), (1280, 720), (1920, 1080), (1080, 1920), (448, 320), (800, 600)):
            yield np.asarray(Image.fromarray(photo[..., :3]).resize((width, height), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("size", [160, 224, (96, 128), 32])
def test_version_2_real_frames_identical_to_the_two_copy_route(size):
    target = imaging.image_size_tuple(size)
    for frame in _real_frames():
        assert imaging._packed_order(frame) == "RGB"
        assert np.array_equal(load_image(frame, size, version=2), _centre_subsample_by_hand(frame, target)), \
            (frame.shape, size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(1, 700), width=st.integers(1, 900), pad_left=st.integers(0, 5),
       pad_right=st.integers(0, 5), top=st.integers(0, 3), target_h=st.integers(1, 200),
       target_w=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_version_2_gather_identical_on_random_frames_and_crops(height, width, pad_left, pad_right, top,
                                                              target_h, target_w, seed):
    """Any frame size, target and row padding (a crop of a larger frame, a camera's padded
    rows): the same pixels as the previous route (subsample copy, then Image.fromarray)."""
    rng = np.random.default_rng(seed)
    parent = rng.integers(0, 256, (height + top, width + pad_left + pad_right, 3), dtype=np.uint8)
    frame = parent[top:, pad_left:pad_left + width]
    target = (target_h, target_w)
    assert np.array_equal(load_image(frame, target, version=2), _centre_subsample_by_hand(frame, target))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(1, 500), width=st.integers(1, 700), pad_left=st.integers(0, 5),
       pad_right=st.integers(0, 5), top=st.integers(0, 3), target_h=st.integers(1, 200),
       target_w=st.integers(1, 200), version=st.sampled_from(sorted(imaging.PREPROCESSING_VERSIONS)),
       seed=st.integers(0, 2**32 - 1))
def test_a_bgr_frames_reversed_view_gives_the_pixels_of_its_rgb_copy(height, width, pad_left, pad_right, top,
                                                                   target_h, target_w, version, seed):
    """tlx.runtime hands OpenCV's BGR frames on as `bgr[..., ::-1]` (no whole-frame
    conversion): every version reads the same pixels from that view as from a packed copy,
    whole frames and crops of them, any size and target."""
    rng = np.random.default_rng(seed)
    parent = rng.integers(0, 256, (height + top, width + pad_left + pad_right, 3), dtype=np.uint8)
    for bgr in (parent, parent[top:, pad_left:pad_left + width]):
        view = bgr[..., ::-1]
        assert imaging._packed_order(view) == "BGR"
        target = (target_h, target_w)
        assert np.array_equal(load_image(view, target, version=version),
                              load_image(np.ascontiguousarray(view), target, version=version))


def test_version_2_gather_falls_back_to_copying_with_the_same_pixels(monkeypatch):
    frame = next(_real_frames())
    expected = load_image(frame, 160, version=2)

    def no_mapping(*args):
        raise ValueError("not in this Pillow")

    monkeypatch.setattr(Image.core, "map_buffer", no_mapping)
    assert np.array_equal(load_image(frame, 160, version=2), expected)


_GUARD_CHILD = r"""
import ctypes, mmap, sys
import numpy as np
from tlx.imaging import load_image

height, width, target, control, bgr = (int(v) for v in sys.argv[1:6])
page = mmap.PAGESIZE
size = height * width * 3
pages = -(-size // page) + 1
region = mmap.mmap(-1, pages * page)
address = ctypes.addressof(ctypes.c_char.from_buffer(region))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
assert libc.mprotect(address + (pages - 1) * page, page, 0) == 0  # PROT_NONE: any read faults
# The frame's last byte is the last byte before the guard page.
frame = np.frombuffer(region, np.uint8, count=size, offset=(pages - 1) * page - size).reshape(height, width, 3)
frame[:] = np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8)
if control:
    ctypes.string_at(address + (pages - 1) * page, 1)  # one byte past the frame
view = frame[..., ::-1] if bgr else frame  # an OpenCV frame handed on as RGB
pixels = [load_image(view, target, version=version) for version in (2, 3)]
print("ok", sum(int(p.sum()) for p in pixels))
"""


@pytest.mark.parametrize("bgr", [0, 1])
@pytest.mark.parametrize("height, width, target", [(480, 640, 160), (64, 64, 16), (720, 1280, 160), (3, 5, 1)])
def test_version_2_gather_never_reads_past_the_frame(height, width, target, bgr):
    """The frame ends right before a page no process may read: reading one byte past it kills
    the child (the control run shows the guard works), the reduction does not."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    args = [sys.executable, "-c", _GUARD_CHILD, str(height), str(width), str(target)]
    control = subprocess.run(args + ["1", str(bgr)], capture_output=True, text=True, env=env)
    assert control.returncode < 0, control.stderr  # killed by SIGSEGV
    run = subprocess.run(args + ["0", str(bgr)], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (0, 0), (0, 7, 4)])
def test_an_array_without_pixels_is_an_image_error(shape):
    for version in (1, 2):
        with pytest.raises(ImageError, match="has no pixels"):
            load_image(np.zeros(shape, np.uint8), 16, version=version)
