"""`tlx train`: the tutorial's two transfer-learning phases on a folder of photos."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.cli.app import app
from tlx.cli.common import print_json, progress_bar, user_errors
from tlx.trainer.config import Strategy, TrainConfig

#: Decoding shows images per second.
_decode_bar = functools.partial(progress_bar, unit="images")

_DEFAULTS = TrainConfig(data_dir=Path("."), out=Path("."))


@app.command("train", short_help="Train a classifier on photos: frozen phase, then fine-tuning.")
def train(
    data_dir: Annotated[Optional[Path], typer.Argument(
        metavar="DATA_DIR",
        help="Folder with one sub-folder per class, or with train/ and validation/ sub-folders "
             "that each hold the class folders.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory to write (model.keras, labels.txt, split.json, config.json, "
                      "history.json, metrics.json, plots/, checkpoints/).", show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", help="Continue the interrupted run in this run directory with its saved options.",
        show_default=False)] = None,
    backbone: Annotated[str, typer.Option(help="Backbone from the registry (`tlx backbones` lists them).")]
        = _DEFAULTS.backbone,
    weights: Annotated[str, typer.Option(
        help="Backbone weights: imagenet (Keras download/cache in ~/.keras/models), none (random), "
             "or a weights file PATH.")] = _DEFAULTS.weights,
    image_size: Annotated[int, typer.Option(help="Side of the square model input, in pixels.")]
        = _DEFAULTS.image_size,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = _DEFAULTS.batch_size,
    seed: Annotated[int, typer.Option(help="Seed for the split, shuffling, augmentation and init.")]
        = _DEFAULTS.seed,
    validation_fraction: Annotated[float, typer.Option(
        help="Share of each class held out for validation (class-folder layout only).")]
        = _DEFAULTS.validation_fraction,
    test_fraction: Annotated[float, typer.Option(
        help="Share of the validation files moved to the test set (as the tutorial does).")]
        = _DEFAULTS.test_fraction,
    test_dir: Annotated[Optional[Path], typer.Option(
        help="A separate folder of class folders to use as the test set.", show_default=False)] = None,
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment", help="RandomFlip horizontal + RandomRotation 0.2 while training.")]
        = _DEFAULTS.augment,
    phase1_epochs: Annotated[int, typer.Option(help="Epochs with the backbone frozen (Adam).")]
        = _DEFAULTS.phase1_epochs,
    phase2_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs (RMSprop at lr/10).")]
        = _DEFAULTS.phase2_epochs,
    learning_rate: Annotated[float, typer.Option(help="Phase 1 learning rate; phase 2 uses a tenth.")]
        = _DEFAULTS.learning_rate,
    fine_tune_at: Annotated[Optional[int], typer.Option(
        help="First backbone layer trained in phase 2 (default: the backbone's own; 100 for mobilenet_v2).",
        show_default=False)] = None,
    dropout: Annotated[float, typer.Option(help="Dropout rate before the logits layer.")]
        = _DEFAULTS.dropout,
    cache_features: Annotated[bool, typer.Option(
        "--cache-features", help="Phase 1 on backbone features computed once (much faster; needs "
                                 "--no-augment).")] = _DEFAULTS.cache_features,
    strategy: Annotated[Strategy, typer.Option(
        help="tf.distribute strategy: default (one device), mirrored (all local GPUs) or multi-worker "
             "(the machines listed in TF_CONFIG; run the same command on each, see the README).")]
        = _DEFAULTS.strategy,
    peer_timeout: Annotated[float, typer.Option(
        help="--strategy multi-worker: seconds to wait for every worker of TF_CONFIG before giving up "
             "with a message naming the ones that never came.")] = _DEFAULTS.peer_timeout,
    max_pixels: Annotated[int, typer.Option(
        help="Skip images with more pixels than this (decompression bombs).")] = _DEFAULTS.max_pixels,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Folder of the decoded-pixel cache (images are decoded once; the next run over the same "
             "folder reads them back). Default: $TLX_PIXEL_CACHE_DIR, else ~/.cache/tlx/pixels "
             "(under $XDG_CACHE_HOME when set).", show_default=False)] = _DEFAULTS.cache_dir,
    workers: Annotated[Optional[int], typer.Option(
        help="Processes that decode images (small folders: this one). Default: one per core.",
        show_default=False)]
        = _DEFAULTS.workers,
    preprocessing: Annotated[int, typer.Option(
        help="Preprocessing version of the pixels: 1 = exact (full decode, one resize), 2 = reduced "
             "(JPEG decoded at a reduced scale, large images reduced to twice the input size "
             "first: fast at camera resolutions). Stored with the run and its models.")]
        = _DEFAULTS.preprocessing,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an earlier run in --out instead of refusing.")] = _DEFAULTS.overwrite,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print the summary as JSON on stdout (progress goes to stderr).")] = False,
) -> None:
    """Train a classifier: frozen-backbone phase, then fine-tuning (TensorFlow's transfer-learning tutorial)."""
    def log(message: str) -> None:
        typer.echo(message, err=json_output)

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
            config = TrainConfig(
                data_dir=data_dir, out=out, backbone=backbone, weights=weights, image_size=image_size,
                batch_size=batch_size, seed=seed, validation_fraction=validation_fraction,
                test_fraction=test_fraction, test_dir=test_dir, augment=augment,
                phase1_epochs=phase1_epochs, phase2_epochs=phase2_epochs, learning_rate=learning_rate,
                fine_tune_at=fine_tune_at, dropout=dropout, cache_features=cache_features,
                strategy=strategy, peer_timeout=peer_timeout, max_pixels=max_pixels, cache_dir=cache_dir,
                workers=workers,
                preprocessing=preprocessing, overwrite=overwrite)
            summary = train_run(config, log=log, progress=_decode_bar)
    if json_output:
        print_json(summary)
    else:
        log("")
        log(format_summary(summary))

