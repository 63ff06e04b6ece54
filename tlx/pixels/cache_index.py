"""index.json of a pixel cache entry: one typed schema, parsed in one place, with bounds.

The index is a file from elsewhere (any user or tool may have edited it), so nothing reads
it but `CacheIndex.from_json`, which checks every field's type and bounds (row numbers,
counts, string lengths, hash shapes) and raises `CacheError` with a reason; the caller
rebuilds the entry with a message. No TensorFlow.

What identifies a file on disk is its `FileStamp`: size, mtime, ctime and inode. Size and
mtime can be set back by ordinary tools (`touch -d`, `cp -p`, a restore); ctime and inode
cannot: every rewrite or replacement changes them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

#: Bump when the layout of index.json or the .npy changes.
CACHE_FORMAT = 2
#: No index is read beyond this size (about 200 bytes per file: millions of files).
MAX_INDEX_BYTES = 1 << 30
#: Bounds on an index's counts and strings.
MAX_ROWS = 20_000_000
MAX_PATH_CHARS = 4096
MAX_REASON_CHARS = 2000
#: Hex SHA-256 of a file's bytes, or of a row's pixels.
HEX_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
PIXELS_NAME = re.compile(r"pixels-[0-9a-f]{12}\.npy\Z")
_INT64 = (-(1 << 63), (1 << 63) - 1)


class CacheError(Exception):
    """A cache that must not be used; the message says why."""


@dataclass(frozen=True)
class FileStamp:
    """What changes when a file is rewritten or replaced (ctime and inode cannot be set back)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path) -> Optional["FileStamp"]:
        """The file's stamp, None when it cannot be stat'ed."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        return cls(int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino))

    def to_json(self) -> list:
        return [self.size, self.mtime_ns, self.ctime_ns, self.inode]

    @classmethod
    def from_json(cls, value, what: str) -> "FileStamp":
        if not isinstance(value, list) or len(value) != 4:
            raise CacheError(f"{what}: a stamp is not [size, mtime, ctime, inode]")
        size, mtime, ctime, inode = (_int(v, what) for v in value)
        if size < 0 or inode < 0:
            raise CacheError(f"{what}: a negative size or inode")
        return cls(size, mtime, ctime, inode)


@dataclass(frozen=True)
class CachedFile:
    """A decoded file: its row, its stamp then, and the hashes of its bytes and its row."""

    row: int
    stamp: FileStamp
    #: SHA-256 of the file's bytes when it was decoded (what split.json records).
    content_sha256: str
    #: SHA-256 of the row's pixels (after content_sha256), checked each time the row is read back.
    pixels_sha256: str


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be decoded: its stamp then (None: it could not be stat'ed), and why."""

    stamp: Optional[FileStamp]
    reason: str


@dataclass(frozen=True)
class CacheIndex:
    """index.json: the settings, the pixel file (name, row count, stamp) and every file."""

    settings: Mapping
    pixels: str
    rows: int
    pixels_stamp: FileStamp
    files: Mapping[str, CachedFile]
    skipped: Mapping[str, SkippedFile]

    def to_json(self) -> dict:
        return {**self.settings, "pixels": self.pixels, "rows": self.rows,
                "pixels_stamp": self.pixels_stamp.to_json(),
                "files": {path: [f.row, *f.stamp.to_json(), f.content_sha256, f.pixels_sha256]
                          for path, f in self.files.items()},
                "skipped": {path: [s.stamp.to_json() if s.stamp else None, s.reason]
                            for path, s in self.skipped.items()}}

    @classmethod
    def from_json(cls, obj, settings: Mapping) -> "CacheIndex":
        """The checked index; CacheError saying what is wrong otherwise."""
        if not isinstance(obj, dict):
            raise CacheError("the index is not a JSON object")
        for name, value in settings.items():
            if obj.get(name) != value:
                raise CacheError(f"made with {name} {obj.get(name)!r}, not {value!r}")
        pixels = obj.get("pixels")
        if not isinstance(pixels, str) or not PIXELS_NAME.match(pixels):
            raise CacheError("the index names no valid pixel file")
        rows = _int(obj.get("rows"), "rows")
        if not 0 <= rows <= MAX_ROWS:
            raise CacheError(f"the index counts {rows} rows (0 to {MAX_ROWS})")
        stamp = FileStamp.from_json(obj.get("pixels_stamp"), "pixels_stamp")
        files = _mapping(obj.get("files"), "files")
        skipped = _mapping(obj.get("skipped"), "skipped")
        if len(files) > rows:
            raise CacheError(f"the index lists {len(files)} files for {rows} rows")
        parsed = {path: _cached_file(path, value, rows) for path, value in files.items()}
        used = [f.row for f in parsed.values()]
        if len(set(used)) != len(used):
            raise CacheError("the index gives two files the same row")
        return cls(settings=dict(settings), pixels=pixels, rows=rows, pixels_stamp=stamp, files=parsed,
                   skipped={path: _skipped_file(path, value) for path, value in skipped.items()})


def _int(value, what: str) -> int:
    if type(value) is not int or not _INT64[0] <= value <= _INT64[1]:
        raise CacheError(f"{what}: {str(value)[:40]!r} is not a 64-bit integer")
    return value


def _mapping(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise CacheError(f"its {what!r} is not a JSON object")
    if len(value) > MAX_ROWS:
        raise CacheError(f"its {what!r} lists more than {MAX_ROWS} files")
    for path in value:
        if not 0 < len(path) <= MAX_PATH_CHARS:
            raise CacheError(f"its {what!r} lists a path of {len(path)} characters")
    return value


def _digest(value, what: str) -> str:
    if not isinstance(value, str) or not HEX_DIGEST.match(value):
        raise CacheError(f"{what}: not a SHA-256 in hex")
    return value


def _cached_file(path: str, value, rows: int) -> CachedFile:
    if not isinstance(value, list) or len(value) != 7:
        raise CacheError(f"the entry of {path[:200]!r} is not [row, size, mtime, ctime, inode, "
                         "content hash, pixels hash]")
    row = _int(value[0], path[:200])
    if not 0 <= row < rows:
        raise CacheError(f"the index names row {row} of {rows}")
    return CachedFile(row, FileStamp.from_json(value[1:5], path[:200]), _digest(value[5], path[:200]),
                      _digest(value[6], path[:200]))


def _skipped_file(path: str, value) -> SkippedFile:
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str) \
            or len(value[1]) > MAX_REASON_CHARS:
        raise CacheError(f"the skipped entry of {path[:200]!r} is not [stamp, reason]")
    stamp = None if value[0] is None else FileStamp.from_json(value[0], path[:200])
    return SkippedFile(stamp, value[1])
