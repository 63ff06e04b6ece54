"""`tlx demo`: the whole pipeline on an offline dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import print_json, user_errors
from tlx.text import printable
from tlx.datasets import DATASETS
from tlx.demo import DemoConfig

_DEFAULTS = DemoConfig()


def _say(message: str) -> None:
    typer.echo(printable(message), err=True)


@command(short_help="Train, export, bench and report on real photos, offline.")
def demo(
    dataset: Annotated[str, typer.Option(
        metavar="|".join(DATASETS),
        help="Offline dataset: " + "; ".join(f"{name}: {spec.description}" for name, spec in DATASETS.items())
             + ".")] = _DEFAULTS.dataset,
    out: Annotated[Path, options.out_option(
        f"Folder for the prepared data and the run (OUT/run). Default: {_DEFAULTS.out}.", metavar="DIR")]
        = _DEFAULTS.out,
    phase1_epochs: options.Phase1Epochs = _DEFAULTS.phase1_epochs,
    phase2_epochs: options.Phase2Epochs = _DEFAULTS.phase2_epochs,
    image_size: options.ImageSize = _DEFAULTS.image_size,
    limit: Annotated[int, typer.Option(min=0, help="Images per class (0: all).")] = _DEFAULTS.limit,
    as_json: options.Json = False,
) -> None:
    """The whole story on real photos, offline: train, export, bench, report.

    Prepares a dataset, trains (pretrained EfficientNet-Lite0, both phases), exports float32
    and int8, benchmarks them and writes OUT/run/report.html. Run it again after an
    interruption to finish where it stopped.

    Prints the report's path; --json prints "report" (that path) and "run_dir" (the run
    folder, for `tlx predict`, `tlx bundle` ...).

    Exit codes: 0 done; 1 an error; 130 interrupted by Ctrl-C (143: SIGTERM)."""
    from tlx.demo import run_demo

    if dataset not in DATASETS:
        raise typer.BadParameter(f"{dataset!r}: choose one of {', '.join(DATASETS)}", param_hint="--dataset")
    config = DemoConfig(dataset=dataset, out=out, phase1_epochs=phase1_epochs, phase2_epochs=phase2_epochs,
                        image_size=image_size, limit=limit)
    with user_errors():
        path = run_demo(config, log=_say)
    if as_json:
        print_json({"report": str(path), "run_dir": str(path.parent)})
    else:
        typer.echo(printable(path))
