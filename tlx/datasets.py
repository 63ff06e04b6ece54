"""Real datasets that install offline, prepared as class folders for `tlx train`.

- tuxpaint: photo cut-outs from Debian's tuxpaint-stamps-default (GPL-2): animals, food, plants.
- lfw-subset: scikit-image's bundled faces / non-faces (no apt needed).
- fashion-mnist: Debian's dataset-fashion-mnist (10 classes of 28x28 greyscale clothing).

Each preparer writes `<out>/train/<class>/...` style folders once and marks them complete
with a `.complete` file, so an interrupted preparation is redone, never half used.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from tlx.errors import TlxError

TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")
#: Each class and the stamp folders it takes (recursively). Sub-folders named in
#: TUXPAINT_EXCLUDED hold drawings or toys, not photos, and are left out, as are the
#: few greyscale stamps (found by looking at the pixels).
TUXPAINT_CLASSES = {
    "animals": ["animals/amphibians", "animals/birds", "animals/fish", "animals/insects",
                "animals/lizards", "animals/mammals", "animals/marsupials", "animals/shellfish"],
    "food": ["food/fruit", "food/nuts", "food/spices", "food/vegetables", "food/pizza.png"],
    "plants": ["plants/flowers", "plants/mushrooms", "plants/trees", "plants/eggplant.png",
               "plants/lavender.png", "plants/lettuce_bolted.png", "plants/thyme.png"],
}
TUXPAINT_EXCLUDED = {"cartoon", "toys", "plastic"}

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle-boot"]

COMPLETE = ".complete"


@dataclass(frozen=True)
class PreparedDataset:
    """Where the class folders are, and a separate test folder when the dataset has one."""

    name: str
    data_dir: Path
    test_dir: Path | None
    description: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    prepare: Callable[[Path, int], PreparedDataset]
    install_hint: str


def _missing(what: str, hint: str) -> TlxError:
    return TlxError(f"{what} is not installed. Install it with:\n  {hint}")


def _is_greyscale(image: Image.Image) -> bool:
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return bool(np.abs(pixels[..., 0] - pixels[..., 1]).max() < 8
                and np.abs(pixels[..., 1] - pixels[..., 2]).max() < 8)


def tuxpaint_files(root: Path = TUXPAINT_ROOT) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise _missing("Debian's tuxpaint-stamps-default", DATASETS["tuxpaint"].install_hint)
    found = {}
    for label, entries in TUXPAINT_CLASSES.items():
        paths = []
        for entry in entries:
            target = root / entry
            candidates = [target] if target.is_file() else sorted(target.rglob("*.png"))
            for path in candidates:
                if TUXPAINT_EXCLUDED & set(path.relative_to(root).parts):
                    continue
                with Image.open(path) as image:
                    if _is_greyscale(image):
                        continue
                paths.append(path)
        found[label] = paths
    return found


def _prepare_tuxpaint(out: Path, limit: int) -> PreparedDataset:
    out.mkdir(parents=True, exist_ok=True)
    for label, paths in tuxpaint_files().items():
        folder = out / label
        folder.mkdir(exist_ok=True)
        for path in paths[:limit or None]:
            # Flatten sub-folders into unique names: mammals/cats/tabby.png -> mammals_cats_tabby.png
            name = "_".join(path.relative_to(TUXPAINT_ROOT / label).parts)
            shutil.copyfile(path, folder / name)
    return PreparedDataset("tuxpaint", out, None, "Tux Paint stamp photos: animals, food, plants")


def _prepare_lfw(out: Path, limit: int) -> PreparedDataset:
    try:
        from skimage import data
    except ImportError:
        raise _missing("scikit-image", DATASETS["lfw-subset"].install_hint) from None
    faces = data.lfw_subset()  # 100 faces then 100 non-faces, floats 0..1
    for index, array in enumerate(faces):
        label = "face" if index < 100 else "non-face"
        if limit and index % 100 >= limit:
            continue
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(array * 255).astype(np.uint8), "L").save(folder / f"{label}_{index:03d}.png")
    return PreparedDataset("lfw-subset", out, None, "scikit-image LFW subset: faces and non-faces")


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-format idx file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise TlxError(f"{path} is not an unsigned-byte idx file.")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _write_fashion(images, labels, out: Path, per_class: int) -> None:
    counts = np.zeros(len(FASHION_MNIST_CLASSES), dtype=int)
    for index, (image, label) in enumerate(zip(images, labels)):
        if per_class and counts[label] >= per_class:
            continue
        counts[label] += 1
        folder = out / FASHION_MNIST_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{index:05d}.png")


def _prepare_fashion(out: Path, limit: int) -> PreparedDataset:
    files = {name: FASHION_MNIST_ROOT / f"{name}-ubyte.gz" for name in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    if not all(path.is_file() for path in files.values()):
        raise _missing("Debian's dataset-fashion-mnist", DATASETS["fashion-mnist"].install_hint)
    _write_fashion(read_idx(files["train-images-idx3"]), read_idx(files["train-labels-idx1"]),
                   out / "train", limit or 300)
    # The full official test set: 10,000 images resolve an accuracy drop to ~0.3 points.
    _write_fashion(read_idx(files["t10k-images-idx3"]), read_idx(files["t10k-labels-idx1"]),
                   out / "test", 0)
    return PreparedDataset("fashion-mnist", out / "train", out / "test",
                           "Fashion-MNIST: 10 clothing classes, official 10k test set")


DATASETS: dict[str, DatasetSpec] = {
    "tuxpaint": DatasetSpec("tuxpaint", "real photo cut-outs: animals / food / plants (~210 images)",
                            _prepare_tuxpaint,
                            "sudo apt-get install -y --no-install-recommends tuxpaint-stamps-default"),
    "lfw-subset": DatasetSpec("lfw-subset", "faces / non-faces, 200 greyscale 25x25 (scikit-image)",
                              _prepare_lfw, "pip install scikit-image"),
    "fashion-mnist": DatasetSpec("fashion-mnist", "10 clothing classes, 28x28 greyscale; 10k test images",
                                 _prepare_fashion,
                                 "sudo apt-get install -y dataset-fashion-mnist"),
}


def prepare(name: str, out: Path, limit: int = 0) -> PreparedDataset:
    """Class folders for dataset `name` under `out` (reused when already complete).

    `limit` caps images per class (0: the dataset's default)."""
    try:
        spec = DATASETS[name]
    except KeyError:
        raise TlxError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.") from None
    out = Path(out)
    marker = out / COMPLETE
    if out.exists() and not marker.is_file():
        shutil.rmtree(out)  # an earlier preparation was interrupted: start over
    if marker.is_file():
        return _described(spec, out, limit)
    prepared = spec.prepare(out, limit)
    marker.write_text(f"{name} {limit}\n")
    return prepared


def _described(spec: DatasetSpec, out: Path, limit: int) -> PreparedDataset:
    if spec.name == "fashion-mnist":
        return PreparedDataset(spec.name, out / "train", out / "test", spec.description)
    return PreparedDataset(spec.name, out, None, spec.description)
