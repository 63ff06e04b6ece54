"""Atomic writes: a temp file in the same folder, then rename. An interrupted write
never leaves a half file under the final name."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`. `suffix` ends the
    temporary name (writers that choose the format by suffix, like video writers, need it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the permissions of a normal new file.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def require_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Create folder `path` if needed and check that files can be written in it, before any
    slow work; TlxError naming `option` otherwise."""
    from tlx.errors import TlxError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TlxError(f"{option} {path} is a file, not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TlxError(f"{option} {path} is not writable ({exc.strerror or exc}). "
                       "Choose a folder you can write to.") from None
    return path


@contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the folder itself: no lock file to leave
    behind, and the kernel drops it when the process dies). A second holder is refused with a
    TlxError instead of waiting: two writers would delete each other's files."""
    from tlx.errors import BusyError

    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"Another {what} is writing to {folder} right now. Wait for it to finish, "
                           "or choose another folder.") from None
        yield
    finally:
        os.close(fd)


def user_cache_dir() -> Path:
    """tlx's user cache folder: $XDG_CACHE_HOME/tlx, default ~/.cache/tlx (converted
    pretrained weights, the pixel cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tlx"


def json_nodes(raw: bytes) -> tuple[int, int]:
    """(objects and lists, values) in JSON text, counted in the raw bytes before a parser
    builds anything: a JSON value costs Python 30-60 bytes against its 2-4 bytes of text, so a
    file's size alone does not bound the memory its parse takes. Brackets and commas inside
    strings count too: an over-count only errs on the safe side."""
    return raw.count(b"{") + raw.count(b"["), raw.count(b",")


class JsonFileError(Exception):
    """Why a JSON file from elsewhere was not read (read_json_bounded): `kind` is "missing",
    "unreadable", "too_large", "too_dense" or "not_json"; `detail` says more (the OS's reason,
    the counts, the parser's message). Each caller words it for its own file."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(detail or kind)
        self.kind, self.detail = kind, detail


def read_json_bounded(path: str | os.PathLike, limit: int, max_nodes: tuple[int, int] | None = None,
                      parse_constant=None) -> Any:
    """A JSON file from elsewhere, parsed only when it holds at most `limit` bytes and, with
    `max_nodes` (objects and lists, values: json_nodes), at most that many; JsonFileError
    otherwise, never a traceback (a deeply nested document is "not_json" too)."""
    try:
        data = read_bounded(Path(path), limit)
    except FileNotFoundError as exc:
        raise JsonFileError("missing", exc.strerror or str(exc)) from None
    except OSError as exc:
        raise JsonFileError("unreadable", exc.strerror or str(exc)) from None
    if data is None:
        raise JsonFileError("too_large")
    if max_nodes is not None:
        containers, values = json_nodes(data)
        if containers > max_nodes[0] or values > max_nodes[1]:
            raise JsonFileError("too_dense", f"{containers} objects and lists and {values} values")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=parse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JsonFileError("not_json", str(exc) or type(exc).__name__) from None


def read_bounded(path: Path, limit: int) -> bytes | None:
    """A file's bytes, or None when it holds more than `limit` (never read past limit + 1,
    so a huge file from elsewhere costs no memory). OSError as open() raises it."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data
