"""Errors a user can cause. The CLI prints their message and exits non-zero, no traceback."""


class TlxError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

    exit_code = 1


class BusyError(TlxError):
    """Another process holds the lock of a folder this one would write (tlx.files.exclusive)."""


class MissingDependencyError(TlxError):
    """An optional dependency (an install extra) is not installed."""

    def __init__(self, what: str, extra: str):
        super().__init__(
            f"{what} needs the '{extra}' extra, which is not installed.\n"
            f"Install it with:  pip install 'tlx-edge[{extra}]'"
        )


class ImageError(TlxError):
    """One image could not be read; callers usually skip it and report it."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error's text, at most `limit` characters: a library's message
    (a converter's runs to pages of MLIR) shown inside one of tlx's."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
