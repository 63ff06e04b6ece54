"""`tlx bundle RUN_DIR`, and `tlx bench BUNDLE` (called by bench_cmd for a file argument)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.bench.options import MeasureOptions
from tlx.bundle.make import BundleConfig
from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import EXIT_QUALITY_GATE, print_json, say, user_errors
from tlx.drop import gate_text
from tlx.errors import TlxError
from tlx.text import printable

_DEFAULTS = BundleConfig(run_dir=Path("."))


@command(short_help="Pack a run into one file to benchmark on a device.")
def bundle(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="A `tlx train` run folder with `tlx export` output, or a `tlx sweep` folder "
                                "(every finished candidate).", show_default=False)],
    out: Annotated[Optional[Path], options.out_option(
        "The bundle file to write. Default: <folder name>-bundle.zip here.", metavar="FILE")]
        = _DEFAULTS.out,
    max_images: Annotated[Optional[int], typer.Option(
        min=1, help="At most this many test photos, a class-stratified subset. Fewer photos: a "
                    "smaller file and a quicker device run, a wider interval.",
        show_default="all")] = _DEFAULTS.max_images,
    data_dir: options.DataDir = _DEFAULTS.data_dir,
    as_json: options.Json = False,
) -> None:
    """Pack a run for benchmarking on a device: one file to copy to the Raspberry Pi.

    Holds the exported .tflite files, the run's held-out test photos (the original files),
    the labels, and a manifest with the Keras model's probabilities on each photo and every
    model's outputs on every interpreter backend installed here, with SHA-256 hashes.
    On the device: `tlx bench BUNDLE` (no TensorFlow needed). Given a `tlx sweep` folder:
    every finished candidate's models, the shared test photos once.

    --json prints the summary: "path" (the bundle), "size_bytes", "models" (their names;
    <run>/<name> for a sweep folder), "images" (the test photos in it), "host_backends" (the
    backends whose outputs it holds) and "skipped" (photos left out: "path" and "reason").

    Exit codes: 0 written; 1 an error, no bundle written; 130 interrupted by Ctrl-C (143:
    SIGTERM)."""
    from tlx.bundle.make import make_bundle
    from tlx.sweep.bundle import is_sweep_dir, make_sweep_bundle

    config = BundleConfig(run_dir=run_dir, out=out, max_images=max_images, data_dir=data_dir)
    with user_errors():
        # A `tlx sweep` folder: every finished candidate, the shared test photos once.
        summary = (make_sweep_bundle(run_dir, out, max_images, data_dir=data_dir, log=say)
                   if is_sweep_dir(run_dir) else make_bundle(config, log=say))
    for path, reason in summary.skipped:
        typer.secho(printable(f"Warning: left out {path}: {reason}"), fg=typer.colors.YELLOW, err=True)
    if as_json:
        print_json(summary_json(summary))
        return
    typer.echo(printable(f"{summary.path}  ({summary.size_bytes / 1e6:.1f} MB: {', '.join(summary.models)}; "
                         f"{summary.images} photos; host results on {', '.join(summary.host_backends)})"))


def summary_json(summary) -> dict:
    """`tlx bundle --json`: the BundleSummary as plain JSON types."""
    return {"path": str(summary.path), "size_bytes": summary.size_bytes, "models": list(summary.models),
            "images": summary.images, "host_backends": list(summary.host_backends),
            "skipped": [{"path": str(path), "reason": reason} for path, reason in summary.skipped]}


def result_prefix(out: Optional[Path], default: Path) -> Path:
    """Where `tlx bench BUNDLE` writes PREFIX.json and PREFIX.md, checked before the benchmark
    runs: OUT (or, when OUT is a folder, the default name inside it), in a folder this process
    can write to, with no folder in the way of either file."""
    from tlx import files

    prefix = default if out is None else out / default.name if out.is_dir() else out
    for target in (prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")):
        if target.is_dir():
            raise TlxError(f"--out: {target} is a folder; choose another name.")
    files.require_writable_dir(prefix.parent, "--out: the folder")
    return prefix


def bench_bundle_command(path: Path, *, measurement: MeasureOptions, backend: Optional[str],
                         out: Optional[Path], emulated: Optional[str], as_json: bool) -> None:
    """`tlx bench BUNDLE`: see tlx.bundle.device."""
    from tlx.bundle.device import DeviceBenchConfig, bench_bundle, default_prefix, text_table, write_result

    config = DeviceBenchConfig(bundle=path, measurement=measurement,
                               backends=tuple(b.strip() for b in backend.split(",") if b.strip())
                               if backend else None, emulated=emulated)
    with user_errors():
        prefix = result_prefix(out, default_prefix(path))
        result = bench_bundle(config, log=say)
        try:
            json_path, md_path = write_result(result, prefix)
        except OSError as exc:
            raise TlxError(f"Could not write the result to {prefix}.json / .md ({exc.strerror or exc}); the "
                           "measurements are lost. Free some space or choose another place with --out "
                           "(or use --json to print the result).") from None
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(text_table(result))
        typer.echo(f"\nResult: {printable(json_path)} and {printable(md_path)}")
    if result.max_drop_exceeded:
        limit = gate_text(measurement.max_drop, measurement.max_drop_on)
        typer.secho(f"int8 lost more than {limit} against the bundled Keras reference.",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_QUALITY_GATE)
