"""int8 float fallback (tlx.export.fallback): a model built to be hostile to int8 loses most of
its accuracy as full-int8, and keeping the layers the debugger ranks worst in float restores it.

The hostile model (fixed weights, no training, 8x8 pixels): a normal 3x3 stem conv, then
`outlier_conv`, a 1x1 conv whose channels 0..2 pass the colour channels at a small scale
(up to 0.1) while channel 3 is a huge brightness response (up to 300). int8 quantizes that
tensor per tensor: one step is about 1.2, so the three colour channels, which carry the
class, all round to zero. `mix_conv` then scales the colour channels back up (and ignores
channel 3), a pooled dense head classifies. Float: ~100%; int8: chance.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tlx.errors import TlxError
from tlx.export.fallback import repair_int8
from tlx.export.fallback_report import write_reports
from tlx.export.sensitivity import channel_error, layer_name

SIZE = 8
COLOURS = np.array([(220, 40, 40), (40, 200, 60), (50, 70, 230)], np.float32)


def _model(outlier: float):
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(3, 3, padding="same", activation="relu", name="stem")(x)
    x = layers.Conv2D(4, 1, activation="relu", name="outlier_conv")(x)
    x = layers.Conv2D(3, 1, activation="relu", name="mix_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)

    rng = np.random.default_rng(0)
    stem = rng.normal(0, 0.01, (3, 3, 3, 3)).astype(np.float32)
    stem[1, 1] += np.eye(3, dtype=np.float32)
    model.get_layer("stem").set_weights([stem, np.zeros(3, np.float32)])
    kernel = np.zeros((1, 1, 3, 4), np.float32)
    kernel[0, 0, :, :3] = 0.1 * np.eye(3)  # the class signal, small
    kernel[0, 0, :, 3] = outlier / 3  # brightness, huge when outlier is large
    model.get_layer("outlier_conv").set_weights([kernel, np.zeros(4, np.float32)])
    mix = np.zeros((1, 1, 4, 3), np.float32)
    mix[0, 0, :3, :3] = 10 * np.eye(3)
    model.get_layer("mix_conv").set_weights([mix, np.zeros(3, np.float32)])
    model.get_layer("head").set_weights([10 * np.eye(3, dtype=np.float32) - 5,
                                         np.zeros(3, np.float32)])
    return model


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    pixels = COLOURS[labels][:, None, None, :] + rng.normal(0, 40, (n, SIZE, SIZE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """{"hostile": SavedModel dir, "healthy": SavedModel dir (outlier channel of normal size)}."""
    root = tmp_path_factory.mktemp("fallback")
    out = {}
    for name, outlier in (("hostile", 300.0), ("healthy", 0.3)):
        out[name] = root / name
        _model(outlier).export(str(out[name]), format="tf_saved_model", verbose=False)
    return out


@pytest.fixture(scope="module")
def data():
    return {"calibration": _data(30, 1)[0], "val": _data(60, 2), "test": _data(60, 3)}


def test_hostile_model_is_repaired(saved_models, data, tmp_path):
    val_pixels, val_labels = data["val"]
    test_pixels, test_labels = data["test"]
    result = repair_int8(saved_models["hostile"], data["calibration"], val_pixels, val_labels,
                         max_drop_points=2.0, test_pixels=test_pixels, test_labels=test_labels)
    assert write_reports(result, tmp_path) == []

    assert result.reference_accuracy >= 0.95
    plain = result.steps[0]
    assert plain.float_layers == () and plain.float_ops == 0
    assert plain.val_drop_points > 30, "the hostile model should collapse as plain int8"
    assert result.layers[0].layer == "outlier_conv"
    assert result.passed
    chosen = result.chosen_step
    assert chosen.float_layers == ("outlier_conv",)
    assert chosen.val_drop_points <= 2.0
    # The sensitive conv and the conv that reads its output run in float; the rest is int8.
    assert chosen.float_ops == 2 and len(chosen.float_nodes) == 2
    # Reported on the test split (not used to decide).
    assert result.test["int8_drop_points"] > 30
    assert result.test["chosen_drop_points"] <= 5.0

    from tlx.inspect import inspect_bytes

    report = inspect_bytes(result.model)
    [inp], [out] = report.inputs, report.outputs
    assert (inp.dtype, inp.scale, inp.zero_point) == ("uint8", 1.0, 0)
    assert out.dtype == "uint8"
    convs = next(op for op in report.ops if op.op == "CONV_2D")
    assert convs.dtypes == {"float32": 2, "int8": 1}

    with open(result.files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["layer"] == "outlier_conv" and rows[0]["float_in_chosen"] == "True"
    assert rows[0]["added_at_step"] == "1"
    assert {r["layer"] for r in rows if r["float_in_chosen"] == "True"} == {"outlier_conv", "mix_conv"}
    assert {r["layer"] for r in rows} >= {"stem", "outlier_conv", "mix_conv", "head"}
    assert result.files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = result.to_json()
    assert summary["float_layers"] == ["outlier_conv"] and summary["decided_on"] == "validation"
    assert [s["step"] for s in summary["steps"]] == [0, 1]


def test_healthy_model_stays_plain_int8(saved_models, data, tmp_path):
    val_pixels, val_labels = data["val"]
    result = repair_int8(saved_models["healthy"], data["calibration"], val_pixels, val_labels,
                         max_drop_points=2.0, reference_accuracy=1.0)
    write_reports(result, tmp_path)
    assert result.passed and result.chosen == 0 and len(result.steps) == 1
    assert result.chosen_step.float_layers == ()
    # Plain int8 is within the limit: the (slow) debugger never ran, no layer was ranked.
    assert result.layers == []
    assert result.files["csv"].is_file() and result.files["png"].is_file()


def test_limit_not_met_keeps_the_best_candidate(saved_models, data):
    val_pixels, val_labels = data["val"]
    # An unreachable reference: no step can be within 0 points of 150%.
    result = repair_int8(saved_models["hostile"], data["calibration"], val_pixels, val_labels,
                         max_drop_points=0.0, reference_accuracy=1.5, max_steps=2)
    assert not result.passed
    assert 1 < len(result.steps) <= 3
    best = max(s.val_accuracy for s in result.steps)
    assert result.chosen_step.val_accuracy == best
    assert result.chosen_step.float_layers[0] == "outlier_conv"


def test_bad_inputs(saved_models, data):
    pixels, labels = data["val"]
    with pytest.raises(TlxError, match="validation"):
        repair_int8(saved_models["hostile"], data["calibration"], pixels[:0], labels[:0],
                    max_drop_points=1.0)
    with pytest.raises(TlxError, match="Choose from"):
        repair_int8(saved_models["hostile"], data["calibration"], pixels, labels,
                    max_drop_points=1.0, metric="nope")
    with pytest.raises(TlxError, match="uint8"):
        repair_int8(saved_models["hostile"], data["calibration"].astype(np.float32), pixels,
                    labels, max_drop_points=1.0)


def test_channel_error():
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, (1, 4, 4, 4)).astype(np.float32)
    values[..., 3] *= 1000  # the outlier channel sets the range
    scale = float(values.max()) / 255
    quantized = np.round(values / scale).astype(np.int32) - 128
    # Channels 0..2 all round to 0: three of four channels lost.
    assert channel_error(values, quantized, scale, -128) == pytest.approx(0.75, abs=0.01)
    fine = values[..., :3]
    scale = float(fine.max()) / 255
    assert channel_error(fine, np.round(fine / scale) - 128, scale, -128) < 0.01
    assert channel_error(np.zeros((1, 3)), np.zeros((1, 3)), 0.1, 0) == 0.0


def test_layer_name():
    assert layer_name("functional_1/outlier_conv_1/Relu;functional_1/outlier_conv_1/convolution1") \
        == "outlier_conv"
    assert layer_name("functional_1/mobilenetv2_1.00_160_1/block_3_expand_1/Relu6") == "block_3_expand"
    assert layer_name("functional_1/efficientnet_lite0_1/block1a_project_bn_1/batchnorm/add_1;"
                      "functional_1/efficientnet_lite0_1/block1a_project_conv_1/convolution") \
        == "block1a_project_bn"
    assert layer_name("functional_1/head_1/MatMul2") == "head"
    assert layer_name("StatefulPartitionedCall_1:0") == "StatefulPartitionedCall_1:0"
