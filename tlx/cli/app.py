"""The typer app every command registers on. Its own module so that the command modules
import it from here and `tlx.cli` imports them: the arrows point one way.

Commands register with `command(...)` (not `app.command`) so that every `--help` reads the
same way: arguments and options show a plain metavar (RUN_DIR, PATH, N, a|b|c) instead of
typer's `<path>` / `<list[str]>` type labels and `{RUN_DIR}` usage braces."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

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

#: The metavar of an option that declares none, by the type of its value.
_METAVARS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _option_metavar(option: TyperOption) -> str:
    annotation = option.type_descriptor.annotation
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "|".join(str(member.value) for member in annotation)
    return _METAVARS.get(annotation, "VALUE")


def _argument_name(argument: TyperArgument) -> str:
    return (argument.metavar or argument.name.upper()) + ("..." if argument.nargs != 1 else "")


class TlxCommand(TyperCommand):
    """A typer command whose help uses plain metavars (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperOption) and param.metavar is None and not param.is_flag:
                param.metavar = _option_metavar(param)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def command(*args, **kwargs):
    """`app.command`, with the help layout every tlx command shares."""
    return app.command(*args, cls=TlxCommand, **kwargs)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tlx {tlx.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass
