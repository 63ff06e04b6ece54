"""Folders -> file lists -> train / validation / test split -> tf.data.

Two folder layouts are read:

    DATA/<class>/*.jpg                         one folder per class (the split is made here)
    DATA/train/<class>/*, DATA/validation/<class>/*   (the tutorial's cats_and_dogs_filtered)

Every image is decoded once with `tlx.imaging.load_image`, the preprocessing shared
with the exporter and the runtime, in parallel, into the on-disk pixel cache
(tlx.pixels.cache); a second run over the same folder reads it back. Decoding is
also how unreadable files are found, so they are reported and left out before any split
is made. Training reads batches of rows from the memory-mapped cache (tlx.trainer.pipeline):
no copy of all pixels is ever held in memory. Splits are made from the
file lists with a seeded generator and written to the run dir as split.json, so
export and bench use exactly the same held-out files; split.json also records the SHA-256
of each file as it was decoded, so a --data-dir holding other photos under the same names
is refused (tlx.run_dir.require_same_photos).

Unlike the tutorial, the test set is not made with `take()` on a dataset that is
reshuffled every iteration (which can hand some validation images to the test set
and others back on the next pass): here it is a fixed list, disjoint by construction
and checked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tlx.errors import TlxError
from tlx.imaging import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, PREPROCESSING_VERSION, is_image_file
from tlx.progress import Log, Progress
from tlx.run_dir import Split, class_name_problem
from tlx.pixels import cache as pixel_cache
from tlx.pixels.cache import PixelCache


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
    #: Hidden sub-folders (".name", "__name"), which are not classes.
    ignored: list[str] = field(default_factory=list)


@dataclass
class Images:
    """The split, and the pixel cache that holds the decoded uint8 pixels of its files."""

    split: Split
    cache: PixelCache

    def rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(cache rows, labels int64) of split `name` ("train", "validation", "test")."""
        items = getattr(self.split, name)
        return (self.cache.rows_of([path for path, _ in items]),
                np.array([label for _, label in items], dtype=np.int64))

    def arrays(self, name: str, limit: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 N x H x W x 3, labels) of split `name`, copied into memory: for
        a few images (plots, tests), not a whole split of a large folder."""
        rows, labels = self.rows(name)
        rows, labels = rows[:limit], labels[:limit]
        return np.asarray(self.cache.pixels[rows]), labels

    @property
    def pixels(self) -> np.ndarray:
        return self.cache.pixels


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
    ignored = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_hidden(p))
    if not class_dirs:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = (" It holds images directly: put them in one sub-folder per class." if loose
                else "")
        raise TlxError(f"The {what} {root} has no class folders (expected one sub-folder per class "
                       f"holding its images).{hint}")
    _check_class_names(root, what, class_dirs)
    folder = Folder(root=root, files={}, ignored=ignored)
    for class_dir in class_dirs:
        found = []
        for path in sorted(class_dir.rglob("*")):
            if any(_is_hidden(part) for part in path.relative_to(class_dir).parts):
                continue
            if path.is_symlink() and not path.exists() and path.suffix.lower() in IMAGE_SUFFIXES:
                folder.skipped.append((str(path), "a symbolic link that leads nowhere (broken or looping)"))
                continue
            if not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(path)
            else:
                folder.skipped.append((str(path), f"not an image file (suffix {path.suffix or 'none'!r})"))
        folder.files[class_dir.name] = found
    return folder


def _check_class_names(root: Path, what: str, class_dirs: Sequence[Path]) -> None:
    """Class names must survive labels.txt exactly (tlx.run_dir.class_name_problem), and no
    class folder may lead back to the data folder (a link to it would list every image twice)."""
    problems = [f"{d.name!r}: {problem}" for d in class_dirs if (problem := class_name_problem(d.name))]
    if problems:
        raise TlxError(f"The {what} {root} has class folders whose names cannot be class names: "
                       + "; ".join(problems) + ". labels.txt holds one name per line and label readers "
                       "strip spaces at the ends, so such a name would come back different. "
                       "Rename the folders.")
    real_root = Path(os.path.realpath(root))
    for d in class_dirs:
        real = Path(os.path.realpath(d))
        if real == real_root or real in real_root.parents:
            raise TlxError(f"The class folder {d} is a link to the {what} itself (or a folder above it): "
                           "every image would be listed twice. Remove the link.")


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


def _check_no_file_twice(folders: Sequence[Folder]) -> None:
    """The same file under two names (a link) would be counted twice, possibly in two classes
    or splits: refuse it, naming both."""
    seen: dict[str, Path] = {}
    for folder in folders:
        for paths in folder.files.values():
            for path in paths:
                first = seen.setdefault(os.path.realpath(path), path)
                if first != path:
                    raise TlxError(f"{path} and {first} are the same file (through a link). Each image "
                                   "may appear once: remove the link, or give --test-dir a folder "
                                   "outside the data folder.")


def format_skipped(skipped: Sequence[tuple[str, str]]) -> str:
    lines = [f"Warning: skipped {len(skipped)} file(s) that are not usable images:"]
    for path, reason in list(skipped)[:MAX_LISTED]:
        lines.append(f"  {path}: {reason}")
    if len(skipped) > MAX_LISTED:
        lines.append(f"  ... and {len(skipped) - MAX_LISTED} more (all listed in split.json under 'skipped')")
    return "\n".join(lines)


def _usable(folder: Folder, rows: dict, what: str) -> dict[str, list[str]]:
    usable = {name: [str(p) for p in paths if str(p) in rows] for name, paths in folder.files.items()}
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


def source_folders(data_dir: Path, test_dir: Optional[Path] = None) -> list[Path]:
    """The folders a run reads (data_dir or its train/validation, and test_dir): the
    pixel cache entry is keyed by them, so a resumed run finds the entry of its start."""
    data_dir = Path(data_dir)
    layout = detect_layout(data_dir) if data_dir.is_dir() else None
    roots = list(layout) if layout else [data_dir]
    if test_dir is not None:
        roots.append(Path(test_dir))
    return [r.absolute() for r in roots]


def _decode(paths: Sequence, image_size: int, folders: Sequence[Path], *, cache_dir, max_pixels,
            workers, log: Log, progress: Optional[Progress], preprocessing: int) -> PixelCache:
    """The cache of `paths` (load_image with the run's `preprocessing` version), with a
    line saying whether it was read back or decoded."""
    started = time.perf_counter()
    if progress is None:
        def progress(label, total):
            return pixel_cache.rate_reporter(log, label, total)
    cache = pixel_cache.prepare(
        paths, image_size, key={"folders": sorted(str(f) for f in folders)}, cache_dir=cache_dir,
        max_pixels=max_pixels, workers=workers, log=log, progress=progress, preprocessing=preprocessing)
    seconds = time.perf_counter() - started
    if cache.decoded:
        log(f"Decoded {cache.decoded} images in {seconds:.1f} s ({cache.decoded / seconds:.0f} images/s) "
            f"into the pixel cache {cache.location}")
    else:
        log(f"Read {len(paths)} images back from the pixel cache {cache.location} in {seconds:.2f} s")
    return cache


def load_data(data_dir: Path, *, image_size: int, seed: int, validation_fraction: float = 0.2,
              test_fraction: float = 0.2, test_dir: Optional[Path] = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, cache_dir: Optional[Path] = None,
              workers: Optional[int] = None, log: Log = lambda _: None,
              progress: Optional[Progress] = None, preprocessing: int = PREPROCESSING_VERSION) -> Images:
    """Scan, decode once (or read back from the pixel cache), report skipped files,
    split. Every error comes before training. `preprocessing`: the run's load_image version."""
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
    for f in folders:
        if f.ignored:
            log(f"Note: ignored hidden folder(s) in {f.root}: {', '.join(f.ignored)} "
                "(names starting with '.' or '__' are not classes).")
    _check_no_file_twice(folders)
    all_paths = [p for f in folders for paths in f.files.values() for p in paths]
    cache = _decode(all_paths, image_size, source_folders(data_dir, test_dir), cache_dir=cache_dir,
                    max_pixels=max_pixels, workers=workers, log=log, progress=progress,
                    preprocessing=preprocessing)
    skipped = [item for f in folders for item in f.skipped] + list(cache.skipped)
    if skipped:
        log(format_skipped(skipped))

    files = _usable(main, cache.rows, "train folder" if layout else "data folder")
    val_files = _usable(val_folder, cache.rows, "validation folder") if val_folder else None
    test_files = _usable(test_folder, cache.rows, "--test-dir folder") if test_folder else None
    train, validation, test = split_files(
        classes, files, seed=seed, validation_fraction=validation_fraction,
        test_fraction=None if test_files is not None else test_fraction,
        validation_files=val_files, test_files=test_files)
    split = Split(classes=tuple(classes), train=tuple(train), validation=tuple(validation),
                  test=tuple(test), seed=seed, image_size=size, data_dir=str(data_dir.resolve()),
                  skipped=tuple(skipped),
                  content={path: cache.content[path] for items in (train, validation, test)
                           for path, _ in items})
    check_split(split)
    return Images(split=split, cache=cache)


def load_split_images(split: Split, folders: Sequence[Path], max_pixels: int = DEFAULT_MAX_PIXELS,
                      cache_dir: Optional[Path] = None, workers: Optional[int] = None,
                      log: Log = lambda _: None, progress: Optional[Progress] = None,
                      preprocessing: int = PREPROCESSING_VERSION) -> Images:
    """The pixels of a saved split again (for --resume), from the pixel cache entry of
    `folders` when its rows are still valid. A file that no longer decodes is an error:
    the split would silently change otherwise."""
    paths = [p for name in ("train", "validation", "test") for p, _ in getattr(split, name)]
    cache = _decode(paths, int(split.image_size[0]), folders, cache_dir=cache_dir,
                    max_pixels=max_pixels, workers=workers, log=log, progress=progress,
                    preprocessing=preprocessing)
    if cache.skipped:
        raise TlxError("Files of this run changed since it started and no longer decode:\n"
                       + "\n".join(f"  {p}: {r}" for p, r in cache.skipped[:MAX_LISTED])
                       + "\nRestore them or start a new run.")
    changed = split.differing(cache.content)
    if changed:
        raise TlxError(f"{len(changed)} file(s) of this run hold other pictures than when it started:\n"
                       + "\n".join(f"  {p}" for p in changed[:MAX_LISTED])
                       + "\nRestore them or start a new run.")
    return Images(split=split, cache=cache)
