"""Calibration images for full-integer int8: a class-balanced, deterministic sample of the
TRAINING split, read through tlx.imaging.load_image (the preprocessing of training and of
the device), as float32 raw pixels 0..255.

Never the test split: parity is measured there, and calibrating on it would flatter the
int8 numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tlx.errors import ImageError, TlxError
from tlx.imaging import PREPROCESSING_VERSION, load_image
from tlx.progress import Advance


@dataclass(frozen=True)
class CalibrationSet:
    """The images the converter sees, and what was left out."""

    #: uint8 pixels, shape (n, height, width, 3). uint8 keeps 300 images at 160 px in 23 MB.
    pixels: np.ndarray
    #: (path, label index) of each image, in order.
    items: tuple[tuple[str, int], ...]
    #: (path, reason) of images that could not be read.
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def representative_dataset(self) -> Callable[[], Iterator[list[np.ndarray]]]:
        return representative(self.pixels)


def representative(pixels: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's callable over uint8 pixels (n, h, w, 3): yields [float32 batch of one
    image] (the graph input is float32 raw pixels: the data's dtype must match it)."""

    def generate() -> Iterator[list[np.ndarray]]:
        for image in pixels:
            yield [image[np.newaxis].astype(np.float32)]

    return generate


def select(train: Sequence[tuple[str, int]], count: int, seed: int = 0) -> list[tuple[str, int]]:
    """Up to `count` items, round-robin over classes so each class is equally represented
    (a class with fewer images gives all it has). Same inputs and seed -> same list."""
    if count < 1:
        raise TlxError(f"--calibration-samples must be at least 1 (got {count}).")
    by_class: dict[int, list[tuple[str, int]]] = {}
    for path, label in sorted(train):
        by_class.setdefault(int(label), []).append((str(path), int(label)))
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_class):
        items = by_class[label]
        rng.shuffle(items)
        queues.append(items)
    chosen: list[tuple[str, int]] = []
    depth = 0
    while len(chosen) < count and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < count:
                chosen.append(queue[depth])
        depth += 1
    return chosen


def load(items: Sequence[tuple[str, int]], image_size: tuple[int, int],
         advance: Advance | None = None, preprocessing: int = PREPROCESSING_VERSION) -> CalibrationSet:
    """Read the images at the model's input size with the run's preprocessing version;
    unreadable ones are skipped and reported."""
    height, width = image_size
    arrays, kept, skipped = [], [], []
    for path, label in items:
        try:
            pixels = load_image(path, (height, width), version=preprocessing)
        except ImageError as exc:
            skipped.append((path, exc.reason))
        else:
            arrays.append(pixels)
            kept.append((path, label))
        if advance is not None:
            advance(1)
    if not arrays:
        reason = f" ({len(skipped)} unreadable, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise TlxError(f"The calibration set is empty{reason}: int8 export needs training images. "
                       "Check split.json's train list, or export float formats only "
                       "(--format float32).")
    return from_arrays(np.stack(arrays), kept, skipped, image_size)


def from_arrays(pixels: np.ndarray, items, skipped, image_size: tuple[int, int]) -> CalibrationSet:
    """Check the pixels fit the model input and cover the full 0..255 range."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 0 or pixels.shape[0] == 0:
        raise TlxError("The calibration set is empty: int8 export needs training images.")
    expected = (int(image_size[0]), int(image_size[1]), 3)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
        raise TlxError(f"Calibration images have shape {tuple(pixels.shape[1:])}, but the model "
                       f"input is {expected} (height, width, RGB). Calibration images must go through "
                       "the same preprocessing (tlx.imaging.load_image at the model's size).")
    if pixels.dtype != np.uint8:
        raise TlxError(f"Calibration pixels must be uint8 0..255 (got {pixels.dtype}).")
    return CalibrationSet(pixels=cover_full_range(pixels), items=tuple(items), skipped=tuple(skipped))


def cover_full_range(pixels: np.ndarray) -> np.ndarray:
    """Make the set contain a 0 and a 255 value.

    The converter sets the uint8 input's quantization from the calibration min and max. A
    device feeds any 0..255 pixel, so the input must be quantized over exactly 0..255: then
    scale is 1.0 and zero point 0, and camera pixels pass straight in. Dim or washed-out
    training photos (say 20..230) would otherwise give scale 0.90 and clip bright pixels.

    The fix touches one pixel of the first image per missing endpoint: the range
    statistics of the input get the true endpoints, and the activation ranges deeper in the
    network stay those of real photos (an added all-black or all-white image would widen
    them and cost int8 precision).
    """
    low, high = int(pixels.min()), int(pixels.max())
    if low == 0 and high == 255:
        return pixels
    pixels = pixels.copy()
    if low > 0:
        pixels[0, 0, 0, :] = 0
    if high < 255:
        pixels[0, -1, -1, :] = 255
    return pixels
