"""The two phases through the library, on the tiny test backbone (see tests/support/trainer.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from tests.support.trainer import TINY, TINY_SPEC, make_image_folder, tiny_config
from tlx.errors import TlxError
from tlx.run_dir import RunDir
from tlx.trainer import backbones
from tlx.run_config import TrainConfig
from tlx.trainer.model import feature_model
from tlx.trainer.train import resume, train


@pytest.fixture(scope="module", autouse=True)
def _tiny_registered():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
        yield


def _callback(**hooks):
    import keras

    class Hook(keras.callbacks.Callback):
        pass

    for name, fn in hooks.items():
        setattr(Hook, name, lambda self, *args, _fn=fn, **kw: _fn(self, *args))
    return Hook()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = make_image_folder(root / "data")
    messages: list[str] = []
    summary = train(tiny_config(data, root / "out", phase1_epochs=2, phase2_epochs=1), log=messages.append)
    return RunDir(root / "out"), summary, "\n".join(messages)


def test_a_run_leaves_every_file(finished):
    run, summary, log = finished
    for path in (run.model, run.labels, run.split, run.config, run.history, run.metrics,
                 run.plots / "learning_curves.png", run.plots / "predictions.png"):
        assert path.is_file(), path
    assert run.read_labels() == ["cat", "dog"]
    split = run.read_split()
    assert split.image_size == (32, 32) and len(split.test) == summary["images"]["test"] > 0

    raw = json.loads(run.config.read_text())
    assert set(raw["options"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    config = run.read_config()
    assert config.options.fine_tune_at == TINY_SPEC.default_fine_tune_at  # resolved, not None
    assert {"tlx", "tensorflow", "keras", "numpy"} <= set(config.versions)
    assert len(config.run_id) == 16 and raw["run_id"] == config.run_id

    history = json.loads(run.history.read_text())
    assert len(history["phase1"]["val_accuracy"]) == 2 and len(history["phase2"]["loss"]) == 1
    assert set(history["initial"]) == {"loss", "accuracy"}
    assert history["fine_tune_start_epoch"] == 2
    metrics = json.loads(run.metrics.read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["num_test"] == len(split.test)
    assert summary["test_accuracy"] == metrics["test_accuracy"]
    for png in ("learning_curves.png", "predictions.png"):
        with Image.open(run.plots / png) as image:
            assert image.format == "PNG" and min(image.size) > 200
    state = json.loads(run.state.read_text())
    assert state["finished"] and state["checkpoints"][-1]["epochs_done"] == 3
    # The last two complete checkpoints stay.
    assert [c["epochs_done"] for c in state["checkpoints"]] == [2, 3]
    assert sorted(p.name for p in run.checkpoints.glob("*.keras")) == [c["file"] for c in state["checkpoints"]]
    assert "loss0" in log and "Phase 1" in log and "Phase 2" in log and "epoch   3/3" in log


def test_saved_model_keeps_the_exporter_layer_contract(finished):
    import keras

    run, _, _ = finished
    model = keras.models.load_model(run.model)
    names = {layer.name for layer in model.layers}
    assert {"augmentation", "normalization", "backbone", "pool", "dropout", "logits"} <= names
    assert model.output_shape == (None, 1)


def test_multiclass_uses_one_logit_per_class_and_sparse_loss(tmp_path, three_class_folder):
    import keras

    seen = {}
    hook = _callback(on_train_begin=lambda cb, logs=None: seen.setdefault("loss", cb.model.loss))
    train(tiny_config(three_class_folder, tmp_path / "out", phase2_epochs=0), log=lambda _: None,
          callbacks=[hook])
    model = keras.models.load_model(tmp_path / "out" / "model.keras")
    assert model.output_shape == (None, 3)
    assert isinstance(seen["loss"], keras.losses.SparseCategoricalCrossentropy)
    assert seen["loss"].get_config()["from_logits"]


def test_batchnorm_statistics_do_not_change_in_phase2(tmp_path, image_folder):
    """Phase 2 trains BatchNorm's gamma/beta from fine_tune_at on, but the base runs with
    training=False, so moving_mean / moving_variance keep their values."""
    import keras

    record = {}

    def stats(model):
        base = model.get_layer("backbone")
        return {f"{layer.name}/{name}": np.array(getattr(layer, name).numpy())
                for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
                for name in ("moving_mean", "moving_variance")}

    def kernels(model):
        base = model.get_layer("backbone")
        return {layer.name: np.array(layer.kernel.numpy()) for layer in base.layers
                if isinstance(layer, keras.layers.Conv2D)}

    def begin(cb, logs=None):
        if isinstance(cb.model.optimizer, keras.optimizers.RMSprop):
            record["before"], record["kernels"] = stats(cb.model), kernels(cb.model)
            base = cb.model.get_layer("backbone")
            record["trainable"] = [layer.trainable for layer in base.layers]
            record["names"] = [layer.name for layer in base.layers]

    def end(cb, logs=None):
        if "before" in record:
            record["after"], record["kernels_after"] = stats(cb.model), kernels(cb.model)

    config = tiny_config(image_folder, tmp_path / "out", phase2_epochs=2,
                         learning_rate=0.05)  # a large step so trained weights visibly move
    train(config, log=lambda _: None, callbacks=[_callback(on_train_begin=begin, on_train_end=end)])
    assert record["before"] and record["before"].keys() == record["after"].keys()
    for key, value in record["before"].items():
        np.testing.assert_array_equal(value, record["after"][key], err_msg=key)
    fine_tune_at = TINY_SPEC.default_fine_tune_at
    # Layers from fine_tune_at on train, except BatchNorm (see tlx.trainer.model.unfreeze).
    names = record["names"]
    assert record["trainable"] == [i >= fine_tune_at and not names[i].startswith("bn")
                                   for i in range(len(names))]
    # The test means something: the unfrozen convolutions did train, the frozen one did not.
    np.testing.assert_array_equal(record["kernels"]["conv0"], record["kernels_after"]["conv0"])
    assert not np.allclose(record["kernels"]["conv2"], record["kernels_after"]["conv2"])


def test_cached_features_head_weights_give_the_same_logits(tmp_path, image_folder):
    import keras

    run = RunDir(tmp_path / "out")
    train(tiny_config(image_folder, run.root, augment=False, cache_features=True, phase1_epochs=2,
                      phase2_epochs=0), log=lambda _: None)
    state = json.loads(run.state.read_text())["checkpoints"][-1]
    assert state["kind"] == "head" and state["epochs_done"] == 2
    head = keras.models.load_model(run.checkpoints / state["file"])
    model = keras.models.load_model(run.model)
    assert [layer.name for layer in head.layers[1:]] == ["dropout", "logits"]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
                       for p, _ in run.read_split().train]).astype(np.float32)
    full_logits = model.predict(pixels, verbose=0)
    head_logits = head.predict(feature_model(model).predict(pixels, verbose=0), verbose=0)
    np.testing.assert_allclose(full_logits, head_logits, rtol=1e-5, atol=1e-5)
    assert np.abs(head.get_layer("logits").get_weights()[0]).sum() > 0


def test_cache_features_refuses_augmentation(tmp_path, image_folder):
    with pytest.raises(TlxError, match="--no-augment"):
        train(tiny_config(image_folder, tmp_path / "out", cache_features=True), log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_interrupt_keeps_the_last_checkpoint_and_resume_continues(tmp_path, image_folder):
    import keras

    run = RunDir(tmp_path / "out")
    messages: list[str] = []

    def interrupt(cb, epoch, logs=None):
        if epoch == 1:  # the first phase-2 epoch: its checkpoint was written just before
            raise KeyboardInterrupt

    config = tiny_config(image_folder, run.root, phase1_epochs=1, phase2_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, log=messages.append, callbacks=[_callback(on_epoch_end=interrupt)])
    assert f"tlx train --resume {run.root}" in "\n".join(messages)
    state = json.loads(run.state.read_text())["checkpoints"][-1]
    assert (state["phase"], state["epochs_done"], state["kind"]) == (2, 2, "full")
    assert not run.model.exists() and not run.metrics.exists()
    checkpoint = keras.models.load_model(run.checkpoints / state["file"])
    assert isinstance(checkpoint.optimizer, keras.optimizers.RMSprop)
    steps = -(-len(run.read_split().train) // config.batch_size)
    assert int(checkpoint.optimizer.iterations.numpy()) == steps
    saved_slots = [np.array(v.numpy()) for v in checkpoint.optimizer.variables]

    seen = {}

    def begin(cb, logs=None):
        seen["iterations"] = int(cb.model.optimizer.iterations.numpy())
        seen["slots"] = [np.array(v.numpy()) for v in cb.model.optimizer.variables]

    epochs = []
    resume(run.root, log=messages.append,
           callbacks=[_callback(on_train_begin=begin, on_epoch_begin=lambda cb, e, logs=None: epochs.append(e))])
    assert seen["iterations"] == steps  # optimizer state restored, not a fresh RMSprop
    for a, b in zip(saved_slots, seen["slots"]):
        np.testing.assert_array_equal(a, b)
    assert epochs == [2]  # continued with the last epoch only
    history = json.loads(run.history.read_text())
    assert len(history["phase1"]["loss"]) == 1 and len(history["phase2"]["loss"]) == 2
    assert run.model.is_file() and run.metrics.is_file()
    with pytest.raises(TlxError, match="finished"):
        resume(run.root, log=lambda _: None)


def test_resume_in_cached_phase1_continues_the_head(tmp_path, image_folder):
    run = RunDir(tmp_path / "out")

    def interrupt(cb, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt

    config = tiny_config(image_folder, run.root, augment=False, cache_features=True, phase1_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, log=lambda _: None, callbacks=[_callback(on_epoch_end=interrupt)])
    state = json.loads(run.state.read_text())["checkpoints"][-1]
    assert (state["phase"], state["epochs_done"], state["kind"]) == (1, 1, "head")
    epochs = []
    resume(run.root, log=lambda _: None,
           callbacks=[_callback(on_epoch_begin=lambda cb, e, logs=None: epochs.append(e))])
    assert epochs == [1, 2]  # the second head epoch, then the phase-2 epoch
    history = json.loads(run.history.read_text())
    assert len(history["phase1"]["loss"]) == 2 and len(history["phase2"]["loss"]) == 1


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TlxError, match="not a directory|no config.json"):
        resume(tmp_path / "nothing", log=lambda _: None)
