"""`tlx export`: a `tlx train` run -> .tflite files with preprocessing, metadata and parity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import EXIT_QUALITY_GATE, print_json, progress_bar, user_errors
from tlx.drop import DropGate, drop_text, gate_text
from tlx.export.export import ExportConfig
from tlx.export.fallback import FallbackMode
from tlx.export.formats import ExportFormat, OutputType, describe_formats

_DEFAULTS = ExportConfig(run_dir=Path("."))


@command("export", short_help="Export a trained run to TFLite (float32, float16, dynamic, int8).")
def export(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR",
        help="The --out folder of a `tlx train` run (model.keras, labels.txt, split.json, config.json).",
        show_default=False)],
    formats: Annotated[Optional[List[ExportFormat]], typer.Option(
        "--format", "-f", case_sensitive=False, metavar="FORMAT",
        help=f"Format to write; repeat for several. Default: {' and '.join(_DEFAULTS.formats)}. "
             f"{describe_formats()}.", show_default=False)] = None,
    out: Annotated[Optional[Path], options.out_option(
        "Output folder. Default: RUN_DIR/export. Files of formats not exported this time are "
        "removed from it, so it describes one model.", metavar="DIR")] = None,
    output_type: Annotated[OutputType, typer.Option(
        "--output-type", case_sensitive=False,
        help="Output tensor type of the int8 file (probabilities; uint8 scale 1/256).")]
        = _DEFAULTS.output_type,
    calibration_samples: Annotated[int, typer.Option(
        "--calibration-samples", min=1,
        help="Training images that calibrate int8: class-balanced, deterministic, "
             "never test images.")] = _DEFAULTS.calibration_samples,
    max_drop: options.MaxDrop = None,
    max_drop_on: options.MaxDropOn = _DEFAULTS.max_drop_on,
    fallback: Annotated[FallbackMode, typer.Option(
        "--fallback", case_sensitive=False,
        help="auto: if int8 accuracy on the run's validation images is more than --max-drop "
             "points below Keras, keep the layers int8 hurts most in float (ranked by "
             "TensorFlow's quantization debugger on calibration images), one more per step, "
             "until it is within --max-drop or the step limit is reached; the steps go to "
             "export.json, the per-layer errors to fallback_layers.csv and .png. Needs "
             "--max-drop and --format int8. none: plain int8.")] = _DEFAULTS.fallback,
    data_dir: options.DataDir = None,
    as_json: options.Json = False,
) -> None:
    """Export a trained run to TFLite: raw 0..255 RGB pixels in, one probability per label out.

    Every file has the backbone's normalization inside, standard TFLite Metadata and tlx's own.

    int8 takes uint8 pixels with scale 1 and zero point 0.

    Each file is then checked against the Keras model on the run's test images.

    --max-drop compares int8 with the Keras model on the test split, on ai-edge-litert's
    default kernels and on the builtin ones tflite-runtime uses (--max-drop-on upper: the upper
    bound of the drop's paired 95% interval); a failed gate is marked in export.json. --json
    prints export.json's content.

    Exit codes: 0 exported; 3 exported, but the --max-drop gate failed; 1 an error; 130
    interrupted by Ctrl-C (143: SIGTERM).
    """
    with user_errors():
        from tlx.export.export import export_run

        names = tuple(f.value for f in formats) if formats else _DEFAULTS.formats
        config = ExportConfig(run_dir=run_dir, formats=names, out_dir=out, output_type=output_type,
                              calibration_samples=calibration_samples, max_drop=max_drop,
                              max_drop_on=max_drop_on,
                              fallback=fallback, data_dir=data_dir)
        log = (lambda message: None) if as_json else (lambda message: typer.echo(message, err=True))
        _print_result(export_run(config, progress=progress_bar, log=log), as_json=as_json,
                      max_drop_on=max_drop_on)


def _print_result(result, as_json: bool, max_drop_on: DropGate) -> None:
    """What `tlx export` prints of its result: the files, the fallback's steps and the parity
    table (or --json: export.json's content), warnings; exit 3 when the --max-drop gate failed."""
    from tlx.export.parity import format_table

    if as_json:
        print_json(result.summary)
    else:
        for name, path in result.files.items():
            typer.echo(f"{name:8} {path}  ({path.stat().st_size / 1e6:.2f} MB)")
        if result.fallback is not None:
            typer.echo(_fallback_table(result.fallback))
        if result.parity is not None:
            typer.echo(format_table(result.parity))
        typer.echo(f"Details: {result.out_dir / 'export.json'}")
    for warning in result.warnings:
        typer.secho(f"Warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if not result.passed:
        gate = result.summary["max_drop"]
        drop = gate["int8_drop_points"]
        what = ("no test image was readable, so the int8 drop is unknown" if drop is None else
                f"int8 accuracy is {drop_text(result.parity.get(gate['measured_on']).drop)} points "
                "below Keras (in brackets: the paired 95% interval)")
        limit = gate_text(gate["limit_points"], max_drop_on)
        typer.secho(f"--max-drop {limit}: {what}. The files are kept and "
                    "marked in export.json.", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_QUALITY_GATE)


def _fallback_table(result) -> str:
    from tlx.export.fallback_report import format_steps

    verdict = "within" if result.passed else "NOT within"
    return (f"int8 float fallback, decided on the validation images (Keras "
            f"{result.reference_accuracy:.1%}; chosen step {result.chosen_step.step}, {verdict} "
            f"--max-drop {result.max_drop_points:g}):\n{format_steps(result)}")
