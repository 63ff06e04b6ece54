"""The typer app every command registers on. Its own module so that the command modules
import it from here and `tlx.cli` imports them: the arrows point one way."""

from __future__ import annotations

import typer

import tlx

app = typer.Typer(
    name="tlx",
    help="Transfer learning to the edge: train an image classifier on a folder of photos, "
         "export it to TFLite (float and int8), run and benchmark it on a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tlx {tlx.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass
