"""`tlx train`: the tutorial's two transfer-learning phases on a folder of photos."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import print_json, progress_bar, user_errors
from tlx.cli.train_options import MODEL_OPTIONS, TRAINING_OPTIONS, with_options
from tlx.run_config import TrainConfig

#: Decoding shows images per second.
_decode_bar = functools.partial(progress_bar, unit="images")

_DEFAULTS = TrainConfig(data_dir=Path("."), out=Path("."))


@command("train", short_help="Train a classifier on photos: frozen phase, then fine-tuning.")
@with_options(MODEL_OPTIONS, TRAINING_OPTIONS)
def train(
    data_dir: Annotated[Optional[Path], typer.Argument(
        metavar="DATA_DIR",
        help="Folder with one sub-folder per class, or with train/ and validation/ sub-folders "
             "that each hold the class folders.", show_default=False)] = None,
    out: Annotated[Optional[Path], options.out_option(
        "Run directory to write (model.keras, labels.txt, split.json, config.json, history.json, "
        "metrics.json, plots/, checkpoints/). Required unless --resume.", metavar="RUN_DIR")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", metavar="RUN_DIR",
        help="Continue the interrupted run in this run directory with its saved options.",
        show_default="none: a new run")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier run in --out instead of refusing.")] = _DEFAULTS.overwrite,
    as_json: options.Json = False,
    training: Optional[dict] = None,
) -> None:
    """Train a classifier: frozen-backbone phase, then fine-tuning (TensorFlow's transfer-learning tutorial).

    --json prints the summary that the text shows: the run folder, accuracies, epochs, timings.

    Exit codes: 0 trained; 1 an error; 130 interrupted by Ctrl-C (143: SIGTERM)."""
    def log(message: str) -> None:
        typer.echo(message, err=as_json)

    with user_errors():
        from tlx.trainer.summary import format_summary
        from tlx.trainer.train import resume as resume_run
        from tlx.trainer.train import train as train_run

        if resume is not None:
            if data_dir is not None or out is not None:
                raise typer.BadParameter("--resume continues a run with its saved options: "
                                         "pass only --resume RUN_DIR (and --json).")
            summary = resume_run(resume, log=log, progress=_decode_bar)
        else:
            if data_dir is None:
                raise typer.BadParameter("Missing DATA_DIR (the folder of class folders), "
                                         "or use --resume RUN_DIR.")
            if out is None:
                raise typer.BadParameter("Missing --out RUN_DIR: the folder that receives the trained "
                                         "model and its files.")
            config = TrainConfig(data_dir=data_dir, out=out, overwrite=overwrite, **training)
            summary = train_run(config, log=log, progress=_decode_bar)
    if as_json:
        print_json(summary)
    else:
        log("")
        log(format_summary(summary))

