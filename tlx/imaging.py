"""The one preprocessing function shared by training, calibration and the device.

Decode, apply EXIF orientation, convert to 8-bit RGB, resize. The trainer's data
pipeline, the exporter's calibration data and tlx.runtime all call
`load_image`, so the model sees identical pixels in training and on the device.
Only numpy and pillow: this module runs on a Raspberry Pi.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

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

#: Bump whenever `load_image` would return different pixels for the same file (another
#: resampling, colour handling, orientation rule...): decoded-pixel caches keyed by it
#: (tlx.trainer.pixel_cache) are then rebuilt instead of trusted.
PREPROCESSING_VERSION = 1

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


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


def load_image(source: ImageInput, size: int | tuple[int, int] | None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image and return uint8 RGB pixels of shape (height, width, 3).

    `source` is a path, encoded bytes, a PIL image or an HxW / HxWxC array.
    `size` is the target (height, width) or one int for a square; None keeps the size.
    Raises ImageError with a readable reason for anything that is not a usable image.
    """
    name = source if isinstance(source, (str, os.PathLike)) else "<image>"
    image = _open(source, name)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(name, f"{width}x{height} pixels is over the limit of {max_pixels:,} "
                               "(a possible decompression bomb); resize it first")
    try:
        image = ImageOps.exif_transpose(image)
        rgb = to_rgb(image)
        if size is not None:
            height, width = image_size_tuple(size)
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), RESAMPLE)
        pixels = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(name, f"cannot decode image ({exc})") from None
    return pixels


def _open(source: ImageInput, name) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
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


def _from_array(array: np.ndarray, name) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(name, f"array of shape {array.shape} is not an HxW, HxWx3 or HxWx4 image")
    if array.dtype != np.uint8:
        raise ImageError(name, f"array dtype {array.dtype} is not uint8 (pixels 0..255)")
    return Image.fromarray(array)


@dataclass(frozen=True)
class LabelledImages:
    """A split's images through `load_image`: the readable ones, in order, and the rest."""

    paths: tuple[str, ...]
    #: uint8 (n, height, width, 3).
    pixels: np.ndarray
    #: Class index per image.
    labels: np.ndarray
    #: (path, reason) for files that could not be read; they are left out above.
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.paths)


def load_labelled(items, size: int | tuple[int, int],
                  advance: Callable[[int], None] | None = None, *,
                  workers: int | None = None, cache_dir=None) -> LabelledImages:
    """(path, label) pairs -> LabelledImages; an unreadable file is skipped, not fatal.
    `advance(n)` as files are decoded drives a progress bar.

    Decoded in parallel, once, into the on-disk pixel cache (tlx.trainer.pixel_cache):
    `pixels` is memory-mapped from it, so a large split is not held in memory and the
    next export or bench of the same files reads it back instead of decoding."""
    from contextlib import contextmanager

    from tlx.trainer.pixel_cache import prepare

    items = [(str(path), int(label)) for path, label in items]

    @contextmanager
    def progress(_label, _total):
        yield advance or (lambda _n: None)

    cache = prepare([path for path, _ in items], size, workers=workers, cache_dir=cache_dir,
                    progress=progress)
    if advance is not None and len(items) > cache.decoded:
        advance(len(items) - cache.decoded)  # the ones read back from the cache
    kept = [(path, label) for path, label in items if path in cache.rows]
    rows = cache.rows_of([path for path, _ in kept])
    # The entry is keyed by this very list, so rows are usually 0..n-1 in order: then the
    # memory map itself is the array (no copy).
    in_order = len(rows) == len(cache.pixels) and np.array_equal(rows, np.arange(len(rows)))
    pixels = cache.pixels if in_order else np.asarray(cache.pixels[rows])
    return LabelledImages(tuple(path for path, _ in kept), pixels,
                          np.asarray([label for _, label in kept], dtype=np.int64), cache.skipped)


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
