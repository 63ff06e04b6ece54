"""`tlx demo` and `tlx report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlx.cli.app import app
from tlx.cli.common import EXIT_INCOMPLETE, user_errors
from tlx.text import printable
from tlx.datasets import DATASETS
from tlx.demo import DemoConfig

_DEFAULTS = DemoConfig()


def _say(message: str) -> None:
    typer.echo(printable(message), err=True)


@app.command(short_help="Train, export, bench and report on real photos, offline.")
def demo(
    dataset: Annotated[str, typer.Option(
        help="Offline dataset: " + "; ".join(f"{name}: {spec.description}" for name, spec in DATASETS.items())
             + ".")] = _DEFAULTS.dataset,
    out: Annotated[Path, typer.Option(help="Folder for the prepared data and the run.")] = _DEFAULTS.out,
    phase1_epochs: Annotated[int, typer.Option(min=0, help="Epochs with the backbone frozen.")]
        = _DEFAULTS.phase1_epochs,
    phase2_epochs: Annotated[int, typer.Option(min=0, help="Fine-tuning epochs.")] = _DEFAULTS.phase2_epochs,
    image_size: Annotated[int, typer.Option(min=32, help="Side of the square model input.")]
        = _DEFAULTS.image_size,
    limit: Annotated[int, typer.Option(min=0, help="Images per class (0: all).")] = _DEFAULTS.limit,
) -> None:
    """The whole story on real photos, offline: train, export, bench, report.

    Prepares a dataset, trains (pretrained EfficientNet-Lite0, both phases), exports float32
    and int8, benchmarks them and writes OUT/run/report.html. Run it again after an
    interruption to finish where it stopped."""
    from tlx.demo import run_demo

    if dataset not in DATASETS:
        raise typer.BadParameter(f"{dataset!r}: choose one of {', '.join(DATASETS)}", param_hint="--dataset")
    config = DemoConfig(dataset=dataset, out=out, phase1_epochs=phase1_epochs, phase2_epochs=phase2_epochs,
                        image_size=image_size, limit=limit)
    with user_errors():
        path = run_demo(config, log=_say)
    typer.echo(printable(path))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="A `tlx train` run folder (after export and bench), or a `tlx sweep` folder "
                                "(its models on each --device: Pareto front and pick per budget).",
        show_default=False)],
    device: Annotated[Optional[List[Path]], typer.Option(
        "--device", metavar="JSON", help="A result .json of `tlx bench BUNDLE` on a device; repeat for several. "
                         "Shown side by side with the host.", show_default=False)] = None,
) -> None:
    """Regenerate RUN_DIR/report.html, one self-contained file.

    Dataset, learning curves, predictions, the float vs int8 table, the accuracy/latency chart
    and the confusion matrices, images inlined; with --device, the host and each device side
    by side. A device result is checked before use: a damaged file, or one measured on
    another model or export of the run, is refused with the reason. Given a `tlx sweep`
    folder: SWEEP_DIR/report.html with, per --device, accuracy against device latency, the
    Pareto front and the pick per latency budget (a result of another sweep is refused).

    Exit codes: 0 the report is written; 3 the report is written but the run is incomplete
    (the report names what is missing); 1 an error, no report written."""
    from tlx.report import missing_parts, write_report
    from tlx.run_dir import RunDir
    from tlx.sweep.bundle import is_sweep_dir

    if is_sweep_dir(run_dir):  # a `tlx sweep` folder: its models on each device (tlx.sweep.device_report)
        from tlx.sweep.device_report import write_sweep_report

        with user_errors():
            typer.echo(printable(write_sweep_report(run_dir, device or ())))
        return
    with user_errors():
        path = write_report(run_dir, devices=device or ())
        missing = missing_parts(RunDir(run_dir))
    typer.echo(printable(path))
    if missing:
        typer.secho(f"The run is incomplete (missing: {', '.join(missing)}); the report says so.",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INCOMPLETE)
