"""What a `tlx train` run leaves on disk, read and written by train, export and bench.

TensorFlow-free: bench and predict read these files on machines without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tlx import files
from tlx.errors import TlxError

MODEL = "model.keras"
LABELS = "labels.txt"
SPLIT = "split.json"
CONFIG = "config.json"
HISTORY = "history.json"
METRICS = "metrics.json"
PLOTS = "plots"
CHECKPOINTS = "checkpoints"
EXPORT = "export"
BENCH = "bench"


@dataclass(frozen=True)
class Split:
    """Which files went where. Paths are absolute in memory; labels are indices into `classes`.

    Written once by the trainer so that export (calibration from `train`) and bench
    (evaluation on `test`) use exactly the same files, and no file is in two splits.
    On disk, files inside `data_dir` are stored relative to it (POSIX separators), so a
    data folder that moved is found again by re-rooting (`from_json(..., data_dir=NEW)`);
    older split files hold absolute paths and still read.
    """

    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    validation: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...]
    seed: int = 0
    image_size: tuple[int, int] = (160, 160)
    data_dir: str = ""
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "seed": self.seed,
            "image_size": list(self.image_size),
            "data_dir": self.data_dir,
            "train": [[self._stored(p), label] for p, label in self.train],
            "validation": [[self._stored(p), label] for p, label in self.validation],
            "test": [[self._stored(p), label] for p, label in self.test],
            "skipped": [list(item) for item in self.skipped],
        }

    def _stored(self, path: str) -> str:
        """`path` relative to data_dir when it is inside it, else as it is."""
        if self.data_dir:
            relative = os.path.relpath(path, self.data_dir)
            if not relative.startswith(os.pardir) and not os.path.isabs(relative):
                return Path(relative).as_posix()
        return str(path)

    @classmethod
    def from_json(cls, obj: dict, data_dir: str | os.PathLike | None = None) -> "Split":
        """`data_dir` re-roots the files recorded under the data folder (--data-dir: it moved)."""
        recorded = obj.get("data_dir", "")
        root = str(Path(data_dir).resolve()) if data_dir is not None else recorded

        def located(path: str) -> str:
            if not os.path.isabs(path):
                return os.path.join(root, *PurePosixPath(path).parts)
            if data_dir is not None and recorded:  # an older, absolute split file
                relative = os.path.relpath(path, recorded)
                if not relative.startswith(os.pardir):
                    return os.path.join(root, relative)
            return path

        def items(key):
            return tuple((located(str(path)), int(label)) for path, label in obj.get(key, []))

        return cls(
            classes=tuple(obj["classes"]),
            train=items("train"),
            validation=items("validation"),
            test=items("test"),
            seed=int(obj.get("seed", 0)),
            image_size=tuple(obj.get("image_size", (160, 160))),
            data_dir=root,
            skipped=tuple((str(p), str(r)) for p, r in obj.get("skipped", [])),
        )


class RunDir:
    """Paths inside a run directory, and checked loading of its files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    model = property(lambda self: self.root / MODEL)
    labels = property(lambda self: self.root / LABELS)
    split = property(lambda self: self.root / SPLIT)
    config = property(lambda self: self.root / CONFIG)
    history = property(lambda self: self.root / HISTORY)
    metrics = property(lambda self: self.root / METRICS)
    plots = property(lambda self: self.root / PLOTS)
    checkpoints = property(lambda self: self.root / CHECKPOINTS)
    export = property(lambda self: self.root / EXPORT)
    bench = property(lambda self: self.root / BENCH)

    def require(self, path: Path, what: str) -> Path:
        if not self.root.is_dir():
            raise TlxError(f"{self.root} is not a directory: pass the --out folder of a `tlx train` run.")
        if not path.is_file():
            raise TlxError(f"{self.root} has no {path.name} ({what}). "
                           "Is it the --out folder of a finished `tlx train` run?")
        return path

    def read_split(self, data_dir: str | os.PathLike | None = None) -> Split:
        """split.json; `data_dir` re-roots it when the data folder moved (--data-dir)."""
        path = self.require(self.split, "the train/validation/test file lists")
        try:
            return Split.from_json(files.read_json(path), data_dir)
        except (ValueError, KeyError, TypeError) as exc:
            raise TlxError(f"{path} is not a valid split file ({exc}); re-run `tlx train`.") from None

    def read_labels(self) -> list[str]:
        path = self.require(self.labels, "the class names")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not labels:
            raise TlxError(f"{path} is empty; re-run `tlx train`.")
        return labels

    def read_config(self) -> dict:
        """config.json: {"options": {...every TrainConfig field...}, "versions": {...}, ...}."""
        return files.read_json(self.require(self.config, "the training options"))

    def read_options(self) -> dict:
        """The training options (backbone, image_size, ...) from config.json."""
        config = self.read_config()
        return config.get("options", config)

    def write_labels(self, labels) -> None:
        files.write_text(self.labels, "".join(f"{label}\n" for label in labels))


def require_present(split: Split, *names: str) -> None:
    """Every file of the named splits exists, else one error naming the folder and --data-dir:
    a data folder that moved or was deleted fails at once, not as N unreadable images."""
    missing = [path for name in names for path, _ in getattr(split, name) if not os.path.isfile(path)]
    if missing:
        total = sum(len(getattr(split, name)) for name in names)
        raise TlxError(
            f"{len(missing)} of the {total} {'/'.join(names)} photos listed in split.json are missing "
            f"(first: {missing[0]}). They were recorded under the data folder {split.data_dir or '(unknown)'}; "
            "if it moved, pass its new location with --data-dir.")
