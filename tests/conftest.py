"""Shared fixtures: tiny synthetic image folders that a small model can learn."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep TensorFlow quiet and deterministic enough for tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Decoded-pixel caches of the tests go to a private folder (removed at exit), not to the
# user's ~/.cache/tlx (subprocesses inherit it through the environment).
if "TLX_PIXEL_CACHE_DIR" not in os.environ:
    _PIXEL_CACHE = tempfile.mkdtemp(prefix="tlx-test-pixels-")
    os.environ["TLX_PIXEL_CACHE_DIR"] = _PIXEL_CACHE
    atexit.register(shutil.rmtree, _PIXEL_CACHE, ignore_errors=True)

# Tests send Ctrl-C and SIGTERM to tlx processes, and tlx keeps a signal ignored that its
# process was started with ignored (nohup, a background job). A suite started from a
# background job (where the shell ignores SIGINT, and the processes it starts inherit that)
# would see those tests fail: start every child as a terminal would, with the signals live.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

REPO = Path(__file__).resolve().parent.parent

#: One distinct colour per class, so a tiny model separates them in a few steps.
CLASS_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (160, 60, 200)]


def synthetic_image(class_index: int, rng: np.random.Generator, size=(48, 40)) -> Image.Image:
    """A noisy image dominated by the class colour, with a bright and a dark patch so
    pixel values span 0..255."""
    height, width = size
    base = np.array(CLASS_COLOURS[class_index % len(CLASS_COLOURS)], dtype=np.float32)
    pixels = base + rng.normal(0, 25, size=(height, width, 3))
    pixels[:4, :4] = 255
    pixels[-4:, -4:] = 0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=12, seed=0,
                      size=(48, 40), fmt="png") -> Path:
    """root/<class>/<class>_<i>.<fmt> for each class."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_image(index, rng, size).save(folder / f"{name}_{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data")


@pytest.fixture
def three_class_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "data3", classes=("red", "green", "blue"), per_class=10)
