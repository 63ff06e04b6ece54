"""`tlx bench RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.bench.bench import BenchConfig
from tlx.bench.options import MeasureOptions
from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import EXIT_QUALITY_GATE, print_json, say, user_errors
from tlx.drop import gate_text

_DEFAULTS = BenchConfig(run_dir=Path("."))
_MEASURE = _DEFAULTS.measurement


@command(short_help="Measure accuracy, latency, size and memory of exported models.")
def bench(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR|BUNDLE",
        help="A `tlx train` run folder with `tlx export` output, or a file from `tlx bundle`.")],
    threads: Annotated[str, options.threads_option()] = ",".join(map(str, _MEASURE.threads)),
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per model and thread count.")] = _MEASURE.runs,
    warmup: Annotated[int, typer.Option(min=0, help="Discarded warm-up runs before timing.")]
        = _MEASURE.warmup,
    backend: options.Backend = None,
    compare_backends: Annotated[bool, typer.Option(
        "--compare-backends", help="Run every .tflite on each installed backend, side by side.")]
        = _DEFAULTS.compare_backends,
    max_drop: options.MaxDrop = None,
    max_drop_on: options.MaxDropOn = _MEASURE.max_drop_on,
    keras: Annotated[bool, typer.Option(
        help="Evaluate the Keras model as the reference (needs TensorFlow).")] = _DEFAULTS.include_keras,
    cold_start: Annotated[bool, typer.Option(
        help="Measure `tlx predict` start-up time and peak memory in a fresh process.")]
        = _MEASURE.cold_start,
    data_dir: options.DataDir = None,
    out: Annotated[Optional[Path], options.out_option(
        "BUNDLE only: write the result to OUT.json and OUT.md (OUT a folder: <bundle name>-<host "
        "name>.json and .md in it). Checked before the benchmark runs. Default: <bundle name>-<host "
        "name> in the current folder.", metavar="OUT")] = None,
    emulated: Annotated[Optional[str], typer.Option(
        metavar="TEXT", help="BUNDLE only: this machine is an emulator (e.g. 'qemu-aarch64 -cpu "
                             "cortex-a72'): the result records it and shows no latency (not a device "
                             "figure).", show_default="none: a real device")] = None,
    as_json: options.Json = False,
) -> None:
    """Measure what int8 costs and buys: accuracy, latency, size, memory, on held-out images.

    Every exported model (and the Keras model when TensorFlow is installed) on the run's test
    split, through tlx.runtime: top-1 with a 95% Wilson interval, drop against Keras, latency
    percentiles per thread count, `tlx predict` cold start and peak memory. Writes
    RUN_DIR/bench/: bench.json, bench.md, accuracy_vs_latency.png, confusion_*.png.

    With a BUNDLE (from `tlx bundle`, on the device, no TensorFlow needed): every model on
    litert and tflite-runtime where installed (or --backend), accuracy, drop against the bundled Keras reference,
    agreement with it and with the host's outputs, latency, cold start, peak memory; writes
    OUT.json and OUT.md.

    --max-drop's reference is the Keras model (without TensorFlow: the first .tflite; for a
    BUNDLE: the bundled Keras outputs); --max-drop-on upper holds the upper bound of the
    drop's paired 95% interval to it instead of the measured drop. --json prints bench.json
    (for a BUNDLE: the device result, OUT.json's content).

    Exit codes: 0 measured; 3 measured, but the --max-drop gate failed; 1 an error; 130
    interrupted by Ctrl-C (143: SIGTERM)."""
    thread_list = options.thread_counts(threads)
    if backend is not None:
        options.backend_names(backend, one=not run_dir.is_file())  # checked here, passed on as given
    measurement = MeasureOptions(threads=thread_list, runs=runs, warmup=warmup,
                                 cold_start=cold_start, max_drop=max_drop, max_drop_on=max_drop_on)
    if run_dir.is_file():
        from tlx.cli.bundle_cmd import bench_bundle_command

        if data_dir is not None or compare_backends or not keras:
            raise typer.BadParameter("--data-dir, --compare-backends and --no-keras are for a run folder; "
                                     "a bundle holds its photos and Keras reference, and runs every "
                                     "installed backend unless --backend names one.")
        return bench_bundle_command(run_dir, measurement=measurement, backend=backend, out=out,
                                    emulated=emulated, as_json=as_json)
    if out is not None or emulated is not None:
        raise typer.BadParameter("--out and --emulated are for a bundle; a run folder's report goes "
                                 "to RUN_DIR/bench.")
    _bench_run_folder(BenchConfig(run_dir=run_dir, measurement=measurement, backend=backend,
                                  compare_backends=compare_backends, include_keras=keras,
                                  data_dir=data_dir), as_json=as_json)


def _bench_run_folder(config: BenchConfig, as_json: bool) -> None:
    """`tlx bench RUN_DIR`: measure, write RUN_DIR/bench, show the result; exit 3 when the
    --max-drop gate fails."""
    from tlx.bench.bench import run_bench
    from tlx.bench.report import cpu_lines, text_table, write
    from tlx.run_dir import RunDir
    from tlx.text import printable

    with user_errors():
        result = run_bench(config, log=say)
        written = write(result, RunDir(config.run_dir).bench)
    if result.unreadable:
        shown = "".join(f"\n  {printable(path)}: {printable(reason)}" for path, reason in result.unreadable[:5])
        more = f"\n  ... all {len(result.unreadable)} in bench.json" if len(result.unreadable) > 5 else ""
        typer.secho(f"Warning: {len(result.unreadable)} test image(s) could not be read and were left "
                    f"out:{shown}{more}", fg=typer.colors.YELLOW, err=True)
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(text_table(result))
        # What int8 latency to expect on this CPU: it differs more between CPUs than models.
        for line in cpu_lines(result.environment)[:1]:
            typer.echo("\n" + printable(line[2:]))
        typer.echo(f"\nReport: {printable(written['markdown'])}")
    if result.failed_drop:
        measurement = config.measurement
        typer.secho(f"int8 lost more than {gate_text(measurement.max_drop, measurement.max_drop_on)} "
                    f"against {printable(result.reference)}.",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_QUALITY_GATE)
