"""`tlx inspect`: what is inside a .tflite file (ops, tensors, quantization, metadata), no TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import print_json, user_errors


@command("inspect")
def inspect(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="A .tflite file.", show_default=False)],
    as_json: options.Json = False,
) -> None:
    """Show what is inside a .tflite model, without TensorFlow.

    Operators and their counts (and the type each computes in), input and output tensors with
    quantization, the standard metadata (labels, normalization), tlx.json and sizes.

    --json prints the same as one document (ops, tensors, metadata, sizes).

    Exit codes: 0 shown; 1 an error (not a readable .tflite)."""
    with user_errors():
        from tlx.inspect import format_report, inspect_model

        report = inspect_model(model)
        if as_json:
            print_json(report.to_json())
        else:
            typer.echo(format_report(report))
