"""What every command shares: user errors as a message and an exit code, JSON on stdout,
the stderr log line and progress bar."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

import typer

from tlx import interrupts
from tlx.errors import TlxError
from tlx.text import printable

#: Exit code after Ctrl-C, as shells report it (SIGTERM: tlx.interrupts.EXIT_TERMINATED).
EXIT_INTERRUPTED = interrupts.EXIT_INTERRUPTED
#: Exit code when a quality gate (--max-drop) fails: the work is done and kept, but the
#: int8 model lost more accuracy than allowed. Distinct from 1 (an error) for scripts.
EXIT_QUALITY_GATE = 3
#: Exit code of `tlx report` when the report is written but the run is incomplete (no bench,
#: no plots...): like the quality gate, the output is kept and a script should look; 1
#: always means an error and no new file.
EXIT_INCOMPLETE = 3


@contextmanager
def user_errors():
    """A TlxError becomes 'Error: ...' on stderr and a non-zero exit; Ctrl-C exits 130.
    Messages quote file names and values from files: each line is shown printable."""
    try:
        yield
    except TlxError as exc:
        message = "\n".join(printable(line) for line in str(exc).split("\n"))
        typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (tlx.interrupts.Terminated): 143
        typer.secho(interrupts.stop_message(exc), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(interrupts.exit_code(exc)) from None


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def say(message: str) -> None:
    """The CLI's Log (tlx.progress): one "... step" line on stderr, which leaves stdout to the
    results (and --json's document). Steps name models and files: shown printable."""
    typer.echo(f"... {printable(message)}", err=True)


@contextmanager
def progress_bar(label: str, total: int, unit: str | None = None):
    """The CLI's Progress (tlx.progress): a bar on stderr, for the same reason. With `unit`
    ("images") it also shows the rate, e.g. "812 images/s"."""
    if unit is None:
        with typer.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar.update
        return
    start = time.perf_counter()
    done = 0

    def rate(_item) -> str:
        seconds = time.perf_counter() - start
        return f"{done / seconds:,.0f} {unit}/s" if done and seconds > 0 else ""

    with typer.progressbar(length=total, label=label, file=sys.stderr, item_show_func=rate) as bar:
        def advance(n: int) -> None:
            nonlocal done
            done += n
            bar.update(n)

        yield advance
