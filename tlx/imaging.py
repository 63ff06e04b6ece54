"""The one preprocessing function shared by training, calibration and the device.

Decode, apply EXIF orientation, convert to 8-bit RGB, resize. The trainer's data
pipeline, the exporter's calibration data, tlx bench and tlx.runtime all call
`load_image`, so the model sees identical pixels in training and on the device (from
version 3 on also when the device's Pillow is another release than the host's: the resize's
passes run in tlx's order, not the release's). Only numpy and pillow: this module runs on a
Raspberry Pi.

The pixels are versioned (PREPROCESSING_VERSIONS). A run stores the version it was trained
with (config.json) and the exporter writes it into the model's tlx.json; every later reader
(calibration, bench, the runtime) passes that version back, so an old model is preprocessed
the way it was trained. Models and runs without the field are version 1.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlx.errors import ImageError, TlxError

#: File suffixes treated as images when scanning folders (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Images with more pixels than this are refused (decompression bombs). Pillow's own
#: warning threshold; a 12 MP phone photo is far below it.
DEFAULT_MAX_PIXELS = 89_478_485

#: Resampling used everywhere. Bilinear, like Keras' image_dataset_from_directory;
#: what matters is that train and device use the same.
RESAMPLE = Image.Resampling.BILINEAR

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

#: What each preprocessing version does to an image larger than the model's input. Add a
#: version (never change one) whenever `load_image` would return different pixels for the same
#: file: runs, models and the decoded-pixel caches (tlx.pixels.cache) are keyed by it.
PREPROCESSING_VERSIONS = {
    1: "exact: full decode, one bilinear (antialiased) resize from the full size",
    2: "reduced: JPEG files decoded at 1/2, 1/4 or 1/8 scale (never below the input size), "
       "then large images box-averaged (Image.reduce) and arrays subsampled by whole pixels, "
       "both only down to twice the input size (REDUCE_GAP); then the same bilinear resize",
    3: "as version 2, with the bilinear resize's two passes in one order on every Pillow "
       "(horizontal, then vertical: Pillow 13 runs some shapes the other way round), so a host and "
       "a Pi with another Pillow see the same pixels; arrays (camera and video frames) subsampled as "
       "in version 2, then box-averaged by whole factors down to the input size (reducing_gap "
       "ARRAY_REDUCE_GAP) before that resize",
}
#: The version new runs are trained with.
PREPROCESSING_VERSION = 3
#: Version 2 reduces an image only while it stays at least this many times the model's input
#: in each direction (Pillow's `reducing_gap`): the final bilinear resize still averages over
#: 2+ source pixels per output pixel (what keeps it close to version 1), and its cost stops
#: growing with the camera's resolution.
REDUCE_GAP = 2.0
#: Version 3's final resize of a subsampled array: Pillow box-averages it by whole factors
#: (Image.reduce, one cheap pass) while it stays at least this many times the input, so the
#: bilinear pass that follows has 2-3 taps instead of 4-5. It costs about a third of version
#: 2's resize (benchmarks/results/preprocess_speed.md), the difference between tlx and a
#: raw invoke on a camera frame; the accuracy record is in the same file.
ARRAY_REDUCE_GAP = 1.0


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_size_tuple(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


def check_image_size(found, expected, found_in: str, expected_in: str, fix: str,
                     error: type[Exception] | None = None) -> None:
    """The one check that a model takes the image size the run decoded its images at.

    The run's size is split.json's (what train decoded, what export calibrates and tests on,
    what bench and bundles decode); a model.keras or .tflite of another size is from another
    run. Raises `error` (TlxError by default) naming both places and `fix`."""
    found, expected = image_size_tuple(found), image_size_tuple(expected)
    if found != expected:
        raise (error or TlxError)(
            f"{found_in} takes {found[0]}x{found[1]} pixels but {expected_in} says "
            f"{expected[0]}x{expected[1]}: they are from different runs. {fix}")


#: The version of anything written before versions were recorded (a run's config.json, a
#: model's tlx.json, a bundle's manifest): those decoded with the exact path.
UNRECORDED_VERSION = 1


def check_version(version: int, where: str = "", fix: str = "Upgrade tlx on this machine.") -> int:
    """`version` if tlx knows it; a TlxError naming the known ones and `fix` otherwise (by
    default for a run or model from a newer tlx)."""
    if version not in PREPROCESSING_VERSIONS:
        known = ", ".join(f"{v} ({text.split(':')[0]})" for v, text in PREPROCESSING_VERSIONS.items())
        raise TlxError(f"{where or 'The model'} asks for preprocessing version {version}, which this tlx "
                       f"does not know (known: {known}). {fix}")
    return version


def version_of(record: dict | None) -> int:
    """The preprocessing version of a run's options or a model's tlx.json (1 when absent:
    written before versions existed, so with the exact path)."""
    if not record:
        return UNRECORDED_VERSION
    value = record.get("preprocessing", UNRECORDED_VERSION)
    if isinstance(value, dict):  # tlx.json: {"preprocessing": {"version": 2, ...}}
        value = value.get("version", UNRECORDED_VERSION)
    return int(value)


def load_image(source: ImageInput, size: int | tuple[int, int] | None,
               max_pixels: int = DEFAULT_MAX_PIXELS,
               version: int = PREPROCESSING_VERSION) -> np.ndarray:
    """Read an image and return uint8 RGB pixels of shape (height, width, 3).

    `source` is a path, encoded bytes, a PIL image or an HxW / HxWxC uint8 array.
    `size` is the target (height, width) or one int for a square; None keeps the size.
    `version` is the preprocessing version (PREPROCESSING_VERSIONS): pass the one the model
    was trained with. Version 2 reduces a large image first: in the JPEG decoder for paths and
    bytes (not for a PIL image you opened: it is not changed behind your back), then by box
    averaging; an array (a camera frame) is subsampled instead (only the kept pixels are
    read and copied), because copying a whole frame into Pillow would cost about as much
    as the model.
    Raises ImageError with a readable reason for anything that is not a usable image.
    """
    name = source if isinstance(source, (str, os.PathLike)) else "<image>"
    target = image_size_tuple(size) if size is not None else None
    reduced = check_version(version) >= 2 and target is not None
    if isinstance(source, np.ndarray):
        array = _check_array(source, name)
        _check_pixels(array.shape[1], array.shape[0], max_pixels, name)
        image = _reduced_image(array, target) if reduced else _from_array(array)
    else:
        image = _open(source, name)
        _check_pixels(image.width, image.height, max_pixels, name)
    try:
        if reduced and not isinstance(source, Image.Image):
            _draft_jpeg(image, target)
        if isinstance(source, Image.Image):
            image = ImageOps.exif_transpose(image)  # a copy: the caller's image stays as it is
        elif not isinstance(source, np.ndarray):  # arrays carry no EXIF
            # In place: exif_transpose otherwise copies the whole decoded image even when
            # there is nothing to rotate.
            ImageOps.exif_transpose(image, in_place=True)
        rgb = to_rgb(image)
        if target is not None:
            height, width = target
            if rgb.size != (width, height):
                rgb = _resize(rgb, (width, height), version, _reducing_gap(version, source, reduced))
        pixels = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(name, f"cannot decode image ({exc})") from None
    return pixels


def _reducing_gap(version: int, source: ImageInput, reduced: bool) -> float | None:
    """Pillow's reducing_gap for the final resize: none in version 1, REDUCE_GAP in version
    2, and for arrays ARRAY_REDUCE_GAP from version 3 on."""
    if not reduced:
        return None
    return ARRAY_REDUCE_GAP if version >= 3 and isinstance(source, np.ndarray) else REDUCE_GAP


def _resize(image: Image.Image, size: tuple[int, int], version: int, gap: float | None) -> Image.Image:
    """The final resize to `size` (width, height) as `version` does it."""
    if version >= 3:
        return _resize_in_order(image, size, gap)
    return image.resize(size, RESAMPLE, reducing_gap=gap)


def _resize_in_order(image: Image.Image, size: tuple[int, int], gap: float | None) -> Image.Image:
    """Pillow's `image.resize(size, RESAMPLE, reducing_gap=gap)` with its two passes always in
    the order Pillow 12 and earlier run them: horizontal, then vertical. Pillow 13 runs the
    vertical pass first when the height shrinks much more than the width
    (python-pillow/Pillow#9549); each pass rounds to 8 bits, so the order changes about one
    value in ten by 1 on such images (Raspberry Pi OS Trixie ships Pillow 11.1: a model
    trained on Pillow 13 would see other pixels on the Pi). Called pass by pass (a resize in
    one direction is one pass), the order is tlx's on every Pillow. The reduction first is
    Pillow's own: Image.reduce by the whole factors that keep `gap` x the size, then the
    resize from the reduced image's box that covers the same area."""
    box = (0.0, 0.0, float(image.width), float(image.height))
    if gap is not None:
        fx, fy = int(image.width / size[0] / gap) or 1, int(image.height / size[1] / gap) or 1
        if fx > 1 or fy > 1:
            image, box = image.reduce((fx, fy)), (0.0, 0.0, image.width / fx, image.height / fy)
    across = image.resize((size[0], image.height), RESAMPLE, box=(box[0], 0, box[2], image.height))
    return across.resize(size, RESAMPLE, box=(0, box[1], size[0], box[3]))


def _check_pixels(width: int, height: int, max_pixels: int, name) -> None:
    if width * height > max_pixels:
        raise ImageError(name, f"{width}x{height} pixels is over the limit of {max_pixels:,} "
                               "(a possible decompression bomb); resize it first")


def _subsample_steps(shape: tuple[int, ...], target: tuple[int, int]) -> tuple[int, int]:
    """(fy, fx): the largest whole steps that keep at least REDUCE_GAP x the target in each
    direction (Pillow's reducing_gap rule)."""
    return (max(1, int(shape[0] / target[0] / REDUCE_GAP)), max(1, int(shape[1] / target[1] / REDUCE_GAP)))


def _reduced_image(array: np.ndarray, target: tuple[int, int]) -> Image.Image:
    """Version 2's reduction of an array, as a Pillow image ready for the final resize: the
    centre pixel of each fy x fx cell (_subsample_array). An RGB frame with packed pixels
    (any camera's, a crop of one) goes through _gather_rgbx: one pass, one copy, of the kept
    pixels only, straight into the memory Pillow resizes from. Same pixels either way."""
    order = _packed_order(array)
    if order:  # also with nothing to leave out: a camera asked for 2x (448x320)
        return _gather_rgbx(array, *_subsample_steps(array.shape, target), order)
    return _from_array(_subsample_array(array, target))


def _packed_order(array: np.ndarray) -> str | None:
    """"RGB" for HxWx3 with each pixel's 3 bytes together and rows in order; "BGR" for the
    channel-reversed view of such memory (`bgr[..., ::-1]`: how tlx.runtime hands on OpenCV's
    frames, as RGB without a copy); None for anything else (a flip, a channel subset, RGBA)."""
    if not (array.ndim == 3 and array.shape[2] == 3 and array.strides[1] == 3
            and array.strides[0] >= 3 * array.shape[1]):
        return None
    return {1: "RGB", -1: "BGR"}.get(array.strides[2])


class _Words:
    """A uint32 view at arbitrary byte offsets and strides of `array`'s memory (numpy's
    `as_strided` cannot change the item size). Holds `array`, so the memory stays alive."""

    def __init__(self, array: np.ndarray, offset: int, shape: tuple[int, int], strides: tuple[int, int]):
        self._array = array
        # Native byte order: words are copied as they are, never swapped.
        self.__array_interface__ = {"version": 3, "typestr": np.dtype(np.uint32).str, "shape": shape,
                                    "strides": strides,
                                    "data": (array.__array_interface__["data"][0] + offset, True)}


def _gather_rgbx(array: np.ndarray, fy: int, fx: int, order: str = "RGB") -> Image.Image:
    """The kept pixels of a packed RGB frame, or of a BGR frame's reversed view (`order`), as
    a Pillow RGB image, in one copy of the kept pixels only.

    Pillow keeps an RGB image as 4 bytes per pixel (R, G, B, padding). Each kept pixel is
    read as one 4-byte word starting at its first byte in memory: its 3 bytes and the next
    byte, which lands in the padding. Copying 4-byte items is what numpy's strided copy does
    fastest (3-byte items: about 4x slower here, byte by byte: 8x). RGB words are handed to
    Pillow as they are (Image.frombuffer's own no-copy route, asked for mode RGB); BGR words
    go through Pillow's BGRX unpacker, a copy of the small image (so the reader of a video
    never converts whole frames: less work and memory traffic beside the model). The
    one word that could reach past the frame's last byte, the frame's last pixel, is copied
    by bytes."""
    height, width = array.shape[0] // fy, array.shape[1] // fx
    row_step, top, left = array.strides[0], fy // 2, fx // 2
    last_row, last_col = top + (height - 1) * fy, left + (width - 1) * fx
    # Every word ends inside the frame unless it starts at the frame's very last pixel.
    full_rows = height - 1 if (last_row, last_col) == (array.shape[0] - 1, array.shape[1] - 1) else height
    out = np.empty((height, width, 4), np.uint8)
    # A reversed view's [0, 0, 0] (R) is the third byte of the pixel in memory (B, G, R).
    start = top * row_step + left * 3 - (2 if order == "BGR" else 0)
    words = np.asarray(_Words(array, start, (full_rows, width), (fy * row_step, fx * 3)))
    np.copyto(out.view(np.uint32).reshape(height, width)[:full_rows], words)
    if full_rows < height:
        last = array[last_row, left::fx][:width]
        out[-1, :, :3] = last if order == "RGB" else last[:, ::-1]
    if order == "BGR":
        return Image.frombuffer("RGB", (width, height), out, "raw", "BGRX", 0, 1)
    return _map_rgb(out)


def _map_rgb(rgbx: np.ndarray) -> Image.Image:
    """An RGB image over an HxWx4 uint8 buffer without copying it (the 4th byte is Pillow's
    padding). Image.frombuffer maps RGBX but not RGB; this is its mapping call with mode RGB.
    Should a Pillow refuse, the copying route gives the same pixels."""
    size = (rgbx.shape[1], rgbx.shape[0])
    try:
        image = Image.Image()._new(Image.core.map_buffer(rgbx, size, "raw", 0, ("RGB", 0, 1)))
        if image.mode == "RGB" and image.size == size:
            image.readonly = 1
            return image
    except Exception:  # a Pillow without this route: copy instead
        pass
    return Image.frombytes("RGB", size, rgbx, "raw", "RGBX")  # Pillow's decoder drops the 4th byte


def _subsample_array(array: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """The centre pixel of each k x k cell, k the largest whole step that keeps at least
    REDUCE_GAP x the target (Pillow's reducing_gap rule). The rows and columns left out are
    never read: the one copy Pillow needs is of the kept pixels only."""
    fy, fx = _subsample_steps(array.shape, target)
    if fx == 1 and fy == 1:
        return array
    height, width = array.shape[0] // fy, array.shape[1] // fx
    if array.ndim == 3 and array.strides[1] == array.shape[2] and array.strides[2] == 1:
        # Each pixel as one 3- or 4-byte item: numpy copies a strided view of those about
        # twice as fast as the same view byte by byte.
        pixels = array.view(np.dtype((np.void, array.shape[2])))[..., 0]
        kept = np.ascontiguousarray(pixels[fy // 2::fy, fx // 2::fx][:height, :width])
        return kept.view(np.uint8).reshape(height, width, array.shape[2])
    return array[fy // 2::fy, fx // 2::fx][:height, :width]


def _draft_jpeg(image: Image.Image, target: tuple[int, int]) -> None:
    """Let the JPEG decoder scale down by 1/2, 1/4 or 1/8, never below the target in either
    direction, whatever the EXIF rotation. DCT scaling averages each block (no aliasing), so
    it may go further than REDUCE_GAP; the decode gets that much cheaper (a 640x480 frame for
    a 160 px model: half the time of a full decode). No-op for other formats."""
    if image.format in ("JPEG", "MPO"):
        side = max(target)
        image.draft(None, (side, side))


def _open(source: ImageInput, name) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    try:
        with warnings.catch_warnings(), _pillow_limit_off():
            # Our own limit (max_pixels, checked on the header right after opening) decides;
            # Pillow's warning would only repeat it, and its error at twice its own figure
            # would overrule a larger --max-pixels and quote a number the user never gave.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, bytes):
                image = Image.open(io.BytesIO(source))
            else:
                if not os.path.isfile(source):
                    raise ImageError(name, "no such file")
                image = Image.open(source)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"refused as a possible decompression bomb ({exc})") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise ImageError(name, f"cannot read ({exc.strerror or exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's "truncated", "broken data"...
        raise ImageError(name, f"cannot decode image ({exc})") from None
    return image


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit_off():
    """Pillow's global decompression-bomb limit off while a file is opened (opening reads
    only the header); restored afterwards."""
    with _PILLOW_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_array(array: np.ndarray, name) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(name, f"array of shape {array.shape} is not an HxW, HxWx3 or HxWx4 image")
    if array.dtype != np.uint8:
        raise ImageError(name, f"array dtype {array.dtype} is not uint8 (pixels 0..255)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(name, f"array of shape {array.shape} has no pixels")
    return array


def _from_array(array: np.ndarray) -> Image.Image:
    # Pillow reads a C-contiguous array in one pass; a strided view (a crop) goes through
    # numpy's tobytes first. Either way one copy: in version 2, of the kept pixels only.
    # The reversed view of a whole BGR frame: Pillow's BGR unpacker reads the memory as it is
    # (numpy's tobytes of the view copies byte by byte, 50x slower).
    if _packed_order(array) == "BGR" and array[..., ::-1].flags.c_contiguous:
        return Image.frombuffer("RGB", (array.shape[1], array.shape[0]), array[..., ::-1], "raw", "BGR", 0, 1)
    return Image.fromarray(array)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode: grayscale, palette, alpha, CMYK, 16-bit, float."""
    mode = image.mode
    if mode == "RGB":
        image.load()
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_deep_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "P":
        return image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels carry undefined colour (often black): composite them on
        # white so cut-out photos look like a photo on a plain background.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _deep_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit or 32-bit single-channel data to 0..255."""
    values = values.astype(np.float64)
    if values.size and values.max() > 255:
        top = 65535.0 if values.max() <= 65535 else float(values.max())
        values = values * (255.0 / top)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
