"""`tlx inspect`: ops, tensors, quantization, metadata and sizes of a .tflite, without TensorFlow.

A tiny classifier (raw pixels in, Rescaling, conv, pooling, dense, softmax) is converted once
per module to float32 and full-int8 (uint8 in and out), and annotated with tlx's metadata.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support.tflite import convert_float_and_int8
from tlx.cli import app
from tlx.export.metadata_writer import with_metadata
from tlx.inspect import inspect_bytes, inspect_model
from tlx.runtime.flatbuffer import TENSOR_ITEM_SIZES, builtin_operator_name
from tlx.runtime.validate import ModelError

LABELS = ["red", "green", "blue"]
SIZE = 16
TLX_INFO = {"labels": LABELS, "image_size": [SIZE, SIZE], "backbone": "tiny-test",
            "run_id": "20260101-000000-test", "tlx_version": "0.0.0-test"}

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent


def _tiny_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(len(LABELS), activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, object]:
    """Paths of {"float32", "int8", "int8_plain" (no metadata)} .tflite files."""
    root = tmp_path_factory.mktemp("inspect")
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, size=(8, SIZE, SIZE, 3)).astype("float32")
    converted = convert_float_and_int8(_tiny_model(), root, calibration)
    float_model, int8_model = converted["float32"], converted["int8"]

    paths = {}
    for name, data in (("float32", with_metadata(float_model, labels=LABELS,
                                                  tlx_info={**TLX_INFO, "format": "float32"})),
                       ("int8", with_metadata(int8_model, labels=LABELS,
                                              tlx_info={**TLX_INFO, "format": "int8"})),
                       ("int8_plain", int8_model)):
        paths[name] = root / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def test_operator_names_match_the_installed_schema():
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items()
             if not k.startswith("_") and isinstance(v, int)}
    for code, name in names.items():
        assert builtin_operator_name(code) == name
    assert builtin_operator_name(3) == "CONV_2D"
    assert builtin_operator_name(100000) == "BUILTIN_100000"
    tensor_types = {k for k in vars(schema.TensorType) if not k.startswith("_")}
    assert tensor_types == set(TENSOR_ITEM_SIZES)


def test_generated_schema_modules_are_current():
    """tlx/runtime/schema_*.py are what scripts/generate_schemas.py makes of the installed
    generated TFLite schema and metadata_schema.fbs."""
    pytest.importorskip("ai_edge_litert.schema_py_generated")
    pytest.importorskip("mediapipe")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "generate_schemas.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_float_model(models):
    report = inspect_model(models["float32"])
    ops = {op.op: op for op in report.ops}
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(ops)
    assert ops["CONV_2D"].count == 1 and ops["CONV_2D"].dtypes == {"float32": 1}
    assert sum(op.count for op in report.ops) == report.num_operators
    assert not report.quantized
    [inp] = report.inputs
    assert inp.shape == [1, SIZE, SIZE, 3] and inp.dtype == "float32" and inp.scale is None
    [out] = report.outputs
    assert out.shape == [1, 3] and out.dtype == "float32"
    assert report.labels == LABELS
    assert report.normalization == {"mean": [0.0], "std": [1.0]}
    assert report.tlx["format"] == "float32" and report.tlx["backbone"] == "tiny-test"
    assert report.metadata["author"] == "tlx"
    assert "TFLITE_METADATA" in report.metadata_entries
    assert set(report.associated_files) == {"labels.txt", "tlx.json"}
    assert report.size == models["float32"].stat().st_size
    assert report.flatbuffer_size < report.size
    # 3*3*3*4 conv + 4*3 dense float32 weights (+ biases) are the bulk of the constants.
    assert report.weights_size >= (3 * 3 * 3 * 4 + 4 * 3) * 4
    assert report.notes == []


def test_int8_model(models):
    report = inspect_model(models["int8"])
    [inp], [out] = report.inputs, report.outputs
    assert inp.dtype == "uint8" and inp.scale == pytest.approx(1.0) and inp.zero_point == 0
    assert out.dtype == "uint8" and out.scale == pytest.approx(1 / 256) and out.zero_point == 0
    ops = {op.op: op for op in report.ops}
    assert ops["CONV_2D"].dtypes == {"int8": 1}
    assert report.quantized and report.float_ops == 0
    assert report.tlx["format"] == "int8"


def test_model_without_metadata(models):
    report = inspect_model(models["int8_plain"])
    assert report.metadata is None and report.labels is None and report.tlx is None
    assert report.normalization is None and report.associated_files == []
    assert report.flatbuffer_size == report.size
    assert "no standard TFLite Metadata" in _cli_text(models["int8_plain"])


def _cli_text(path) -> str:
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_text(models):
    text = _cli_text(models["int8"])
    for expected in ("CONV_2D", "uint8  scale 1 zero point 0", "labels       3: red, green, blue",
                     "normalization mean [0.0] std [1.0]", "tiny-test", "Inputs", "Outputs"):
        assert expected in text


def test_cli_json(models):
    result = runner.invoke(app, ["inspect", str(models["int8"]), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["inputs"][0]["dtype"] == "uint8" and doc["inputs"][0]["scale"] == 1.0
    assert doc["labels"] == LABELS and doc["quantized"] is True
    assert any(op["op"] == "CONV_2D" for op in doc["ops"])
    assert doc["tlx"]["backbone"] == "tiny-test"


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"hello, this is not a model at all", "not a TFLite model"),
    (b"PK\x03\x04" + b"\0" * 40, "not a TFLite model"),
])
def test_not_a_tflite_file(tmp_path, content, message):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_missing_file(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.tflite")])
    assert result.exit_code == 1 and "no such file" in result.output


def test_truncated_model(models):
    data = models["int8_plain"].read_bytes()
    with pytest.raises(ModelError):
        inspect_bytes(data[: len(data) // 2])


def test_inspect_does_not_import_tensorflow(models):
    code = ("import sys; from tlx.cli import app; from typer.testing import CliRunner; "
            f"r = CliRunner().invoke(app, ['inspect', {str(models['int8'])!r}, '--json']); "
            "assert r.exit_code == 0, r.output; assert 'tensorflow' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_control_characters_in_labels_are_shown_escaped_by_inspect_and_predict(models, tmp_path):
    """Labels come from model files a user may have downloaded: an OSC sequence (sets the
    terminal title) or a bidirectional override must be shown, not obeyed."""
    from PIL import Image

    evil = ["red\x1b]0;pwned\x07", "green\u202e", "blue"]
    plain = models["int8_plain"].read_bytes()
    path = tmp_path / "evil.tflite"
    path.write_bytes(with_metadata(plain, labels=evil, tlx_info={**TLX_INFO, "labels": evil}))
    image = tmp_path / "red.png"
    Image.new("RGB", (SIZE, SIZE), (250, 10, 10)).save(image)
    for args in (["inspect", str(path)], ["predict", str(path), str(image), "--top-k", "3"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
        assert "red\\x1b]0;pwned\\x07" in result.output and "green\\u202e" in result.output, args


def _float_tflite(model, workdir) -> bytes:
    import tensorflow as tf

    saved = Path(workdir) / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()


def test_models_that_are_not_one_image_to_one_score_vector_are_refused(tmp_path):
    """Several outputs (which one is the scores?), a dynamic input size (the interpreter reports
    it as 1x1) and NaN scores (no top class exists) are errors, not silent guesses."""
    import keras
    from keras import layers

    from tlx.runtime import Classifier

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = layers.GlobalAveragePooling2D()(inputs)
    two = _float_tflite(keras.Model(inputs, [layers.Dense(3)(pooled), layers.Dense(2)(pooled)]),
                        tmp_path / "two")
    with pytest.raises(ModelError, match="2 outputs"):
        Classifier(two)

    dynamic_in = keras.Input((None, None, 3))
    dynamic = _float_tflite(keras.Model(dynamic_in, layers.Dense(3)(layers.GlobalAveragePooling2D()(dynamic_in))),
                            tmp_path / "dynamic")
    with pytest.raises(ModelError, match="dynamic shape"):
        Classifier(dynamic)

    nan = _float_tflite(keras.Model(inputs, layers.Dense(3)(pooled) * float("nan")), tmp_path / "nan")
    path = tmp_path / "nan.tflite"
    path.write_bytes(with_metadata(nan, labels=LABELS, tlx_info=TLX_INFO))
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (SIZE, SIZE), (9, 99, 199)).save(image)
    result = runner.invoke(app, ["predict", str(path), str(image)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "NaN" in result.output and "1 file(s) failed" in result.output
