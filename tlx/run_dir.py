"""What a `tlx train` run leaves on disk, read and written by train, export, bench and report.

Every file name of a run folder is defined here, once. config.json is parsed here, once,
into a typed `RunConfig`. TensorFlow-free: bench and predict read these files on machines
without it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

from tlx import files
from tlx.errors import TlxError
from tlx.progress import Log
from tlx.run_config import TrainConfig

MODEL = "model.keras"
LABELS = "labels.txt"
SPLIT = "split.json"
CONFIG = "config.json"
HISTORY = "history.json"
METRICS = "metrics.json"
PLOTS = "plots"
LEARNING_CURVES = "learning_curves.png"
PREDICTIONS = "predictions.png"
CHECKPOINTS = "checkpoints"
#: checkpoints/state.json: which checkpoint files are complete, and the history up to them.
STATE = "state.json"
EXPORT = "export"
#: export/export.json (also in an export folder chosen with `tlx export --out`).
EXPORT_JSON = "export.json"
BENCH = "bench"
BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
BENCH_CHART = "accuracy_vs_latency.png"
REPORT = "report.html"
HEX_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
#: How many differing photos an error names before it only counts.
NAMED = 5

#: Files of a finished or started run; a new run refuses to write over them.
RUN_FILES = (CONFIG, SPLIT, MODEL, CHECKPOINTS)
#: Everything made from a run's model.keras: replacing the model (`tlx train --overwrite`)
#: removes them, so that nothing describes a model that is gone.
DERIVED = (EXPORT, BENCH, REPORT, METRICS, HISTORY, PLOTS, CHECKPOINTS)


def confusion_name(model_name: str) -> str:
    """bench/confusion_<model>.png, with the model name made file-name safe."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model_name)
    return f"confusion_{safe}.png"


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name, or None when it can.

    labels.txt (ours and the one inside each .tflite's standard metadata, which MediaPipe
    and other clients read) holds one label per line, and label readers commonly strip
    each line. A name with a line break or other control character, or with spaces at
    either end, would come back different, so such names are refused before training
    rather than silently changed: two folders "dog" and "dog " would become one class.
    """
    if not name:
        return "it is empty"
    if name != name.strip():
        return "it starts or ends with a space"
    bad = sorted({c for c in name if unicodedata.category(c)[0] == "C"})
    if bad:
        return "it holds control characters (" + ", ".join(repr(c) for c in bad) + ")"
    return None


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
    #: SHA-256 (hex) of each file's bytes when `tlx train` decoded it: split.json names files
    #: by path only, and another folder may hold other photos under the same names. Empty for
    #: runs made before it was recorded (then nothing is checked, and consumers say so).
    content: Mapping[str, str] = field(default_factory=dict)

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
            "content_sha256": {self._stored(p): digest for p, digest in self.content.items()},
        }

    def differing(self, found: Mapping[str, str]) -> list[str]:
        """Paths whose content hash in `found` is not the one recorded (unrecorded ones pass)."""
        return [path for path, digest in found.items()
                if path in self.content and self.content[path] != digest]

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
            content=_content_hashes(obj.get("content_sha256", {}), located),
        )


def _content_hashes(obj, located) -> dict[str, str]:
    """split.json's "content_sha256": {stored path: hex SHA-256}; ValueError when malformed."""
    if not isinstance(obj, dict):
        raise ValueError("content_sha256 is not an object")
    for path, digest in obj.items():
        if not isinstance(digest, str) or not HEX_SHA256.match(digest):
            raise ValueError(f"content_sha256 of {path[:200]!r} is not a SHA-256 in hex")
    return {located(path): digest for path, digest in obj.items()}


@dataclass(frozen=True)
class RunConfig:
    """config.json: how a run was trained."""

    #: Every option of the run (tlx.run_config.TrainConfig), with defaults resolved.
    options: TrainConfig
    #: An id written once when the run starts; exported files carry it (tlx.json).
    run_id: str
    #: Package versions at training time (tlx, python, tensorflow, keras, numpy, ...).
    versions: dict = field(default_factory=dict)
    #: When training started (local time, ISO 8601).
    started: str = ""

    def to_json(self) -> dict:
        return {"options": self.options.to_json(), "run_id": self.run_id, "versions": self.versions,
                "started": self.started}


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
    learning_curves = property(lambda self: self.root / PLOTS / LEARNING_CURVES)
    predictions = property(lambda self: self.root / PLOTS / PREDICTIONS)
    checkpoints = property(lambda self: self.root / CHECKPOINTS)
    state = property(lambda self: self.root / CHECKPOINTS / STATE)
    export = property(lambda self: self.root / EXPORT)
    export_json = property(lambda self: self.root / EXPORT / EXPORT_JSON)
    bench = property(lambda self: self.root / BENCH)
    bench_json = property(lambda self: self.root / BENCH / BENCH_JSON)
    bench_md = property(lambda self: self.root / BENCH / BENCH_MD)
    bench_chart = property(lambda self: self.root / BENCH / BENCH_CHART)
    report = property(lambda self: self.root / REPORT)

    def require(self, path: Path, what: str) -> Path:
        if not self.root.is_dir():
            raise TlxError(f"{self.root} is not a directory: pass the --out folder of a `tlx train` run.")
        if not path.is_file():
            raise TlxError(f"{self.root} has no {path.name} ({what}). "
                           "Is it the --out folder of a finished `tlx train` run?")
        return path

    def _read_json(self, path: Path, what: str):
        self.require(path, what)
        try:
            return files.read_json(path)
        except UnicodeDecodeError:
            raise TlxError(f"{path} is not UTF-8 text: the file is damaged. Re-run `tlx train`.") from None
        except json.JSONDecodeError as exc:
            raise TlxError(f"{path} is not valid JSON ({exc}): the file is damaged. "
                           "Re-run `tlx train`.") from None

    def read_split(self, data_dir: str | os.PathLike | None = None) -> Split:
        """split.json; `data_dir` re-roots it when the data folder moved (--data-dir)."""
        obj = self._read_json(self.split, "the train/validation/test file lists")
        try:
            return Split.from_json(obj, data_dir)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TlxError(f"{self.split} is not a valid split file ({exc}); re-run `tlx train`.") from None

    def read_labels(self) -> list[str]:
        """The class names, one per line, exactly as written (see class_name_problem)."""
        path = self.require(self.labels, "the class names")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise TlxError(f"{path} is not UTF-8 text: the file is damaged. Re-run `tlx train`.") from None
        labels = text.split("\n")
        if labels and labels[-1] == "":
            labels.pop()
        if not labels:
            raise TlxError(f"{path} is empty; re-run `tlx train`.")
        for line, label in enumerate(labels, 1):
            problem = class_name_problem(label)
            if problem:
                raise TlxError(f"{path} line {line} ({label!r}) is not a class name: {problem}. "
                               "The file was edited or damaged; re-run `tlx train`.")
        return labels

    def write_labels(self, labels) -> None:
        for label in labels:
            problem = class_name_problem(label)
            if problem:
                raise TlxError(f"Class name {label!r} cannot be written to labels.txt: {problem}.")
        files.write_text(self.labels, "".join(f"{label}\n" for label in labels))

    def read_config(self) -> RunConfig:
        """config.json, checked: each option has its TrainConfig type."""
        obj = self._read_json(self.config, "the training options")
        path = self.config
        if not isinstance(obj, dict) or not isinstance(obj.get("options"), dict):
            raise TlxError(f"{path} is not a tlx config file (expected an object with \"options\"). "
                           "Re-run `tlx train`.")
        try:
            options = TrainConfig.from_json(obj["options"])
        except (TypeError, ValueError) as exc:
            raise TlxError(f"{path}: {exc}. The file was edited or damaged; re-run `tlx train`.") from None
        versions = obj.get("versions")
        return RunConfig(options=options,
                         # Runs from before run ids were written: the folder's name.
                         run_id=str(obj.get("run_id") or self.root.resolve().name),
                         versions=versions if isinstance(versions, dict) else {},
                         started=str(obj.get("started") or ""))

    def preprocessing_version(self) -> int:
        """The preprocessing version (tlx.imaging) the run was trained with: the one rule for
        every consumer. A run without config.json is from before versions were recorded and
        used version 1; a damaged config.json is an error (read_config names it), never a guess."""
        from tlx.imaging import UNRECORDED_VERSION, check_version

        if not self.config.is_file():
            return UNRECORDED_VERSION
        return check_version(self.read_config().options.preprocessing, str(self.config))

    def require_preprocessing(self, path, model_version: int, run_version: int) -> None:
        """Refuse a model file that decodes images another way than the run was trained."""
        if model_version != run_version:
            raise TlxError(f"{path} preprocesses images with version {model_version} but the run was "
                           f"trained with version {run_version}: it was exported from another run. "
                           f"Re-export it with `tlx export {self.root}`.")

    def write_config(self, options: TrainConfig, versions: dict, started: str) -> RunConfig:
        config = RunConfig(options=options, run_id=uuid.uuid4().hex[:16], versions=versions,
                           started=started)
        files.write_json(self.config, config.to_json())
        return config

    def model_sha256(self) -> str | None:
        """SHA-256 of model.keras, or None when the run has none (e.g. copied to a device)."""
        return files.sha256_file(self.model) if self.model.is_file() else None

    def require_from_this_model(self, paths, model_sha: str | None = None,
                                labels: list[str] | None = None) -> None:
        """Every exported .tflite in `paths` was made from this run's model.keras (the model hash
        in its tlx.json) with this run's labels; TlxError naming each file that was not, and why.

        A run folder describes one model: an export from a replaced model, or one left half
        replaced by a killed export, must not be measured or reported against the new one."""
        from tlx.runtime.associated_files import read_labels, read_tlx_metadata

        model_sha = model_sha if model_sha is not None else self.model_sha256()
        labels = labels if labels is not None else self.read_labels()
        problems = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
                info = read_tlx_metadata(data)
                file_labels = (info or {}).get("labels") or read_labels(data)
            except (OSError, TlxError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: unreadable ({exc})")
                continue
            if info is None:
                problems.append(f"{path}: it carries no tlx.json, so nothing ties it to this run")
            elif model_sha is not None and info.get("model_sha256") != model_sha:
                problems.append(f"{path}: made from another model.keras (model hash "
                                f"{str(info.get('model_sha256'))[:12]}, this run's is {model_sha[:12]})")
            elif list(file_labels or []) != list(labels):
                problems.append(f"{path}: its labels {file_labels} are not this run's {labels}")
        if problems:
            raise TlxError("Exported files that do not belong to the run in "
                           f"{self.root}:\n  " + "\n  ".join(problems)
                           + f"\nExport again with `tlx export {self.root}`.")

    def require_bench_of_this_model(self, bench: dict) -> None:
        """bench.json was measured with this run's model.keras; TlxError otherwise."""
        model_sha = self.model_sha256()
        if model_sha is not None and bench.get("model_sha256") != model_sha:
            raise TlxError(f"{self.bench_json} was measured on another model.keras than the run's "
                           f"current one (model hash {str(bench.get('model_sha256'))[:12]}, the run's is "
                           f"{model_sha[:12]}). Measure again with `tlx bench {self.root}`.")

    def has_current_export(self) -> bool:
        """export/ holds a finished export (export.json, newer than model.keras) whose every
        .tflite was made from this model.keras with these labels."""
        models = sorted(self.export.glob("*.tflite")) if self.export.is_dir() else []
        if not models or not self.export_json.is_file() or not self.model.is_file():
            return False
        try:
            self.require_from_this_model(models)
        except TlxError:
            return False
        return self.export_json.stat().st_mtime >= self.model.stat().st_mtime

    def has_current_bench(self) -> bool:
        """bench/bench.json exists, reads through the one bench.json reader (bounded, its rows
        checked), and was measured on this model.keras."""
        from tlx.bench.rows import read_bench

        try:
            self.require_bench_of_this_model(read_bench(self.bench_json)[0])
        except (OSError, TlxError, ValueError, AttributeError):
            return False
        return True

    def remove(self, names) -> list[str]:
        """Delete these files and folders of the run (e.g. DERIVED); returns the names removed."""
        import shutil

        removed = []
        for name in dict.fromkeys(names):
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(name)
        return removed


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


def require_same_photos(split: Split, paths: Iterable[str], log: Log) -> None:
    """The files at `paths` hold the bytes `tlx train` decoded (split.content), else one
    error naming a few that differ: --data-dir pointing at another folder with the same
    file names must not be measured, calibrated or bundled as if it were the run's photos.
    A run without recorded hashes is not checked, and `log` says so."""
    if not split.content:
        log(f"Note: {SPLIT} records no content hashes (a run made by an older tlx): the photos under "
            f"{split.data_dir or 'the data folder'} are not checked to be the ones the run was trained on.")
        return
    found = {}
    for path in dict.fromkeys(paths):
        try:
            found[path] = files.sha256_file(path)
        except OSError:
            pass  # unreadable: reported (and left out) by whoever decodes it
    differ = split.differing(found)
    if differ:
        named = "\n  ".join(differ[:NAMED]) + (f"\n  ... and {len(differ) - NAMED} more" if len(differ) > NAMED else "")
        raise TlxError(
            f"{len(differ)} of the {len(found)} photos read from {split.data_dir} are not the ones this run "
            f"was trained with (their content differs from when `tlx train` read them):\n  {named}\n"
            f"{SPLIT} names photos only by path: point --data-dir at the folder the run was trained on, "
            "or train a new run on these photos.")
