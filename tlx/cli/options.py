"""The options several commands share, declared once: the same spelling, type, metavar,
bounds and help text wherever they appear (a command gives its own default, and `--out`
its own description of what it writes).

Each is an `Annotated[...]` type for a command's signature, e.g.
`as_json: options.Json = False`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.drop import DropGate
from tlx.runtime.backends import ALIASES, AUTO, BACKENDS, resolve_name
from tlx.errors import TlxError

JSON_HELP = ("Print the result as one JSON document on stdout instead of text (its fields: see "
             "above); messages go to stderr.")
#: --json: the command's docstring says what the document holds.
Json = Annotated[bool, typer.Option("--json", help=JSON_HELP)]

THREADS_HELP = ("Interpreter threads. `tlx bench` times each count of a comma-separated list "
                "(e.g. 1,2,4); `tlx predict` takes one.")


def threads_option(show_default: bool | str = True):
    """--threads (a string, parsed by `thread_counts`); `show_default`: the default as text
    when the value's default is None."""
    return typer.Option("--threads", metavar="N[,N...]", help=THREADS_HELP, show_default=show_default)


BACKEND_HELP = ("Interpreter: auto (ai-edge-litert if installed, else tflite-runtime), "
                f"{', '.join(BACKENDS)} (tensorflow only when named). `tlx bench BUNDLE` takes "
                "several, comma separated; the other commands take one.")
#: --backend, parsed by `backend_names`.
Backend = Annotated[Optional[str], typer.Option(
    "--backend", metavar="NAME[,NAME...]", help=BACKEND_HELP, show_default="auto")]

MAX_DROP_HELP = ("Quality gate: exit with code 3 when int8 top-1 on the test photos is more than "
                 "POINTS percentage points below the reference (see above); the outputs are kept.")
MaxDrop = Annotated[Optional[float], typer.Option(
    "--max-drop", min=0.0, metavar="POINTS", help=MAX_DROP_HELP, show_default="none: no gate")]

MAX_DROP_ON_HELP = ("What --max-drop holds to the limit: point, the measured drop, or upper, the upper "
                    "bound of its paired 95% interval (passes only when the test photos show the drop "
                    "is within the limit; needs --max-drop).")
MaxDropOn = Annotated[DropGate, typer.Option(
    "--max-drop-on", case_sensitive=False, metavar="point|upper", help=MAX_DROP_ON_HELP)]

DATA_DIR_HELP = "Where the run's photos are now, if the data folder moved since `tlx train`."
DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", metavar="DIR", help=DATA_DIR_HELP, show_default="the folder recorded in split.json")]

IMAGE_SIZE_HELP = "Side of the square model input, in pixels."
ImageSize = Annotated[Optional[int], typer.Option("--image-size", min=32, metavar="PIXELS", help=IMAGE_SIZE_HELP)]
#: The same option where the backbone decides when it is not given (tlx train).
BackboneImageSize = Annotated[Optional[int], typer.Option(
    "--image-size", min=32, metavar="PIXELS", help=IMAGE_SIZE_HELP,
    show_default="the backbone's native size, `tlx backbones` (160 for mobilenet_v2)")]

PHASE1_EPOCHS_HELP = "Epochs with the backbone frozen (Adam)."
Phase1Epochs = Annotated[int, typer.Option("--phase1-epochs", min=0, help=PHASE1_EPOCHS_HELP)]
PHASE2_EPOCHS_HELP = "Fine-tuning epochs (RMSprop at a tenth of the learning rate)."
Phase2Epochs = Annotated[int, typer.Option("--phase2-epochs", min=0, help=PHASE2_EPOCHS_HELP)]


def out_option(help: str, metavar: str = "PATH"):
    """--out / -o: every command that writes names its output with it; `help` says what it
    writes and its default."""
    return typer.Option("--out", "-o", metavar=metavar, help=help, show_default=False)


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def thread_counts(value: str, *, one: bool = False) -> tuple[int, ...]:
    """--threads as a tuple of counts (`one`: exactly one), or BadParameter."""
    try:
        threads = tuple(int(part) for part in _comma_list(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give thread counts separated by commas, e.g. 1,2,4",
                                 param_hint="--threads") from None
    if not threads or min(threads) < 1:
        raise typer.BadParameter(f"{value!r}: thread counts must be 1 or more", param_hint="--threads")
    if one and len(threads) > 1:
        raise typer.BadParameter(f"{value!r}: one thread count here (`tlx bench` times several)",
                                 param_hint="--threads")
    return threads


def backend_names(value: str, *, one: bool = False) -> tuple[str, ...]:
    """--backend as a tuple of names as given (each checked: a registry key, an alias or
    auto; `one`: exactly one), or BadParameter."""
    names = tuple(_comma_list(value))
    if not names:
        raise typer.BadParameter(f"{value!r}: name a backend", param_hint="--backend")
    if one and len(names) > 1:
        raise typer.BadParameter(f"{value!r}: one backend here (`tlx bench BUNDLE` runs several)",
                                 param_hint="--backend")
    for name in names:
        try:
            resolve_name(name)
        except TlxError:
            raise typer.BadParameter(
                f"unknown backend {name!r}; choose {AUTO}, {', '.join(BACKENDS)} "
                f"(or {', '.join(ALIASES)})", param_hint="--backend") from None
    return names
