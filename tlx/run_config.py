"""The options of `tlx train`, shared by the CLI and the library. TensorFlow-free."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

from tlx.errors import TlxError
from tlx.imaging import DEFAULT_MAX_PIXELS, PREPROCESSING_VERSION, UNRECORDED_VERSION, check_version


class Strategy(str, Enum):
    """How training is placed on devices (through tf.distribute)."""

    #: The default strategy: one device (the GPU if TensorFlow sees one, else the CPU).
    DEFAULT = "default"
    #: tf.distribute.MirroredStrategy: synchronous data parallelism over all local GPUs
    #: (or the CPU as a single replica when there are none).
    MIRRORED = "mirrored"
    #: tf.distribute.MultiWorkerMirroredStrategy over the machines listed in TF_CONFIG
    #: (tlx.trainer.distribute): the same command on each, worker 0 writes the run dir.
    MULTI_WORKER = "multi-worker"


#: Longest --peer-timeout, in seconds (a day).
MAX_PEER_TIMEOUT = 86400.0


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run. Defaults are the values of TensorFlow's
    "Transfer learning and fine-tuning" tutorial."""

    #: Folder with one sub-folder per class, or with train/ and validation/ sub-folders
    #: that each hold one folder per class.
    data_dir: Path
    #: Run directory that receives the model, labels, split, history, metrics and plots.
    out: Path
    #: Registry key of the feature extractor (see tlx.trainer.backbones.BACKBONES).
    backbone: str = "mobilenet_v2"
    #: "imagenet" (Keras download/cache), "none" (random init) or a path to a weights file.
    weights: str = "imagenet"
    #: Side of the square images the model sees, in pixels; None: the backbone's
    #: default_image_size (the size its weights were trained at), resolved by `tlx train`.
    image_size: Optional[int] = None
    #: Images per training step.
    batch_size: int = 32
    #: Seed for the split, the shuffling, the augmentation and the weight initialisation.
    seed: int = 0
    #: Share of each class that goes to validation when `data_dir` holds class folders only.
    validation_fraction: float = 0.2
    #: Share of the validation files moved to the test set (the tutorial moves 20%).
    #: Ignored when `test_dir` is given.
    test_fraction: float = 0.2
    #: A separate folder of class folders used as the test set instead.
    test_dir: Optional[Path] = None
    #: RandomFlip("horizontal") + RandomRotation(0.2) in front of the backbone while training.
    augment: bool = True
    #: Epochs with the backbone frozen (Adam at `learning_rate`).
    phase1_epochs: int = 10
    #: Fine-tuning epochs with the top of the backbone unfrozen (RMSprop at learning_rate / 10).
    phase2_epochs: int = 10
    #: Phase 1 learning rate; phase 2 uses a tenth of it.
    learning_rate: float = 1e-4
    #: First backbone layer trained in phase 2; None takes the backbone's default (100 for MobileNetV2).
    fine_tune_at: Optional[int] = None
    #: Dropout rate in front of the logits layer.
    dropout: float = 0.2
    #: Phase 1 trains the head on backbone features computed once (needs augment=False).
    cache_features: bool = False
    #: tf.distribute strategy.
    strategy: Strategy = Strategy.DEFAULT
    #: Images with more pixels than this are skipped (decompression bombs).
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Folder of the decoded-pixel cache; None: $TLX_PIXEL_CACHE_DIR, else ~/.cache/tlx/pixels
    #: (under $XDG_CACHE_HOME when set). See tlx.pixels.cache.
    cache_dir: Optional[Path] = None
    #: Threads that decode images; None: one per core.
    workers: Optional[int] = None
    #: Version of tlx.imaging.load_image's pixels (tlx.imaging.PREPROCESSING_VERSIONS). Stored
    #: in config.json and in the exported models, so export, bench and the device use it too.
    preprocessing: int = PREPROCESSING_VERSION
    #: Replace the files of an earlier run in `out` instead of refusing to.
    overwrite: bool = False
    #: --strategy multi-worker: seconds to wait for every worker of TF_CONFIG to come before
    #: giving up with a message naming the missing ones (tlx.trainer.peer_wait).
    peer_timeout: float = 300.0

    def __post_init__(self):
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "out", Path(self.out))
        if self.test_dir is not None:
            object.__setattr__(self, "test_dir", Path(self.test_dir))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "strategy", Strategy(self.strategy))

    @property
    def total_epochs(self) -> int:
        return self.phase1_epochs + self.phase2_epochs

    def validate(self) -> None:
        """Check option values and combinations; raises TlxError naming the option."""
        if self.cache_features and self.augment:
            raise TlxError("--cache-features computes the backbone features once, so it cannot "
                           "see augmented images: add --no-augment, or drop --cache-features.")
        if self.cache_features and self.strategy is Strategy.MULTI_WORKER:
            raise TlxError("--cache-features trains the head on one machine's features: it cannot be "
                           "combined with --strategy multi-worker. Drop one of them.")
        if self.image_size is not None and self.image_size < 8:
            raise TlxError(f"--image-size {self.image_size} is too small (at least 8 pixels).")
        if self.batch_size < 1:
            raise TlxError("--batch-size must be at least 1.")
        if self.phase1_epochs < 0 or self.phase2_epochs < 0:
            raise TlxError("--phase1-epochs and --phase2-epochs must be 0 or more.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise TlxError("--validation-fraction must be between 0 and 1 (exclusive).")
        if self.test_dir is None and not 0.0 < self.test_fraction < 1.0:
            raise TlxError("--test-fraction must be between 0 and 1 (exclusive), or pass --test-dir.")
        if self.learning_rate <= 0:
            raise TlxError("--learning-rate must be positive.")
        if not 0.0 <= self.dropout < 1.0:
            raise TlxError("--dropout must be in [0, 1).")
        if self.workers is not None and self.workers < 1:
            raise TlxError(f"--workers {self.workers}: at least 1 decoding process is needed.")
        if self.fine_tune_at is not None and self.fine_tune_at < 0:
            raise TlxError("--fine-tune-at must be 0 or more.")
        check_version(self.preprocessing, "--preprocessing", "Choose one of those.")
        if not 0 < self.peer_timeout <= MAX_PEER_TIMEOUT:
            raise TlxError(f"--peer-timeout {self.peer_timeout:g}: give a number of seconds above 0 and at most "
                           f"{MAX_PEER_TIMEOUT:g} (a day).")

    def to_json(self) -> dict:
        obj = dataclasses.asdict(self)
        for key, value in obj.items():
            if isinstance(value, Path):
                obj[key] = str(value)
            elif isinstance(value, Enum):
                obj[key] = value.value
        return obj

    @classmethod
    def from_json(cls, obj: dict) -> "TrainConfig":
        """The inverse of to_json. Each value must have its field's type (TypeError naming
        the option otherwise): config.json is a file a user can edit or damage."""
        hints = typing.get_type_hints(cls)
        values = {f.name: _typed(f.name, obj[f.name], hints[f.name])
                  for f in dataclasses.fields(cls) if f.name in obj}
        # Runs from before preprocessing versions were recorded used version 1.
        values.setdefault("preprocessing", UNRECORDED_VERSION)
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in values and f.default is dataclasses.MISSING]
        if missing:
            raise TypeError(f"option(s) {', '.join(missing)} missing")
        return cls(**values)


def _typed(name: str, value, hint):
    """`value` as type `hint` (Optional, Path, Enum, bool, int, float, str); TypeError if it is not."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str),
          Path: isinstance(value, str)}.get(hint)
    if isinstance(hint, type) and issubclass(hint, Enum):
        valid = [member.value for member in hint]
        if value in valid:
            return hint(value)
        raise TypeError(f"option {name} is {value!r}, expected one of {', '.join(map(str, valid))}")
    if not ok:
        raise TypeError(f"option {name} is {value!r}, expected {getattr(hint, '__name__', hint)}")
    return hint(value) if hint in (float, Path) else value
