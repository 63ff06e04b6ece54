"""The training options of `tlx train`, defined once and shared with `tlx sweep`.

Each option is an `inspect.Parameter` with its `Annotated[..., typer.Option(...)]` type. The
`with_options` decorator adds a group of them to a command's signature (typer reads the
signature) and hands their values to the command as one dict, so a second command that trains
(a sweep trains many runs) takes exactly the same options, help texts and defaults.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from tlx.cli import options
from tlx.run_config import Strategy, TrainConfig

_DEFAULTS = TrainConfig(data_dir=Path("."), out=Path("."))


def _option(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


#: --backbone and --image-size: one value for `tlx train` (a sweep takes lists instead).
MODEL_OPTIONS = (
    _option("backbone", Annotated[str, typer.Option(
        metavar="NAME", help="Backbone from the registry (`tlx backbones` lists them).")], _DEFAULTS.backbone),
    _option("image_size", options.BackboneImageSize, _DEFAULTS.image_size),
)

#: Every other option of a training run (TrainConfig's fields except data_dir, out, backbone,
#: image_size and overwrite).
TRAINING_OPTIONS = (
    _option("weights", Annotated[str, typer.Option(
        metavar="imagenet|none|PATH",
        help="Backbone weights: imagenet (Keras download/cache in ~/.keras/models), none (random), "
             "or a weights file PATH.")], _DEFAULTS.weights),
    _option("batch_size", Annotated[int, typer.Option(help="Images per training step.")],
            _DEFAULTS.batch_size),
    _option("seed", Annotated[int, typer.Option(
        help="Seed for the split, shuffling, augmentation and init.")], _DEFAULTS.seed),
    _option("validation_fraction", Annotated[float, typer.Option(
        help="Share of each class held out for validation (class-folder layout only).")],
        _DEFAULTS.validation_fraction),
    _option("test_fraction", Annotated[float, typer.Option(
        help="Share of the validation files moved to the test set (as the tutorial does).")],
        _DEFAULTS.test_fraction),
    _option("test_dir", Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="A separate folder of class folders to use as the test set.",
        show_default="none: split off the validation files")], None),
    _option("augment", Annotated[bool, typer.Option(
        "--augment/--no-augment", help="RandomFlip horizontal + RandomRotation 0.2 while training.")],
        _DEFAULTS.augment),
    _option("phase1_epochs", options.Phase1Epochs, _DEFAULTS.phase1_epochs),
    _option("phase2_epochs", options.Phase2Epochs, _DEFAULTS.phase2_epochs),
    _option("learning_rate", Annotated[float, typer.Option(
        help="Phase 1 learning rate; phase 2 uses a tenth.")], _DEFAULTS.learning_rate),
    _option("fine_tune_at", Annotated[Optional[int], typer.Option(
        help="First backbone layer trained in phase 2 (default: the backbone's own; 100 for mobilenet_v2).",
        show_default=False)], None),
    _option("dropout", Annotated[float, typer.Option(help="Dropout rate before the logits layer.")],
            _DEFAULTS.dropout),
    _option("cache_features", Annotated[bool, typer.Option(
        "--cache-features", help="Phase 1 on backbone features computed once (much faster; needs "
                                 "--no-augment).")], _DEFAULTS.cache_features),
    _option("strategy", Annotated[Strategy, typer.Option(
        help="tf.distribute strategy: default (one device), mirrored (all local GPUs) or multi-worker "
             "(the machines listed in TF_CONFIG; run the same command on each, see the README).")],
        _DEFAULTS.strategy),
    _option("peer_timeout", Annotated[float, typer.Option(
        metavar="SECONDS",
        help="--strategy multi-worker: seconds to wait for every worker of TF_CONFIG before giving up "
             "with a message naming the ones that never came.")], _DEFAULTS.peer_timeout),
    _option("max_pixels", Annotated[int, typer.Option(
        help="Skip images with more pixels than this (decompression bombs).")], _DEFAULTS.max_pixels),
    _option("cache_dir", Annotated[Optional[Path], typer.Option(
        metavar="DIR",
        help="Folder of the decoded-pixel cache (images are decoded once; the next run over the same "
             "folder reads them back). Default: $TLX_PIXEL_CACHE_DIR, else ~/.cache/tlx/pixels "
             "(under $XDG_CACHE_HOME when set).", show_default=False)], _DEFAULTS.cache_dir),
    _option("workers", Annotated[Optional[int], typer.Option(
        help="Processes that decode images (small folders: this one). Default: one per core.",
        show_default=False)], _DEFAULTS.workers),
    _option("preprocessing", Annotated[int, typer.Option(
        metavar="1|2|3",
        help="Preprocessing version of the pixels: 1 = exact (full decode, one resize), 2 = reduced "
             "(JPEG decoded at a reduced scale, large images reduced to twice the input size "
             "first: fast at camera resolutions), 3 = as 2, resized in one pass order on every Pillow "
             "(a host and a Pi with another Pillow see the same pixels), camera arrays box-averaged "
             "before the last resize (a third of 2's cost per frame). Stored with the run and its "
             "models.")],
        _DEFAULTS.preprocessing),
)


def with_options(*groups: tuple[inspect.Parameter, ...], into: str = "training") -> Callable:
    """Decorator: the command also takes the options of `groups` (after its own), and receives
    their values as one dict in its keyword argument `into`."""
    added = [param for group in groups for param in group]

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in signature.parameters.values() if p.name != into]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {p.name: kwargs.pop(p.name) for p in added}
            return command(**kwargs, **{into: values})

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])
        wrapper.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
        return wrapper

    return decorate
