"""The tutorial's two transfer-learning phases, with checkpoints, resume and a summary.

Phase 1: backbone frozen, Adam(lr); evaluated once before training (loss0, accuracy0).
Phase 2: backbone unfrozen from `fine_tune_at` on, RMSprop(lr / 10), the epoch count
continues. BatchNorm stays in inference mode in both: the base is called with
training=False (tlx.trainer.model) and, because Keras 3's fit() overrides that, phase 2
keeps the BatchNorm layers frozen (see tlx.trainer.model.unfreeze); their moving statistics never change.

After every epoch the model (with its optimizer state) is checkpointed
(tlx.trainer.checkpoints); Ctrl-C leaves the last complete epoch there and
`tlx train --resume RUN` continues from it.
"""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

import tlx
from tlx import files
from tlx.errors import MissingDependencyError, TlxError
from tlx.progress import Log, Progress
from tlx.run_dir import BENCH, DERIVED, EXPORT, LABELS, PLOTS, REPORT, RUN_FILES, RunDir, Split
from tlx.versions import installed as installed_versions
from tlx.versions import tensorflow as tensorflow_version
from tlx.trainer import data as data_mod
from tlx.trainer import distribute, pipeline
from tlx.trainer.backbones import get_backbone, parse_weights
from tlx.trainer.checkpoints import Checkpoint, CheckpointStore, save_model
from tlx.run_config import TrainConfig
from tlx.trainer.model import (BACKBONE, LOGITS, build_classifier, build_head, compile_phase1,
                              compile_phase2, copy_head, feature_model, unfreeze)
from tlx.trainer.summary import summarize


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def require_training_dependencies() -> None:
    """TensorFlow (with Keras) and matplotlib come with the 'train' extra."""
    try:
        import keras  # noqa: F401
        import matplotlib  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        raise MissingDependencyError("tlx train", "train") from None


def versions() -> dict:
    found = installed_versions("keras", "numpy", "pillow", "matplotlib")
    return {"tlx": tlx.__version__, "python": platform.python_version(),
            "tensorflow": tensorflow_version(),
            **{name: found.get(name) for name in ("keras", "numpy", "pillow", "matplotlib")}}


# -- callbacks -------------------------------------------------------------------

def _callbacks_base():
    import keras

    return keras.callbacks.Callback


class TrainingJob:
    """The mutable state of one training (of the run folder `run`): history, epochs done,
    phase, the checkpoint store it saves to, logging."""

    def __init__(self, config: TrainConfig, run: RunDir, log: Log, store: CheckpointStore,
                 resumed: Optional[Checkpoint] = None):
        self.config = config
        self.run = run
        self.log = log
        self.store = store
        self.history: dict = (resumed.history if resumed and resumed.history else
                              {"initial": {}, "phase1": {}, "phase2": {},
                               "fine_tune_start_epoch": config.phase1_epochs})
        self.epochs_done: int = resumed.epochs_done if resumed else 0
        self.phase: int = resumed.phase if resumed else 1
        self.checkpoint_model: Optional[str] = resumed.kind if resumed else None
        #: Resumed from a checkpoint of the whole classifier (not phase 1's head alone).
        self.resumed_full = resumed is not None and resumed.kind == "full"

    def save_checkpoint(self, model, kind: str) -> None:
        self.store.save(model, kind, self.phase, self.epochs_done, self.history)
        self.checkpoint_model = kind

    def callback(self, phase: int, kind: str, saved_model=None):
        """Per epoch: record the history, checkpoint, print one line."""
        Base = _callbacks_base()
        owner = self

        class EpochEnd(Base):
            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()
                self._steps = 0

            def on_train_batch_end(self, batch, logs=None):
                self._steps += 1

            def on_epoch_end(self, epoch, logs=None):
                seconds = time.perf_counter() - self._start
                record = owner.history.setdefault(f"phase{phase}", {})
                for key, value in (logs or {}).items():
                    record.setdefault(key, []).append(float(value))
                record.setdefault("seconds", []).append(seconds)
                # Training steps (batches) of the epoch: the same on one machine and on several.
                record.setdefault("steps", []).append(self._steps)
                owner.epochs_done = epoch + 1
                owner.phase = phase
                owner.save_checkpoint(saved_model if saved_model is not None else self.model, kind)
                owner.log(_epoch_line(phase, epoch + 1, owner.config.total_epochs, logs or {}, seconds))

        return EpochEnd()


def _epoch_line(phase: int, epoch: int, total: int, logs: dict, seconds: float) -> str:
    parts = [f"phase {phase}  epoch {epoch:>3}/{total}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {float(logs[key]):.4f}")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def _banner(log: Log, text: str) -> None:
    log("")
    log(f"== {text} ".ljust(72, "="))


# -- the run ---------------------------------------------------------------------

def prepare_out(out: Path, overwrite: bool) -> RunDir:
    """Create `out` and check that it is writable and holds no other run."""
    out = files.require_writable_dir(out, "--out")
    run = RunDir(out)
    taken = [name for name in RUN_FILES if (out / name).exists()]
    if taken:
        if not overwrite:
            raise TlxError(f"--out {out} already holds a run ({', '.join(taken)}). Continue it with "
                           f"`tlx train --resume {out}`, replace it with --overwrite, or choose another --out.")
        # Everything made from the replaced model goes with it (exports, bench, report...):
        # a run folder describes one model.
        run.remove((*RUN_FILES, LABELS, *DERIVED))
    return run


def train(config: TrainConfig, log: Log = _stderr, callbacks: Sequence = (),
          progress: Optional[Progress] = None, split: Optional[Split] = None) -> dict:
    """Run both phases and write the run dir. Returns the summary (see `summarize`).

    Every check of the input happens before training starts. `callbacks` are extra
    Keras callbacks added to both phases (tests use them to look inside). `progress`
    shows decoding (a bar in the CLI; lines in `log` when None). `split`: train on these
    file lists instead of splitting the data folder (a sweep gives every candidate the same
    split; its image size is replaced by the config's).
    """
    config.validate()
    spec = get_backbone(config.backbone)
    # The backbone's own defaults, written into config.json as the values used.
    if config.fine_tune_at is None:
        config = _replace(config, fine_tune_at=spec.default_fine_tune_at)
    if config.image_size is None:
        config = _replace(config, image_size=spec.default_image_size)
    weights = parse_weights(config.weights)
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise TlxError(f"--weights {weights}: no such file. Use imagenet, none or a weights file path.")
    place = distribute.prepare_cluster(config.strategy)
    require_training_dependencies()
    if place is not None:
        distribute.check_keras_patch()
    if place is not None and not place.is_chief:
        # Only the chief writes --out (it may be a shared folder); this worker's files
        # go to a folder of its own, removed at the end.
        run = RunDir(tempfile.mkdtemp(prefix=f"tlx-worker{place.index}-"))
        log(f"Worker {place.index} of {place.workers}: worker 0 writes {config.out}; this one writes "
            f"its checkpoints to {run.root} (removed at the end).")
    else:
        run = prepare_out(config.out, config.overwrite)
    if split is None:
        images = data_mod.load_data(config.data_dir, image_size=config.image_size, seed=config.seed,
                                    validation_fraction=config.validation_fraction,
                                    test_fraction=config.test_fraction, test_dir=config.test_dir,
                                    max_pixels=config.max_pixels, cache_dir=config.cache_dir,
                                    workers=config.workers, log=log, progress=progress,
                                    preprocessing=config.preprocessing)
    else:
        size = (config.image_size, config.image_size)
        images = data_mod.load_split_images(
            _replace(split, image_size=size), data_mod.source_folders(config.data_dir, config.test_dir),
            config.max_pixels, cache_dir=config.cache_dir, workers=config.workers, log=log,
            progress=progress, preprocessing=config.preprocessing)
    split = images.split

    def write_run_files():
        # Only once the model is built: a backbone that cannot load its weights leaves
        # no half-started run behind (the same --out works on the next try).
        run.write_labels(split.classes)
        files.write_json(run.split, split.to_json())
        run.write_config(config, versions(), time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    log(f"{len(split.classes)} classes ({', '.join(split.classes)}); {len(split.train)} train, "
        f"{len(split.validation)} validation, {len(split.test)} test images"
        + (f"; {len(split.skipped)} skipped" if split.skipped else ""))
    return _worker_cleanup(place, run, lambda: _run_job(
        config, images, run, CheckpointStore(run, log), log, callbacks, place, on_model_ready=write_run_files))


def _worker_cleanup(place: Optional[distribute.Cluster], run: RunDir, body: Callable[[], dict]) -> dict:
    """Run `body`; a worker other than the chief removes its own run folder afterwards."""
    try:
        return body()
    finally:
        if place is not None and not place.is_chief:
            shutil.rmtree(run.root, ignore_errors=True)


def resume(run_dir: Path, log: Log = _stderr, callbacks: Sequence = (),
           progress: Optional[Progress] = None) -> dict:
    """Continue an interrupted run from its last complete epoch, with its saved options."""
    require_training_dependencies()
    run = RunDir(run_dir)
    config = _replace(run.read_config().options, out=run.root)
    place = distribute.prepare_cluster(config.strategy)
    if place is not None:
        config.validate()                # config.json may have been edited: --peer-timeout's bounds
        distribute.check_keras_patch()
    if place is not None and not place.is_chief:
        # Every worker restores the same checkpoint (the run dir must be shared, or copied to
        # each machine); only the chief writes to it, this worker to a copy of its own.
        copy = Path(tempfile.mkdtemp(prefix=f"tlx-worker{place.index}-")) / "run"
        shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns(EXPORT, BENCH, REPORT, PLOTS))
        run = RunDir(copy)
    store = CheckpointStore(run, log)
    store.read()
    if store.finished:
        raise TlxError(f"The run in {run.root} has finished; there is nothing to resume.")
    images = data_mod.load_split_images(
        run.read_split(), data_mod.source_folders(config.data_dir, config.test_dir), config.max_pixels,
        cache_dir=config.cache_dir, workers=config.workers, log=log, progress=progress,
        preprocessing=config.preprocessing)
    if place is not None and not place.is_chief:
        return _worker_cleanup(place, RunDir(run.root.parent),
                               lambda: _run_job(config, images, run, store, log, callbacks, place, resuming=True))
    return _run_job(config, images, run, store, log, callbacks, place, resuming=True)


def _replace(config: TrainConfig, **changes) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


@dataclass(frozen=True)
class _Datasets:
    """The three splits as distributed tf.data pipelines; the training set repeats (one
    iterator for all epochs of a fit, make_dataset), so a fit needs its steps per epoch."""

    train: object
    validation: object
    test: object
    train_steps: int


def _datasets(config: TrainConfig, images: data_mod.Images, strategy,
              place: Optional[distribute.Cluster]) -> _Datasets:
    num_classes = len(images.split.classes)

    def dataset(name: str, shuffle: bool = False, repeat: bool = False):
        rows, labels = images.rows(name)
        return distribute.distribute_dataset(strategy, lambda shard: pipeline.make_dataset(
            images.pixels, rows, labels, num_classes, config.batch_size, shuffle=shuffle, seed=config.seed,
            shard=shard, repeat=repeat))

    return _Datasets(train=dataset("train", shuffle=True, repeat=True), validation=dataset("validation"),
                     test=dataset("test"),
                     train_steps=pipeline.epoch_batches(len(images.split.train), config.batch_size,
                                                        place.workers if place else 1))


def _run_job(config: TrainConfig, images: data_mod.Images, run: RunDir, store: CheckpointStore,
             log: Log, callbacks: Sequence, place: Optional[distribute.Cluster] = None,
             on_model_ready: Callable[[], None] = lambda: None, resuming: bool = False) -> dict:
    """Both phases and the test, checkpointed each epoch, then the run's result files."""
    import keras

    started = time.perf_counter()
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = distribute.make_strategy(config.strategy, place, config.peer_timeout, log)
    keras.utils.set_random_seed(config.seed)
    data = _datasets(config, images, strategy, place)
    store.clean()
    try:
        with strategy.scope():
            resumed, restored = store.restore() if resuming else (None, None)
            job = TrainingJob(config, run, log, store, resumed)
            if resumed:
                log(f"Resuming {run.root} after epoch {resumed.epochs_done} (phase {resumed.phase}).")
            model = restored if job.resumed_full else build_classifier(
                get_backbone(config.backbone), len(images.split.classes), (config.image_size,) * 2,
                parse_weights(config.weights), augment=config.augment, dropout=config.dropout)
            distribute.patch_keras_for_multi_worker(model, strategy)
            n_layers = _backbone_layers(model, config)
            on_model_ready()
            _phase1(job, model, data, images, strategy, callbacks,
                    restored if resumed is not None and resumed.kind == "head" else None)
            _phase2(job, model, data, len(images.split.classes), n_layers, callbacks)
            tested = _test(model, data, images, config, log)
    except KeyboardInterrupt:
        _say_how_to_resume(store, run, log)
        raise
    except Exception as exc:
        if distribute.is_multi_worker(strategy) and distribute.worker_lost(exc):
            _stop_for_a_lost_worker(exc, store, run, config)
        raise
    return _write_results(job, model, tested, images, run, store, started)


def _backbone_layers(model, config: TrainConfig) -> int:
    """The backbone's layer count, once --fine-tune-at is known to be inside it."""
    n_layers = len(model.get_layer(BACKBONE).layers)
    if config.fine_tune_at > n_layers:
        raise TlxError(f"--fine-tune-at {config.fine_tune_at} is past the last layer of "
                       f"{config.backbone} ({n_layers} layers).")
    return n_layers


def _phase1(job: "TrainingJob", model, data: _Datasets, images: data_mod.Images, strategy,
            callbacks: Sequence, restored_head) -> None:
    """The new head on the frozen backbone (skipped when a resumed run is past it)."""
    config, log = job.config, job.log
    p1 = config.phase1_epochs
    if job.phase != 1 or (job.resumed_full and job.epochs_done >= p1):
        return
    _banner(log, f"Phase 1: frozen {config.backbone}, Adam {config.learning_rate:g}, "
                 f"{p1} epochs" + (", cached features" if config.cache_features else ""))
    num_classes = len(images.split.classes)
    if config.cache_features:
        _phase1_cached(model, job, images, num_classes, strategy, callbacks, restored_head)
        return
    if not job.resumed_full:
        compile_phase1(model, num_classes, config.learning_rate)
        _initial(job, model.evaluate(data.validation, verbose=0, return_dict=True))
    if job.epochs_done < p1:
        model.fit(data.train, validation_data=data.validation, steps_per_epoch=data.train_steps,
                  initial_epoch=job.epochs_done, epochs=p1, verbose=0, shuffle=False,
                  callbacks=[job.callback(1, "full"), *callbacks])


def _phase2(job: "TrainingJob", model, data: _Datasets, num_classes: int, n_layers: int,
            callbacks: Sequence) -> None:
    """Fine-tuning from --fine-tune-at at a tenth of the rate (BatchNorm stays in inference
    mode: the backbone was called with training=False when the classifier was built)."""
    config, log = job.config, job.log
    p1, total = config.phase1_epochs, config.total_epochs
    if not (config.phase2_epochs > 0 and job.epochs_done < total):
        if model.optimizer is None or not model.compiled:
            compile_phase1(model, num_classes, config.learning_rate)
        return
    _banner(log, f"Phase 2: fine-tuning from layer {config.fine_tune_at} of {n_layers}, "
                 f"RMSprop {config.learning_rate / 10:g}, epochs {p1 + 1}-{total}")
    if job.phase < 2:
        unfreeze(model, config.fine_tune_at)
        compile_phase2(model, num_classes, config.learning_rate)
        job.epochs_done = max(job.epochs_done, p1)
        log(f"trainable weights: {len(model.trainable_weights)} tensors, "
            f"{sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} values")
    model.fit(data.train, validation_data=data.validation, steps_per_epoch=data.train_steps,
              initial_epoch=job.epochs_done, epochs=total, verbose=0, shuffle=False,
              callbacks=[job.callback(2, "full"), *callbacks])


@dataclass(frozen=True)
class _Tested:
    """The test split's loss and accuracy, and nine test images with their logits for the plot."""

    result: dict
    shown: np.ndarray
    pixels: np.ndarray
    labels: np.ndarray
    logits: np.ndarray


def _test(model, data: _Datasets, images: data_mod.Images, config: TrainConfig, log: Log) -> _Tested:
    _banner(log, "Test")
    result = model.evaluate(data.test, verbose=0, return_dict=True)
    # Nine test images spread over the classes (the split lists them class by class).
    test_rows, y_test = images.rows("test")
    shown = np.sort(np.random.default_rng(config.seed).permutation(len(test_rows))[:9])
    pixels = np.asarray(images.pixels[test_rows[shown]])
    # A plain call: predict() would gather outputs across workers under multi-worker.
    logits = np.asarray(model(pixels.astype(np.float32), training=False))
    return _Tested(result, shown, pixels, y_test[shown], logits)


def _say_how_to_resume(store: CheckpointStore, run: RunDir, log: Log) -> None:
    saved = store.latest
    if saved is not None:
        # What state.json says, not the epoch in progress: a save is never half done
        # (checkpoints.hold_interrupts).
        log(f"\nInterrupted. The last complete epoch ({saved.epochs_done}, phase {saved.phase}) is saved in "
            f"{run.checkpoints}.\nContinue with:  tlx train --resume {run.root}")
    else:
        log("\nInterrupted before the first epoch finished; nothing to resume.")


def _stop_for_a_lost_worker(exc: BaseException, store: CheckpointStore, run: RunDir,
                            config: TrainConfig) -> None:
    saved = store.latest
    where = (f"The last complete epoch ({saved.epochs_done}, phase {saved.phase}) is saved in "
             f"{run.checkpoints}" if saved is not None else "No epoch had finished")
    raise TlxError(f"Another worker of the cluster stopped ({distribute.first_line(exc)}). {where}. "
                   f"Start `tlx train --resume {config.out}` on every machine to continue.") from None


def _write_results(job: "TrainingJob", model, tested: _Tested, images: data_mod.Images, run: RunDir,
                   store: CheckpointStore, started: float) -> dict:
    """model.keras, metrics, history and plots; then the run is marked finished."""
    from tlx.trainer import plots

    split = images.split
    metrics = {"test_loss": float(tested.result["loss"]), "test_accuracy": float(tested.result["accuracy"]),
               "num_test": len(split.test)}
    save_model(model, run.model)
    files.write_json(run.metrics, metrics)
    files.write_json(run.history, job.history)
    plots.learning_curves(job.history, run.learning_curves)
    logits = tested.logits
    predicted = (logits[:, 0] > 0).astype(int) if len(split.classes) == 2 else np.argmax(logits, axis=1)
    plots.predictions(tested.pixels, tested.labels, predicted, split.classes, run.predictions)
    summary = summarize(job.config, split, job.history, metrics, time.perf_counter() - started, run)
    store.mark_finished()
    return summary


def _initial(job: "TrainingJob", result: dict) -> None:
    job.history["initial"] = {"loss": float(result["loss"]), "accuracy": float(result["accuracy"])}
    job.log(f"before training: loss0 {result['loss']:.4f}  accuracy0 {result['accuracy']:.4f}")


def _phase1_cached(model, job: "TrainingJob", images: data_mod.Images, num_classes: int, strategy,
                   callbacks: Sequence, restored_head=None) -> None:
    """Phase 1 on pooled backbone features computed once; then the head's weights go
    into the full model. Exact because the frozen base runs in inference mode and no
    augmentation is involved (config.validate() enforces that)."""
    import tensorflow as tf

    config = job.config
    features = feature_model(model)
    t0 = time.perf_counter()

    def features_of(name: str):
        # Batches read from the pixel cache: only the features (not the pixels) of the
        # whole split are in memory.
        rows, labels = images.rows(name)
        ds = pipeline.make_dataset(images.pixels, rows, labels, num_classes, config.batch_size,
                                   with_labels=False)
        return features.predict(ds, verbose=0), labels

    f_train, y_train = features_of("train")
    f_val, y_val = features_of("validation")
    job.log(f"backbone features of {len(f_train) + len(f_val)} images computed once "
            f"in {time.perf_counter() - t0:.1f} s")
    job.history.setdefault("feature_seconds", time.perf_counter() - t0)
    dtype = pipeline.label_dtype(num_classes)

    def dataset(f, y, shuffle):
        ds = tf.data.Dataset.from_tensor_slices((f, y.astype(dtype))).cache()
        if shuffle:
            ds = ds.shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True)
        return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)

    if restored_head is not None:
        head = restored_head
    else:
        head = build_head(f_train.shape[1], num_classes, config.dropout)
        # Start from the full model's own initial head, so the cached phase 1 trains the
        # same weights the tutorial pipeline would.
        head.get_layer(LOGITS).set_weights(model.get_layer(LOGITS).get_weights())
        compile_phase1(head, num_classes, config.learning_rate)
        _initial(job, head.evaluate(dataset(f_val, y_val, False), verbose=0, return_dict=True))
    if job.epochs_done < config.phase1_epochs:
        head.fit(dataset(f_train, y_train, True), validation_data=dataset(f_val, y_val, False),
                 initial_epoch=job.epochs_done, epochs=config.phase1_epochs, verbose=0, shuffle=False,
                 callbacks=[job.callback(1, "head"), *callbacks])
    copy_head(head, model)
    compile_phase1(model, num_classes, config.learning_rate)
    # Built now so that a saved model.keras carries a complete optimizer (Keras warns on
    # load about an unbuilt one otherwise).
    model.optimizer.build(model.trainable_variables)
