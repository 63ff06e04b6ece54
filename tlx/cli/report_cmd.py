"""`tlx report`: a run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import EXIT_INCOMPLETE, print_json, user_errors
from tlx.text import printable


@command(short_help="Write a run's report.html: learning curves, float vs int8, devices.")
def report(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="A `tlx train` run folder (after export and bench), or a `tlx sweep` folder "
                                "(its models on each --device: Pareto front and pick per budget).",
        show_default=False)],
    device: Annotated[Optional[List[Path]], typer.Option(
        "--device", metavar="JSON", help="A result .json of `tlx bench BUNDLE` on a device; repeat for "
                                         "several. Shown side by side with the host.",
        show_default="none")] = None,
    as_json: options.Json = False,
) -> None:
    """Regenerate RUN_DIR/report.html, one self-contained file.

    Dataset, learning curves, predictions, the float vs int8 table, the accuracy/latency chart
    and the confusion matrices, images inlined; with --device, the host and each device side
    by side. A device result is checked before use: a damaged file, or one measured on
    another model or export of the run, is refused with the reason. Given a `tlx sweep`
    folder: SWEEP_DIR/report.html with, per --device, accuracy against device latency, the
    Pareto front and the pick per latency budget (a result of another sweep is refused).

    Prints the report's path; --json prints "report" (that path), "complete" (true or false)
    and "missing" (what the run lacks, e.g. the bench; a sweep folder's report is always
    complete: pending or failed candidates are listed in it).

    Exit codes: 0 the report is written; 3 the report is written but the run is incomplete
    (the report names what is missing); 1 an error, no report written; 130 interrupted by
    Ctrl-C (143: SIGTERM)."""
    from tlx.report import missing_parts, write_report
    from tlx.run_dir import RunDir
    from tlx.sweep.bundle import is_sweep_dir

    if is_sweep_dir(run_dir):  # a `tlx sweep` folder: its models on each device (tlx.sweep.device_report)
        from tlx.sweep.device_report import write_sweep_report

        with user_errors():
            path = write_sweep_report(run_dir, device or ())
        if as_json:
            print_json({"report": str(path), "complete": True, "missing": []})
        else:
            typer.echo(printable(path))
        return
    with user_errors():
        path = write_report(run_dir, devices=device or ())
        missing = missing_parts(RunDir(run_dir))
    if as_json:
        print_json({"report": str(path), "complete": not missing, "missing": list(missing)})
    else:
        typer.echo(printable(path))
    if missing:
        typer.secho(f"The run is incomplete (missing: {', '.join(missing)}); the report says so.",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INCOMPLETE)
