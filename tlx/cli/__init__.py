"""The `tlx` command. Thin: each command parses options, builds a config and calls one
library function. Importing this package (and `tlx --help`) never imports TensorFlow:
commands import their heavy modules inside the function body.
"""

from __future__ import annotations

import os

import typer

import tlx

app = typer.Typer(
    name="tlx",
    help="Transfer learning to the edge: train an image classifier on a folder of photos, "
         "export it to TFLite (float and int8), run and benchmark it on a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tlx {tlx.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


# Each module adds its command(s) to `app` when imported.
# In pipeline order, which is the order `tlx --help` lists them.
from tlx.cli import train_cmd  # noqa: E402,F401
from tlx.cli import export_cmd  # noqa: E402,F401
from tlx.cli import predict_cmd  # noqa: E402,F401
from tlx.cli import bench_cmd  # noqa: E402,F401
from tlx.cli import demo_cmd  # noqa: E402,F401
from tlx.cli import backbones_cmd  # noqa: E402,F401
from tlx.cli import inspect_cmd  # noqa: E402,F401


def main() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is not for our users;
    # TF_CPP_MIN_LOG_LEVEL=0 brings it back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()
