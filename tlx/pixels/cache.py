"""Decode once, in parallel, into an on-disk uint8 pixel cache.

Every image goes through `tlx.imaging.load_image` (the preprocessing shared with export
and the device) exactly once per (file, image size, preprocessing version): the pixels
land in one memory-mapped .npy file, one row per file, beside a small index.json
(tlx.pixels.cache_index) that records, for every file, its row, its stamp when it was
decoded (size, mtime, ctime, inode), the SHA-256 of its bytes and of its row (and, for
files that could not be read, why). The next run over the same files stats them and reads
the rows back instead of decoding; only new or changed files are decoded again.

Nothing here holds all pixels in memory: decoding writes each image straight into its
row of the memory-mapped file, and readers gather the rows they need (the kernel pages
the file in and out, so a folder bigger than RAM still trains).

Decoding runs on every core (tlx.pixels.parallel_decode): worker processes write their
rows straight into the file.

Safety: the .npy's blocks are reserved before any row is written through the map (a full
disk is an error with a message, not a SIGBUS); it is written under a temporary name and
renamed; index.json (written atomically after it) names the .npy with its stamp. A cache
whose index does not parse or breaks the schema, whose .npy is missing, has another stamp
or another shape, is reported and rebuilt, never trusted; a row whose SHA-256 is not the
recorded one is decoded again, with a message. Only TensorFlow-free imports (numpy, pillow).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from tlx import files
from tlx.errors import TlxError
from tlx.imaging import DEFAULT_MAX_PIXELS, PREPROCESSING_VERSION, image_size_tuple
from tlx.progress import Advance, Log, Progress
from tlx.pixels.cache_index import (CACHE_FORMAT, MAX_INDEX_BYTES, CacheError, CacheIndex, CachedFile,
                                    FileStamp, SkippedFile)
from tlx.pixels.parallel_decode import decode_into, default_workers, row_digest

INDEX = "index.json"
#: Environment variable that moves the default cache folder (tests point it at a temp dir).
CACHE_DIR_ENV = "TLX_PIXEL_CACHE_DIR"
#: Rows copied from an old cache per step when refreshing it (bounded memory).
COPY_ROWS = 256


def default_cache_dir() -> Path:
    """$TLX_PIXEL_CACHE_DIR, else pixels/ in tlx's user cache folder ($XDG_CACHE_HOME/tlx,
    default ~/.cache/tlx: the same folder as the converted Lite0 weights)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or files.user_cache_dir() / "pixels")


@dataclass(frozen=True)
class PixelCache:
    """Decoded pixels of a list of files: `pixels[rows[path]]` is the file's uint8 image."""

    #: uint8 (rows, height, width, 3), memory-mapped read-only (an ndarray when empty).
    pixels: np.ndarray
    #: Row of each readable file.
    rows: dict[str, int]
    #: (path, reason) of each file that could not be read, in the order given.
    skipped: tuple[tuple[str, str], ...]
    #: The cache entry's folder.
    location: Path
    #: How many files were decoded for this call (0 when everything came from the cache).
    decoded: int = 0
    #: SHA-256 of each readable file's bytes as it was decoded (what split.json records).
    content: Mapping[str, str] = field(default_factory=dict)

    def rows_of(self, paths: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.rows[str(p)] for p in paths), dtype=np.int64, count=len(paths))


def entry_dir(cache_dir: Path, key: dict) -> Path:
    """The cache folder of one set of files at one size: a hash of `key`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / digest


def prepare(paths: Sequence[Path | str], image_size: int | tuple[int, int], *,
            key: Optional[dict] = None, cache_dir: Optional[Path] = None,
            max_pixels: int = DEFAULT_MAX_PIXELS, workers: Optional[int] = None,
            log: Log = lambda _: None, progress: Optional[Progress] = None,
            preprocessing: int = PREPROCESSING_VERSION) -> PixelCache:
    """Pixels of every file in `paths` at `image_size` through load_image with the
    `preprocessing` version (the run's), from the cache where its row is still valid,
    decoded (in parallel) where not. Unreadable files are listed in `skipped`, not fatal.

    `key` names the entry (e.g. the data folders scanned); files may come and go under
    one key and only those are decoded again. Without it the key is the list of paths.
    """
    paths = [str(p) for p in paths]
    size = image_size_tuple(image_size)
    settings = {"format": CACHE_FORMAT, "preprocessing": int(preprocessing),
                "image_size": list(size), "max_pixels": int(max_pixels)}
    if key is None:
        key = {"paths": hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()}
    where = entry_dir(Path(cache_dir) if cache_dir else default_cache_dir(), {**key, **settings})
    stamps = [FileStamp.of(p) for p in paths]

    old: Optional[CacheIndex] = None
    old_pixels: Optional[np.ndarray] = None
    try:
        old, old_pixels = _open(where, settings)
    except FileNotFoundError:
        pass
    except CacheError as exc:
        log(f"Pixel cache {where} is not usable ({exc}): decoding every image again.")

    todo = list(range(len(paths)))
    if old is not None:
        todo = _stale(old, old_pixels, paths, stamps, where, log)
        if not todo:
            return PixelCache(old_pixels, {p: old.files[p].row for p in paths if p in old.files},
                              tuple((p, old.skipped[p].reason) for p in paths if p in old.skipped), where,
                              content={p: old.files[p].content_sha256 for p in paths if p in old.files})
        log(f"Pixel cache {where}: {len(todo)} of {len(paths)} images are new or changed; "
            "decoding those.")
    try:
        return _rebuild(where, settings, paths, stamps, size, max_pixels, old, old_pixels, set(todo),
                        workers, progress)
    except OSError as exc:
        raise TlxError(f"Cannot write the pixel cache in {where} ({exc.strerror or exc}): free some "
                       "space there, or choose a writable folder with --cache-dir.") from None


def _stale(old: CacheIndex, old_pixels: np.ndarray, paths: list[str], stamps: list, where: Path,
           log: Log) -> list[int]:
    """Indices of `paths` to decode again: new files, files whose stamp changed, and files
    whose row no longer matches its checksum (reported)."""
    todo, hits = [], []
    for i, (path, stamp) in enumerate(zip(paths, stamps)):
        hit = old.files.get(path)
        if hit is not None and stamp is not None and hit.stamp == stamp:
            hits.append(i)
        elif path in old.skipped and old.skipped[path].stamp == stamp:
            continue
        else:
            todo.append(i)
    damaged = _damaged_rows(old_pixels, [old.files[paths[i]] for i in hits])
    if damaged:
        log(f"Pixel cache {where}: {len(damaged)} row(s) of its pixel file do not match their "
            f"checksums (the file or its index was changed), e.g. the row of {paths[hits[damaged[0]]]}: "
            "decoding those images again.")
        todo = sorted(todo + [hits[k] for k in damaged])
    return todo


def _damaged_rows(pixels: np.ndarray, entries: Sequence[CachedFile]) -> list[int]:
    """Positions in `entries` whose row's SHA-256 is not the recorded one. Hashed on every
    core (hashlib lets go of the GIL): 0.1-0.25 ms per 160 px row, against 3-6 ms to decode
    one image (benchmarks/results/pixel_cache_checksums.md)."""
    if not entries:
        return []

    def check(start: int) -> list[int]:
        return [k for k in range(start, min(start + COPY_ROWS, len(entries)))
                if row_digest(pixels[entries[k].row], entries[k].content_sha256) != entries[k].pixels_sha256]

    with ThreadPoolExecutor(default_workers()) as pool:
        return [k for part in pool.map(check, range(0, len(entries), COPY_ROWS)) for k in part]


def _open(where: Path, settings: dict) -> tuple[CacheIndex, np.ndarray]:
    """The entry's index and memory-mapped pixels. FileNotFoundError when there is no
    entry; CacheError when there is one that must not be used."""
    index_path = where / INDEX
    if not index_path.exists():
        raise FileNotFoundError(index_path)
    try:
        if index_path.stat().st_size > MAX_INDEX_BYTES:
            raise CacheError(f"its index is larger than {MAX_INDEX_BYTES} bytes")
        index = CacheIndex.from_json(files.read_json(index_path), settings)
        npy = where / index.pixels
        stamp = FileStamp.of(npy)
        if stamp is None:
            raise CacheError(f"its pixel file {npy.name} is missing")
        if stamp != index.pixels_stamp:
            raise CacheError(f"{npy.name} changed after its index was written")
        pixels = np.load(npy, mmap_mode="r", allow_pickle=False) if index.rows else _empty(settings)
        expected = (index.rows, *settings["image_size"], 3)
        if pixels.dtype != np.uint8 or tuple(pixels.shape) != expected:
            raise CacheError(f"{npy.name} holds {pixels.dtype} {tuple(pixels.shape)}, "
                             f"the index says uint8 {expected}")
        return index, pixels
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CacheError(f"unreadable: {exc}") from None


def _empty(settings: dict) -> np.ndarray:
    return np.zeros((0, *settings["image_size"], 3), np.uint8)


def _rebuild(where: Path, settings: dict, paths: list[str], stamps: list, size: tuple[int, int],
             max_pixels: int, old: Optional[CacheIndex], old_pixels: Optional[np.ndarray], todo: set[int],
             workers: Optional[int], progress: Optional[Progress]) -> PixelCache:
    """Write a new .npy with one row per path (rows still valid copied from the old
    file, the rest decoded), then the index that names it. Nothing is left on failure."""
    created = not where.exists()
    where.mkdir(parents=True, exist_ok=True)
    _remove_stale_files(where, old.pixels if old else None)
    name = f"pixels-{secrets.token_hex(6)}.npy"
    final = where / name
    tmp = where / f".{name}.tmp"
    try:
        kept, skipped = _write_pixels(tmp, settings, paths, size, max_pixels, old, old_pixels, todo,
                                      workers, progress)
        os.replace(tmp, final)
        files_ = {paths[i]: CachedFile(i, stamps[i], content, pixels_sha)
                  for i, (content, pixels_sha) in kept.items()}
        index = CacheIndex(settings=settings, pixels=name, rows=len(paths),
                           pixels_stamp=FileStamp.of(final), files=files_,
                           skipped={paths[i]: SkippedFile(stamps[i], reason)
                                    for i, reason in sorted(skipped.items())})
        # Compact JSON: the index of 100,000 files stays a few tens of MB.
        files.write_text(where / INDEX, json.dumps(index.to_json(), separators=(",", ":")))
    except BaseException:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        if created:
            with suppress(OSError):
                where.rmdir()
        raise
    if old is not None and old.pixels != name:
        (where / old.pixels).unlink(missing_ok=True)
    pixels = np.load(final, mmap_mode="r") if paths else _empty(settings)
    return PixelCache(pixels, {path: f.row for path, f in files_.items()},
                      tuple((paths[i], skipped[i]) for i in sorted(skipped)), where, decoded=len(todo),
                      content={path: f.content_sha256 for path, f in files_.items()})


def _write_pixels(tmp: Path, settings: dict, paths: list[str], size: tuple[int, int], max_pixels: int,
                  old: Optional[CacheIndex], old_pixels: Optional[np.ndarray], todo: set[int],
                  workers: Optional[int], progress: Optional[Progress]):
    """The .npy at `tmp`, every block reserved before a byte goes through the map (a full
    disk is then an OSError here, not a SIGBUS later). Returns ({i: (content sha256, pixels
    sha256)} of the rows written, {i: reason} of the files that could not be read)."""
    if not paths:
        np.save(tmp, _empty(settings), allow_pickle=False)
        return {}, {}
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *size, 3))
    try:
        _reserve(tmp, out.offset)
        kept: dict[int, tuple[str, str]] = {}
        skipped: dict[int, str] = {}
        if old is not None:
            _copy_valid_rows(old, old_pixels, paths, todo, out, kept, skipped)
        failures, digests = decode_into(out, [(i, paths[i]) for i in sorted(todo)], size, max_pixels,
                                        workers, progress, settings["preprocessing"])
        skipped.update(failures)
        kept.update(digests)
        out.flush()
    finally:
        del out
    return kept, skipped


def _reserve(path: Path, start: int) -> None:
    """Allocate every block of the (sparse) file from `start` (the end of the .npy header) now:
    pages written through a memory map onto a full disk raise SIGBUS, which kills the process
    with no message. Where the system has no fallocate (macOS) or the filesystem refuses it,
    zeros are written instead, which reserves the blocks as well."""
    fd = os.open(path, os.O_RDWR)
    try:
        end = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, start, end - start)
            return
        except AttributeError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        zeros = bytes(1 << 20)
        offset = start
        while offset < end:  # a write may be short (the disk filled up): the next one says why
            offset += os.pwrite(fd, zeros[:end - offset], offset)
    finally:
        os.close(fd)


def _copy_valid_rows(old: CacheIndex, old_pixels: np.ndarray, paths: list[str], todo: set[int],
                     out: np.ndarray, kept: dict, skipped: dict) -> None:
    """Rows of the old cache that are still valid (checked by `_stale`), copied a few at a time."""
    keep = [i for i in range(len(paths)) if i not in todo]
    for start in range(0, len(keep), COPY_ROWS):
        sources, targets = [], []
        for i in keep[start:start + COPY_ROWS]:
            hit = old.files.get(paths[i])
            if hit is not None:
                sources.append(hit.row)
                targets.append(i)
                kept[i] = (hit.content_sha256, hit.pixels_sha256)
            else:
                skipped[i] = old.skipped[paths[i]].reason
        if targets:
            out[np.asarray(targets)] = old_pixels[np.asarray(sources)]


def _remove_stale_files(where: Path, current: Optional[str], older_than: float = 3600.0) -> None:
    """Temporary .npy files of runs killed while writing, and pixel files no index names
    (two processes that refreshed the entry at once leave the loser's): an hour old at
    least, so a file another process is writing or reading right now is left alone."""
    now = time.time()
    for path in [*where.glob(".pixels-*.npy.tmp"), *where.glob("pixels-*.npy")]:
        if path.name == current:
            continue
        try:
            if now - path.stat().st_mtime > older_than:
                path.unlink()
        except OSError:
            pass


@contextmanager
def rate_reporter(log: Log, label: str, total: int, every: float = 10.0) -> Iterator[Advance]:
    """A plain-text progress for logs without a terminal bar: a line every `every` seconds
    with the count and images per second (the caller reports the total)."""
    start = last = time.perf_counter()
    done = 0

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last >= every:
            last = now
            log(f"  {label}: {done}/{total} ({done / (now - start):.0f} images/s)")

    yield advance


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
                  workers: int | None = None, cache_dir=None,
                  version: int = PREPROCESSING_VERSION, max_pixels: int = DEFAULT_MAX_PIXELS) -> LabelledImages:
    """(path, label) pairs -> LabelledImages; an unreadable file is skipped, not fatal, and
    so is one of more than `max_pixels`. `advance(n)` as files are decoded drives a progress
    bar; `version` as in load_image.

    Decoded in parallel, once, into the on-disk pixel cache (`prepare`):
    `pixels` is memory-mapped from it, so a large split is not held in memory and the
    next export or bench of the same files reads it back instead of decoding."""
    items = [(str(path), int(label)) for path, label in items]

    @contextmanager
    def progress(_label, _total):
        yield advance or (lambda _n: None)

    cache = prepare([path for path, _ in items], size, max_pixels=max_pixels, workers=workers,
                    cache_dir=cache_dir, progress=progress, preprocessing=version)
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
