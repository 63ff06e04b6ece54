"""`tlx sweep`: many `tlx train` runs (backbones x image sizes) on one split, exported,
benched, with the Pareto front and the pick under budgets."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import print_json, progress_bar, user_errors
from tlx.cli.train_options import TRAINING_OPTIONS, with_options

_decode_bar = functools.partial(progress_bar, unit="images")
_DEFAULT_BACKBONES = "efficientnet_lite0"
_DEFAULT_SIZES = "96,128,160"
#: The smallest --image-size (tlx train, tlx demo) is the smallest of --image-sizes too.
_MIN_IMAGE_SIZE = options.ImageSize.__metadata__[0].min


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"--image-sizes {value!r}: give whole pixel sizes separated by commas, "
                                 "e.g. 96,128,160.") from None
    from tlx.sweep.plan import MAX_IMAGE_SIZE

    # The lower bound is `tlx train --image-size`'s (the library's plan accepts smaller test models).
    bad = [str(size) for size in sizes if not _MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE]
    if bad:
        raise typer.BadParameter(f"--image-sizes {', '.join(bad)}: each size must be from {_MIN_IMAGE_SIZE} "
                                 f"to {MAX_IMAGE_SIZE} pixels.")
    return sizes


@command("sweep", short_help="Train, export and bench backbones x image sizes; Pareto front and pick.")
@with_options(TRAINING_OPTIONS)
def sweep(
    path: Annotated[Path, typer.Argument(
        metavar="DATA_DIR|SWEEP_DIR",
        help="The folder of class folders to sweep over; with --collect, the sweep folder.",
        show_default=False)],
    out: Annotated[Optional[Path], options.out_option(
        "SWEEP_DIR: receives plan.json, split.json, one `tlx train` run folder per candidate "
        "(<backbone>-<size>), candidates/ and sweep.json. Required unless --collect.",
        metavar="SWEEP_DIR")] = None,
    backbones: Annotated[str, typer.Option(
        metavar="NAME[,NAME...]", help="Backbones from the registry (`tlx backbones`), comma separated.")]
        = _DEFAULT_BACKBONES,
    image_sizes: Annotated[str, typer.Option(
        metavar="PIXELS[,PIXELS...]",
        help="Input sizes in pixels (32 to 1024), comma separated; every backbone is trained at each.")]
        = _DEFAULT_SIZES,
    shard: Annotated[Optional[str], typer.Option(
        metavar="I/N", help="Run only the I-th (1..N) of N slices of the candidates, e.g. from a Slurm "
                            "array or a Kubernetes indexed Job; then gather with --collect. Default: all.",
        show_default=False)] = None,
    collect: Annotated[bool, typer.Option(
        "--collect", help="Only gather the finished candidates of SWEEP_DIR (from every shard) into "
                          "sweep.json.")] = False,
    max_latency_ms: Annotated[Optional[float], typer.Option(
        min=0.0, metavar="MS", help="Budget: host p50 latency (1 thread) of the recommended model, in ms.",
        show_default="none: no budget")] = None,
    max_size_mb: Annotated[Optional[float], typer.Option(
        min=0.0, metavar="MB", help="Budget: file size of the recommended model, in MB (1,000,000 bytes).",
        show_default="none: no budget")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, metavar="FRACTION",
        help="Budget: top-1 on the test split of the recommended model, 0..1.",
        show_default="none: no budget")] = None,
    bench_runs: Annotated[int, typer.Option(min=1, help="Timed runs per model on the host.")] = 50,
    bench_warmup: Annotated[int, typer.Option(min=0, help="Discarded warm-up runs per model.")] = 5,
    as_json: options.Json = False,
    training: Optional[dict] = None,
) -> None:
    """Train, export (float32 + int8) and bench every backbone at every image size on one split.

    Each candidate is an ordinary run folder in SWEEP_DIR. Run the same command again after
    Ctrl-C or a crash: finished candidates are kept, an interrupted one resumes from its last
    epoch. A candidate that fails is recorded with its error and the sweep goes on.

    SWEEP_DIR/sweep.json lists every candidate's models (accuracy, host latency, size), the
    Pareto front (models no other beats on all three at once) and the recommended model: the
    most accurate within the budgets (ties: faster, then smaller).

    --json prints sweep.json (with --shard: that shard's candidates only, as "shard" and
    "candidates").

    Exit codes: 0 done (failed candidates are recorded in sweep.json); 1 an error; 130
    interrupted by Ctrl-C (143: SIGTERM)."""
    from tlx.sweep.pareto import Budgets

    budgets = Budgets(max_latency_ms=max_latency_ms, max_size_mb=max_size_mb, min_accuracy=min_accuracy)

    def log(message: str) -> None:
        typer.echo(message, err=True)

    with user_errors():
        if collect:
            _check_collect_options(path, out, shard, backbones, image_sizes, training)
            from tlx.sweep.run import collect as collect_sweep

            record = collect_sweep(path, budgets, log)
        else:
            ran, record = _run(path, out, backbones, image_sizes, shard, budgets, bench_runs, bench_warmup,
                               training, log)
            if record is None:  # a shard: its own candidates only
                if as_json:
                    print_json({"shard": shard, "candidates": [r.to_json() for r in ran]})
                return
    if as_json:
        print_json(record.to_json())
    else:
        from tlx.sweep.summary import format_sweep

        typer.echo(format_sweep(record))


def _run(data_dir, out, backbones, image_sizes, shard, budgets, bench_runs, bench_warmup, training, log):
    from tlx.sweep.plan import Shard, SweepConfig
    from tlx.sweep.run import run_sweep
    from tlx.run_config import TrainConfig

    if out is None:
        raise typer.BadParameter("Missing --out SWEEP_DIR: the folder that receives the candidates' "
                                 "run folders and sweep.json.")
    config = SweepConfig(
        data_dir=data_dir, out=out, backbones=_names(backbones), image_sizes=_sizes(image_sizes),
        training=TrainConfig(data_dir=data_dir, out=out, **training),
        shard=Shard.parse(shard) if shard is not None else None, budgets=budgets,
        bench_runs=bench_runs, bench_warmup=bench_warmup)
    return run_sweep(config, log, progress=_decode_bar)


def _check_collect_options(path: Path, out, shard, backbones, image_sizes, training) -> None:
    from tlx.cli.train_options import TRAINING_OPTIONS

    defaults = {p.name: p.default for p in TRAINING_OPTIONS}
    given = [f"--{name.replace('_', '-')}" for name, value in training.items() if value != defaults[name]]
    if out is not None or shard is not None or backbones != _DEFAULT_BACKBONES or image_sizes != _DEFAULT_SIZES:
        given.insert(0, "--out, --shard, --backbones or --image-sizes")
    if given:
        raise typer.BadParameter(f"--collect only reads SWEEP_DIR (and the budgets); drop {', '.join(given)}.")
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; --collect takes the sweep folder (--out of the sweep).")
