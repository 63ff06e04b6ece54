"""`tlx bench`: every exported model of a run (and the Keras model when TensorFlow is
installed) on the run's held-out test split, through tlx.runtime."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

import tlx
from tlx import files, machine
from tlx.bench import evaluate, measure
from tlx.bench.options import MeasureOptions
from tlx.bench.rows import BENCH_KIND, BENCH_VERSION, ModelRow, cold_start_of, failures_of
from tlx.drop import check_max_drop, drop_exceeded
from tlx.errors import TlxError
from tlx.imaging import check_image_size
from tlx.progress import Log, silent
from tlx.run_dir import RunDir, require_present, require_same_photos
from tlx.stats import confusion_matrix, paired_difference, wilson

KERAS = "keras"


@dataclass(frozen=True)
class BenchConfig:
    """What `tlx bench RUN_DIR` measures and how."""

    #: A finished `tlx train` run with `tlx export` output in RUN_DIR/export.
    run_dir: Path
    #: Timing, cold start and the drop limit, as for a device (tlx.bench.options).
    measurement: MeasureOptions = MeasureOptions()
    #: Interpreter backend (None: tlx.runtime's automatic choice).
    backend: Optional[str] = None
    #: Time each .tflite on every installed backend, side by side.
    compare_backends: bool = False
    #: Evaluate the Keras model too (needs TensorFlow).
    include_keras: bool = True
    #: Where the run's photos are now, when the data folder moved since training.
    #: None: the folder recorded in split.json.
    data_dir: Optional[Path] = None


@dataclass
class BenchResult:
    config: BenchConfig
    labels: list[str]
    n_test: int
    unreadable: list
    reference: Optional[str]
    models: list[ModelRow]
    environment: dict
    failed_drop: bool = False
    #: SHA-256 of the run's model.keras the exported files were checked against (None without it).
    model_sha256: Optional[str] = None
    #: Predicted class per test image (-1 where the model failed on it), by row name, and the
    #: true class per test image in the same order (for paired comparisons); not written.
    predicted: dict = field(default_factory=dict)
    truth: tuple = ()

    def model(self, name: str) -> ModelRow:
        return next(m for m in self.models if m.name == name)

    def to_json(self) -> dict:
        measurement = self.config.measurement
        return {
            "kind": BENCH_KIND, "format_version": BENCH_VERSION,
            "run_dir": str(self.config.run_dir),
            "date": self.environment["date"],
            "environment": self.environment,
            "settings": {"threads": list(measurement.threads), "runs": measurement.runs,
                         "warmup": measurement.warmup, "backend": self.config.backend,
                         "max_drop": measurement.max_drop, "max_drop_on": measurement.max_drop_on.value},
            "model_sha256": self.model_sha256,
            "labels": self.labels,
            "n_test": self.n_test,
            "unreadable_test_images": [{"path": p, "error": e} for p, e in self.unreadable],
            "reference": self.reference,
            "max_drop_exceeded": self.failed_drop,
            "models": [m.to_json() for m in self.models],
        }


def environment() -> dict:
    """The machine record (tlx.machine: CPU, int8-relevant features, OS, versions) plus when
    and with which tlx code; keys "machine", "cpu", "cores", "python" stay for older readers."""
    record = machine.current(extra_packages=("tensorflow", "tensorflow-cpu", "keras")).to_json()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tlx": tlx.__version__,
        **record,
        "machine": f"{record['architecture']}, {record['os']}",
        "load_average": machine.load_average(),
        "tlx_commit": _git_commit(),
    }


def _git_commit() -> Optional[str]:
    """The source checkout's commit (with "+changes" when the tree differs), or None for an
    installed wheel: recorded results say exactly which code produced them."""
    import subprocess

    root = Path(__file__).resolve().parent.parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+changes" if dirty else "")) or None


def exported_models(run: RunDir) -> list[Path]:
    models = sorted(run.export.glob("*.tflite")) if run.export.is_dir() else []
    if not models:
        raise TlxError(f"{run.root} has no exported models in {run.export}. "
                       f"Run `tlx export {run.root}` first.")
    return models


def model_name(path: Path) -> str:
    return path.stem[len("model_"):] if path.stem.startswith("model_") else path.stem


def run_bench(config: BenchConfig, log: Log = silent) -> BenchResult:
    from tlx.runtime.backends import installed_backends, resolve_name

    check_max_drop(config.measurement.max_drop, config.measurement.max_drop_on)
    run = RunDir(config.run_dir)
    split = run.read_split(config.data_dir)
    labels = run.read_labels()
    if not split.test:
        raise TlxError(f"The test split in {run.split} is empty: nothing to measure. "
                       "Re-run `tlx train` with a larger --test-fraction or a --test-dir.")
    require_present(split, "test")
    require_same_photos(split, [path for path, _ in split.test], log)
    tflite_paths = exported_models(run)
    model_sha = run.model_sha256()
    run.require_from_this_model(tflite_paths, model_sha, labels)
    preprocessing = run.preprocessing_version()
    log(f"Decoding {len(split.test)} test images")
    images = evaluate.load_test_images(split.test, tuple(split.image_size), preprocessing)

    measured: list[tuple[ModelRow, np.ndarray]] = []
    if config.include_keras and evaluate.tensorflow_available() and run.model.is_file():
        log("Evaluating the Keras model")
        measured.append(_bench_keras(run.model, labels, images, config))

    backends = [resolve_name(config.backend)]
    if config.compare_backends:
        backends = installed_backends()
    for path in tflite_paths:
        for backend in backends:
            name = model_name(path) if len(backends) == 1 else f"{model_name(path)} ({backend})"
            measured.append(_bench_tflite(name, path, backend, labels, images, config, log,
                                          run, preprocessing))

    # The drop is measured against Keras when it ran, else against the first .tflite.
    reference, reference_predicted = measured[0]
    results = [reference] + [
        replace(row, agreement=wilson(int(np.sum(predicted == reference_predicted)), len(images.paths)),
                drop=paired_difference(images.labels, reference_predicted, predicted))
        for row, predicted in measured[1:]]
    failed = drop_exceeded(((r.name, r.drop) for r in results), config.measurement.max_drop,
                           config.measurement.max_drop_on)
    return BenchResult(config, labels, len(images.paths), images.skipped, reference.name, results,
                       environment(), failed, model_sha256=model_sha,
                       predicted={row.name: predicted for row, predicted in measured},
                       truth=tuple(int(label) for label in images.labels))


def _bench_keras(model_path: Path, labels, images, config: BenchConfig) -> tuple[ModelRow, np.ndarray]:
    predictions = evaluate.keras_predictions(model_path, len(labels), images)
    cold_start = None
    if config.measurement.cold_start:
        cold_start = cold_start_of(measure.keras_cold_start(model_path, images.paths[0], len(labels)))
    return _model_row(KERAS, model_path, None, labels, images, predictions, {}, cold_start), predictions.predicted


def _bench_tflite(name, path: Path, backend, labels, images, config: BenchConfig, log: Log,
                  run: RunDir, preprocessing: int) -> tuple[ModelRow, np.ndarray]:
    from tlx.runtime import Classifier

    log(f"Evaluating {name}")
    options = config.measurement
    classifier = Classifier.from_file(path, num_threads=options.threads[0], backend=backend)
    if classifier.num_classes != len(labels):
        raise TlxError(f"{path} has {classifier.num_classes} outputs but the run has "
                       f"{len(labels)} labels: it was exported from another run. Re-export it.")
    check_image_size(classifier.input_size, images.pixels.shape[1:3], str(path),
                     "the run's split.json", "Re-export it with `tlx export`.")
    run.require_preprocessing(path, classifier.preprocessing, preprocessing)
    predictions = evaluate.tflite_predictions(classifier, images)
    latency = {}
    for threads in options.threads:
        log(f"Timing {name}, {threads} thread(s)")
        # The evaluation's interpreter already has the first thread count.
        timed = classifier if threads == options.threads[0] else Classifier.from_file(
            path, num_threads=threads, backend=backend)
        latency[threads] = measure.interpreter_latency(timed, images.pixels[0], options.runs, options.warmup)
    cold_start = None
    if options.cold_start:
        log(f"Cold start of `tlx predict` with {name}")
        cold_start = cold_start_of(measure.predict_cold_start(path, images.paths[0], classifier.backend))
    row = _model_row(name, path, classifier.backend, labels, images, predictions, latency, cold_start)
    return row, predictions.predicted


def _model_row(name, path: Path, backend, labels, images, predictions, latency, cold_start) -> ModelRow:
    """The row of a model measured here; agreement and drop are set once the reference is known."""
    confusion = confusion_matrix(images.labels, predictions.predicted, len(labels))
    return ModelRow(
        name=name, backend=backend, file=str(path), size_bytes=path.stat().st_size,
        sha256=files.sha256_file(path), accuracy=wilson(predictions.correct(images.labels), len(images.paths)),
        drop=None, agreement=None, host=None, latency=latency, cold_start=cold_start,
        failures=failures_of(predictions.failures),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion))
