"""Folders -> file lists -> train / validation / test split -> tf.data.

Two folder layouts are read:

    DATA/<class>/*.jpg                         one folder per class (the split is made here)
    DATA/train/<class>/*, DATA/validation/<class>/*   (the tutorial's cats_and_dogs_filtered)

Every image is decoded once with `tlx.imaging.load_image`, the preprocessing shared
with the exporter and the runtime; that is also how unreadable files are found, so
they are reported and left out before any split is made. Splits are made from the
file lists with a seeded generator and written to the run dir as split.json, so
export and bench use exactly the same held-out files.

Unlike the tutorial, the test set is not made with `take()` on a dataset that is
reshuffled every iteration (which can hand some validation images to the test set
and others back on the next pass): here it is a fixed list, disjoint by construction
and checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from tlx.errors import ImageError, TlxError
from tlx.imaging import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, is_image_file, load_image
from tlx.run_dir import Split

Log = Callable[[str], None]

#: Sub-folder names of the pre-split layout.
TRAIN_DIR = "train"
VALIDATION_DIRS = ("validation", "val")

#: How many skipped files a warning lists by name before it only counts.
MAX_LISTED = 20


@dataclass
class Folder:
    """One folder of class folders: the files found, by class name."""

    root: Path
    files: dict[str, list[Path]]
    #: Files that are not images by their suffix, with a reason.
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Images:
    """The split and the decoded uint8 pixels of each of its files."""

    split: Split
    pixels: dict[str, np.ndarray]

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 N x H x W x 3, labels int N) of split `name` ("train", "validation", "test")."""
        items = getattr(self.split, name)
        height, width = self.split.image_size
        images = np.zeros((len(items), height, width, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(items):
            images[i] = self.pixels[path]
        labels = np.array([label for _, label in items], dtype=np.int64)
        return images, labels


def _is_hidden(path) -> bool:
    name = Path(path).name
    return name.startswith(".") or name.startswith("__")


def scan_class_folders(root: Path, what: str = "data folder") -> Folder:
    """List root/<class>/<file>. Errors for a missing folder or one without class folders.

    Paths are absolute: split.json must lead export and bench to the same files from any
    working directory."""
    root = Path(root).absolute()
    if not root.exists():
        raise TlxError(f"The {what} {root} does not exist.")
    if not root.is_dir():
        raise TlxError(f"The {what} {root} is not a folder.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    if not class_dirs:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = (" It holds images directly: put them in one sub-folder per class." if loose
                else "")
        raise TlxError(f"The {what} {root} has no class folders (expected one sub-folder per class "
                       f"holding its images).{hint}")
    folder = Folder(root=root, files={})
    for class_dir in class_dirs:
        found = []
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or any(_is_hidden(part) for part in path.relative_to(class_dir).parts):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
            else:
                folder.skipped.append((str(path), f"not an image file (suffix {path.suffix or 'none'!r})"))
        folder.files[class_dir.name] = found
    return folder


def detect_layout(data_dir: Path) -> Optional[tuple[Path, Path]]:
    """(train, validation) folders when data_dir uses the pre-split layout, else None."""
    train = data_dir / TRAIN_DIR
    for name in VALIDATION_DIRS:
        validation = data_dir / name
        if train.is_dir() and validation.is_dir():
            return train, validation
    return None


def _check_classes(folder: Folder, what: str, classes: Optional[Sequence[str]] = None) -> None:
    names = list(folder.files)
    if classes is None:
        if len(names) < 2:
            raise TlxError(f"The {what} {folder.root} has a single class folder ({names[0]!r}); "
                           "a classifier needs at least two classes.")
    else:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise TlxError(f"The {what} {folder.root} has class folders that the training data "
                           f"does not have: {', '.join(unknown)} (training classes: {', '.join(classes)}).")
    empty = [n for n, paths in folder.files.items() if not paths]
    if empty:
        raise TlxError(f"The {what} {folder.root} has empty class folders (no image files): "
                       f"{', '.join(empty)}. Add images or remove the folders.")


def decode_all(paths: Sequence[Path], image_size: tuple[int, int], max_pixels: int,
               log: Log = lambda _: None) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Decode each file once: ({path: pixels}, [(path, reason) for files that failed])."""
    pixels: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    step = max(1, len(paths) // 10)
    for i, path in enumerate(paths):
        if len(paths) > 500 and i and i % step == 0:
            log(f"  decoded {i}/{len(paths)} images")
        try:
            pixels[str(path)] = load_image(path, image_size, max_pixels=max_pixels)
        except ImageError as exc:
            skipped.append((str(path), exc.reason))
    return pixels, skipped


def format_skipped(skipped: Sequence[tuple[str, str]]) -> str:
    lines = [f"Warning: skipped {len(skipped)} file(s) that are not usable images:"]
    for path, reason in list(skipped)[:MAX_LISTED]:
        lines.append(f"  {path}: {reason}")
    if len(skipped) > MAX_LISTED:
        lines.append(f"  ... and {len(skipped) - MAX_LISTED} more (all listed in split.json under 'skipped')")
    return "\n".join(lines)


def _usable(folder: Folder, pixels: dict, what: str) -> dict[str, list[str]]:
    usable = {name: [str(p) for p in paths if str(p) in pixels] for name, paths in folder.files.items()}
    empty = [name for name, paths in usable.items() if not paths]
    if empty:
        raise TlxError(f"The {what} {folder.root} has class folders without a single readable image: "
                       f"{', '.join(empty)} (see the skipped files above).")
    return usable


def _stratified_counts(sizes: list[int], fraction: float) -> list[int]:
    """How many of each class to take so that the total is round(sum * fraction) and each
    class gives its share (largest remainder first): the test set keeps the class mix of
    the data, and small classes are not emptied out of validation."""
    total = round(sum(sizes) * fraction)
    exact = [size * fraction for size in sizes]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:max(0, total - sum(counts))]:
        counts[i] += 1
    return [min(count, size) for count, size in zip(counts, sizes)]


def _shuffled(paths: list[str], rng: np.random.Generator) -> list[str]:
    paths = sorted(paths)
    return [paths[i] for i in rng.permutation(len(paths))]


def split_files(classes: Sequence[str], files: dict[str, list[str]], *, seed: int,
                validation_fraction: float, test_fraction: Optional[float],
                validation_files: Optional[dict[str, list[str]]] = None,
                test_files: Optional[dict[str, list[str]]] = None):
    """Deterministic split of file lists -> (train, validation, test), each [(path, label)].

    - `validation_files` given (pre-split layout): `files` is all train, else each class
      gives round(n * validation_fraction) files (at least one, at most n - 1) to validation.
    - `test_files` given: that is the test set. Else round(len(validation) * test_fraction)
      validation files move to test, each class giving its share (stratified).
    """
    rng = np.random.default_rng(seed)
    index = {name: i for i, name in enumerate(classes)}
    train: list[tuple[str, int]] = []
    per_class_val: list[list[tuple[str, int]]] = []
    for name in classes:
        paths = _shuffled(files.get(name, []), rng)
        if validation_files is not None:
            val_paths = _shuffled(validation_files.get(name, []), rng)
            train_paths = paths
        else:
            n = len(paths)
            n_val = min(max(1, round(n * validation_fraction)), n - 1) if n >= 2 else 0
            val_paths, train_paths = paths[:n_val], paths[n_val:]
        train.extend((p, index[name]) for p in train_paths)
        per_class_val.append([(p, index[name]) for p in val_paths])
    if test_files is not None:
        validation = [item for items in per_class_val for item in items]
        test = [(p, index[name]) for name in classes for p in sorted(test_files.get(name, []))]
    else:
        counts = _stratified_counts([len(items) for items in per_class_val], test_fraction)
        test = [item for items, n in zip(per_class_val, counts) for item in items[:n]]
        validation = [item for items, n in zip(per_class_val, counts) for item in items[n:]]
    train.sort(key=lambda item: (item[1], item[0]))
    validation.sort(key=lambda item: (item[1], item[0]))
    test.sort(key=lambda item: (item[1], item[0]))
    return train, validation, test


def check_split(split: Split) -> None:
    """No file in two splits (by real path), and no empty split. Raises TlxError."""
    seen: dict[str, str] = {}
    for name in ("train", "validation", "test"):
        for path, _ in getattr(split, name):
            real = os.path.realpath(path)
            if real in seen and seen[real] != name:
                raise TlxError(f"{path} would be in both the {seen[real]} and the {name} split. "
                               "Is --test-dir inside the data folder? Give it a folder of its own.")
            seen[real] = name
    for name, hint in (("train", "add images"),
                       ("validation", "add images or raise --validation-fraction"),
                       ("test", "add images, raise --test-fraction or pass --test-dir")):
        if not getattr(split, name):
            raise TlxError(f"The {name} split is empty ({len(split.train)} train, "
                           f"{len(split.validation)} validation, {len(split.test)} test files): {hint}.")


def load_data(data_dir: Path, *, image_size: int, seed: int, validation_fraction: float = 0.2,
              test_fraction: float = 0.2, test_dir: Optional[Path] = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, log: Log = lambda _: None) -> Images:
    """Scan, decode once, report skipped files, split. Every error comes before training."""
    data_dir = Path(data_dir)
    size = (image_size, image_size)
    layout = detect_layout(data_dir) if data_dir.is_dir() else None
    if layout is not None:
        main = scan_class_folders(layout[0], "train folder")
        _check_classes(main, "train folder")
        val_folder = scan_class_folders(layout[1], "validation folder")
        _check_classes(val_folder, "validation folder", list(main.files))
    else:
        main = scan_class_folders(data_dir)
        _check_classes(main, "data folder")
        val_folder = None
    classes = list(main.files)
    test_folder = None
    if test_dir is not None:
        test_folder = scan_class_folders(Path(test_dir), "--test-dir folder")
        _check_classes(test_folder, "--test-dir folder", classes)

    folders = [f for f in (main, val_folder, test_folder) if f is not None]
    all_paths = [p for f in folders for paths in f.files.values() for p in paths]
    if len(all_paths) > 500:
        log(f"Decoding {len(all_paths)} images at {image_size}x{image_size} ...")
    pixels, bad = decode_all(all_paths, size, max_pixels, log)
    skipped = [item for f in folders for item in f.skipped] + bad
    if skipped:
        log(format_skipped(skipped))

    files = _usable(main, pixels, "train folder" if layout else "data folder")
    val_files = _usable(val_folder, pixels, "validation folder") if val_folder else None
    test_files = _usable(test_folder, pixels, "--test-dir folder") if test_folder else None
    train, validation, test = split_files(
        classes, files, seed=seed, validation_fraction=validation_fraction,
        test_fraction=None if test_files is not None else test_fraction,
        validation_files=val_files, test_files=test_files)
    split = Split(classes=tuple(classes), train=tuple(train), validation=tuple(validation),
                  test=tuple(test), seed=seed, image_size=size, data_dir=str(data_dir.resolve()),
                  skipped=tuple(skipped))
    check_split(split)
    return Images(split=split, pixels=pixels)


def load_split_images(split: Split, max_pixels: int = DEFAULT_MAX_PIXELS) -> Images:
    """Decode the files of a saved split again (for --resume). A file that no longer
    decodes is an error: the split would silently change otherwise."""
    paths = [Path(p) for name in ("train", "validation", "test") for p, _ in getattr(split, name)]
    pixels, bad = decode_all(paths, tuple(split.image_size), max_pixels)
    if bad:
        raise TlxError("Files of this run changed since it started and no longer decode:\n"
                       + "\n".join(f"  {p}: {r}" for p, r in bad[:MAX_LISTED])
                       + "\nRestore them or start a new run.")
    return Images(split=split, pixels=pixels)


# -- tf.data -------------------------------------------------------------------

def label_dtype(num_classes: int):
    """float32 labels for the binary (one logit) head, int32 for the sparse softmax head."""
    return np.float32 if num_classes == 2 else np.int32


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 shuffle: bool = False, seed: int = 0):
    """A batched tf.data pipeline of (float32 raw pixels 0..255, label), cached and prefetched.

    Pixels stay uint8 in the cache (4x less memory) and become float32 per batch; the
    model's own Rescaling layer maps them to what the backbone expects.
    """
    import tensorflow as tf

    labels = labels.astype(label_dtype(num_classes))
    height, width = images.shape[1:3]

    def generate():
        yield from zip(images, labels)

    ds = tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec((height, width, 3), tf.uint8),
        tf.TensorSpec((), tf.as_dtype(labels.dtype))))
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(labels))).cache()
    if shuffle:
        ds = ds.shuffle(max(1, len(labels)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
