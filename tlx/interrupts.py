"""Ctrl-C and SIGTERM for the `tlx` command: one clean stop, whenever they arrive.

`install()` runs before the command imports anything else (tlx.__main__), so a Ctrl-C during
start-up (imports, loading a model) stops as cleanly as one during the work: a message and
exit 130, never a traceback. SIGTERM (what `kill`, systemd and container runtimes send) is
handled the same way, as `Terminated`, a KeyboardInterrupt, so every `except KeyboardInterrupt`
that closes files and removes temp files also runs for it; exit 143.

Only the first signal raises. Those that follow while the process is stopping are noted on
stderr and ignored: a second Ctrl-C must not cut short the cleanup the first one started
(closing and checking a video, removing a temp file), and an uncaught KeyboardInterrupt would
make Python end the process by SIGINT. Ctrl-\\ (SIGQUIT) still ends it at once.

Standard library only: this module is imported before anything else.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing's names are not imported at run time: this module loads first
    from collections.abc import Callable, Iterator

#: Exit codes after a stop by signal, as shells report them (128 + the signal number).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same cleanup runs."""


class _State:
    installed = False
    #: The first signal received (the one that raised), or None.
    received: int | None = None
    #: >0 inside `deferred()`: a signal is held until the block ends.
    deferring = 0
    held: int | None = None
    announced = False


_state = _State()


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, frame) -> None:
    if _state.received is not None:
        # os.write, not sys.stderr: the main thread may be inside a write to sys.stderr.
        os.write(2, b"\nStill stopping: closing files, please wait.\n")
        return
    if _state.deferring:
        _state.held = _state.held or signum
        return
    _state.received = signum
    raise _exception(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through the one-stop handler (main thread only). A signal the
    process was started with ignored (`nohup`, a background job) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _handler)
    _state.installed = True


@contextmanager
def deferred() -> Iterator[None]:
    """A signal arriving inside the block is raised when the block ends, not in the middle of
    it: for the few lines that create or rename a temp file and must run whole. Without
    `install()` (tlx used as a library) this does nothing."""
    if not _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.held is not None and _state.received is None:
            signum, _state.held = _state.held, None
            _state.received = signum
            raise _exception(signum)


def exit_code(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def stop_message(exc: BaseException | None = None) -> str:
    """"Interrupted." (Ctrl-C) or "Terminated." (SIGTERM), for whoever handles the stop to
    print; `run` prints it at the end only if nobody asked for it."""
    _state.announced = True
    terminated = isinstance(exc, Terminated) or (exc is None and _state.received == signal.SIGTERM)
    return "Terminated." if terminated else "Interrupted."


def _announce(exc: BaseException | None = None) -> None:
    if not _state.announced:
        sys.stderr.write(stop_message(exc) + "\n")
        sys.stderr.flush()


def received() -> int | None:
    """The signal that stopped the process (SIGINT or SIGTERM), or None."""
    return _state.received


def run(load: Callable[[], Callable[[], None]]) -> None:
    """Install the handlers, import the command with `load()` (a signal meanwhile is held
    until the imports are done: a KeyboardInterrupt inside an import can come out as another
    exception), then run it. A stop by signal that nothing below reported ends with a message
    and exit 130 (143 for SIGTERM)."""
    install()
    try:
        with deferred():
            command = load()
        command()
    except KeyboardInterrupt as exc:  # start-up: before any command's own handling
        if _state.received is None:  # raised by other code (a held Ctrl-C): stopping now too
            _state.received = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        _announce(exc)
        sys.exit(exit_code(exc))
    except SystemExit as done:
        # The CLI framework turns a Ctrl-C during argument parsing into a silent exit 130.
        if _state.received is not None and done.code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            _announce()
            sys.exit(EXIT_TERMINATED if _state.received == signal.SIGTERM else EXIT_INTERRUPTED)
        raise
    finally:
        if _state.received is not None:
            # Python's shutdown puts the default action back for handlers written in Python,
            # so a second Ctrl-C during it would still end the process by SIGINT. Ignoring
            # is kept (and the work is done).
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
            # CPython marks a KeyboardInterrupt that left an eval() of a string (typer
            # evaluates annotations with one) as uncaught, and then ends the process by
            # SIGINT after our exit code was chosen (seen: exit -2 after "Interrupted.").
            # Every eval() of a string clears that mark first.
            eval("None")
