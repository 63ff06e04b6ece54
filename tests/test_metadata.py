"""Standard TFLite Metadata and tlx's own metadata in exported models.

A tiny Keras classifier (raw 0..255 pixels in, Rescaling inside, conv, pooling, softmax over
3 classes) is converted to float32 and full-int8 TFLite once per module; each test then
annotates it. Fixed weights make the model pick the dominant colour channel with a clear
margin, so top-1 comparisons between interpreters are meaningful (no near-ties).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import synthetic_image
from tests.support.tflite import convert_float_and_int8
from tlx.export.metadata_writer import with_metadata
from tlx.metadata_codec import METADATA_FIELD_NAME, decode, encode, metadata_buffer, \
    read_model_metadata
from tlx.runtime.associated_files import associated_files, read_labels, read_tlx_metadata

LABELS = ["red", "green", "blue"]
SIZE = 32
TLX_INFO = {
    "format": "int8",
    "labels": LABELS,
    "image_size": [SIZE, SIZE],
    "backbone": "tiny-test",
    "normalization": {"kind": "in_graph", "scale": 1 / 127.5, "offset": -1.0},
    "preprocessing": {"resize": "bilinear", "color": "RGB"},
    "run_id": "20260101-000000-test",
    "tlx_version": "0.0.0-test",
}


def _tiny_model():
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(len(LABELS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)

    conv, dense = model.layers[2], model.layers[-1]
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.02, size=(3, 3, 3, 4)).astype("float32")
    for c in range(3):
        kernel[1, 1, c, c] = 1.0  # filter c passes colour channel c
    conv.set_weights([kernel, np.zeros(4, "float32")])
    weights = np.zeros((4, len(LABELS)), "float32")
    weights[:3, :3] = 6 * np.eye(3)
    dense.set_weights([weights, np.zeros(len(LABELS), "float32")])
    return model


def _images(n_per_class=2, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(synthetic_image(c, rng, size=(SIZE, SIZE)))
                     for _ in range(n_per_class) for c in range(len(LABELS))])


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory) -> dict[str, bytes]:
    """{"float32": bytes, "int8": bytes} without metadata."""
    return convert_float_and_int8(_tiny_model(), tmp_path_factory.mktemp("saved"),
                                  _images(n_per_class=4, seed=2).astype("float32"))


@pytest.fixture(scope="module")
def annotated(tflite_models) -> dict[str, bytes]:
    return {fmt: with_metadata(model, labels=LABELS, tlx_info={**TLX_INFO, "format": fmt})
            for fmt, model in tflite_models.items()}


def _run(model: bytes, images: np.ndarray) -> np.ndarray:
    """Dequantized output scores of `model` on uint8 `images`, via ai-edge-litert."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scores = []
    for image in images:
        x = image[None].astype("float32")
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].astype("float32")
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        scores.append(y)
    return np.stack(scores)


def _metadata_entries(model: bytes) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(model, 0)
    return [m.Metadata(i).Name().decode() for i in range(m.MetadataLength())]


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_annotated_model_runs_with_identical_outputs(tflite_models, annotated, fmt):
    images = _images()
    before, after = _run(tflite_models[fmt], images), _run(annotated[fmt], images)
    np.testing.assert_array_equal(before, after)
    # The fixed weights make the dominant colour win by a clear margin.
    assert list(before.argmax(1)) == [0, 1, 2, 0, 1, 2]
    assert np.all(np.sort(before, 1)[:, -1] - np.sort(before, 1)[:, -2] > 0.2)


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_associated_files_are_a_zip_with_absolute_offsets(annotated, fmt):
    model = annotated[fmt]
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert archive.namelist() == ["labels.txt", "tlx.json"]
        assert archive.read("labels.txt").decode() == "red\ngreen\nblue\n"
        assert json.loads(archive.read("tlx.json")) == {**TLX_INFO, "format": fmt}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
    # Like tflite-support's populator: the central directory offset counts from the start
    # of the .tflite, not from the start of the zip.
    eocd = model[-22:]
    assert eocd[:4] == b"PK\x05\x06"
    (cd_offset,) = struct.unpack("<I", eocd[16:20])
    assert model[cd_offset:cd_offset + 4] == b"PK\x01\x02"


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_runtime_reader_round_trip(tflite_models, annotated, fmt):
    assert read_tlx_metadata(annotated[fmt]) == {**TLX_INFO, "format": fmt}
    assert read_labels(annotated[fmt]) == LABELS
    assert associated_files(annotated[fmt]) == ["labels.txt", "tlx.json"]
    # A model without metadata: nothing to read, no error.
    assert read_tlx_metadata(tflite_models[fmt]) is None
    assert read_labels(tflite_models[fmt]) is None
    assert associated_files(tflite_models[fmt]) == []


def test_standard_metadata_content(tflite_models, annotated):
    assert read_model_metadata(tflite_models["float32"]) is None
    meta = read_model_metadata(annotated["int8"])
    assert meta["author"] == "tlx"
    assert meta["name"] == "tlx image classifier"
    assert meta["version"] == TLX_INFO["run_id"]
    assert meta["min_parser_version"] == "1.0.0"
    assert "3 categories" in meta["description"]
    [graph] = meta["subgraph_metadata"]
    [image] = graph["input_tensor_metadata"]
    assert image["name"] == "image"
    assert image["content"] == {"content_properties_type": "ImageProperties",
                                "content_properties": {"color_space": "RGB"}}
    assert image["process_units"] == [{"options_type": "NormalizationOptions",
                                       "options": {"mean": [0.0], "std": [1.0]}}]
    assert image["stats"] == {"max": [255.0], "min": [0.0]}
    [probability] = graph["output_tensor_metadata"]
    assert probability["name"] == "probability"
    assert probability["content"]["content_properties_type"] == "FeatureProperties"
    assert probability["stats"] == {"max": [1.0], "min": [0.0]}
    [labels_file] = probability["associated_files"]
    assert (labels_file["name"], labels_file["type"]) == ("labels.txt", "TENSOR_AXIS_LABELS")
    assert [f["name"] for f in meta["associated_files"]] == ["tlx.json"]
    assert metadata_buffer(annotated["int8"])[4:8] == b"M001"


def test_schema_encode_decode_round_trip():
    obj = {
        "name": "m", "version": "2", "author": "a", "license": "Apache-2.0",
        "subgraph_metadata": [{
            "name": "g",
            "input_tensor_metadata": [{
                "name": "x", "dimension_names": ["h", "w"],
                "content": {"content_properties_type": "ImageProperties",
                            "content_properties": {"color_space": "GRAYSCALE",
                                                   "default_size": {"width": 7, "height": 5}},
                            "range": {"min": 1, "max": 2}},
                "process_units": [{"options_type": "ScoreThresholdingOptions",
                                   "options": {"global_score_threshold": 0.5}}],
            }],
            "output_tensor_metadata": [{
                "name": "y",
                "content": {"content_properties_type": "BoundingBoxProperties",
                            "content_properties": {"index": [0, 2, 1, 3], "type": "CENTER",
                                                   "coordinate_type": "PIXEL"}},
                "associated_files": [{"name": "l.txt", "type": "TENSOR_VALUE_LABELS",
                                      "locale": "en"}],
            }],
        }],
    }
    assert decode(encode("ModelMetadata", obj)) == obj
    with pytest.raises(ValueError, match="no field"):
        encode("ModelMetadata", {"nmae": "typo"})
    with pytest.raises(ValueError, match="color_space"):
        encode("ImageProperties", {"color_space": "CMYK"})


def test_exporting_twice_keeps_one_metadata_entry(tflite_models, annotated):
    once = annotated["int8"]
    entries = _metadata_entries(once)
    assert entries.count(METADATA_FIELD_NAME) == 1
    # The converter's own entries (min_runtime_version, CONVERSION_METADATA) survive.
    assert set(_metadata_entries(tflite_models["int8"])) < set(entries)

    same_again = with_metadata(once, labels=LABELS, tlx_info={**TLX_INFO, "format": "int8"})
    assert same_again == once  # deterministic: re-exporting gives the same bytes

    renamed = ["rouge", "vert", "bleu"]
    twice = with_metadata(once, labels=renamed, tlx_info={**TLX_INFO, "labels": renamed})
    assert _metadata_entries(twice) == entries
    assert read_labels(twice) == renamed
    assert read_tlx_metadata(twice)["labels"] == renamed
    assert associated_files(twice) == ["labels.txt", "tlx.json"]
    np.testing.assert_array_equal(_run(twice, _images()), _run(once, _images()))


def test_bad_labels_are_refused(tflite_models):
    model = tflite_models["float32"]
    with pytest.raises(ValueError, match="outputs 3 scores but 2 labels"):
        with_metadata(model, labels=["a", "b"], tlx_info={})
    with pytest.raises(ValueError, match="single-line"):
        with_metadata(model, labels=["a", "b\nc", "d"], tlx_info={})


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                    reason="mediapipe is not installed (pip install 'tlx-edge[dev]')")
def test_mediapipe_image_classifier_agrees_with_litert(annotated, tmp_path):
    images = _images(n_per_class=2, seed=3)
    np.save(tmp_path / "images.npy", images)
    paths = {}
    for fmt, model in annotated.items():
        paths[fmt] = tmp_path / f"model_{fmt}.tflite"
        paths[fmt].write_bytes(model)

    # Its own process: MediaPipe and TensorFlow each load their own native libraries.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "support" / "mediapipe_check.py"),
         str(tmp_path / "images.npy"), *map(str, paths.values())],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])

    for fmt, path in paths.items():
        expected = _run(annotated[fmt], images).argmax(1)
        got = results[str(path)]
        assert [r[0]["index"] for r in got] == list(expected), fmt
        # Names come from labels.txt inside the model, found through the metadata.
        assert [r[0]["category_name"] for r in got] == [LABELS[i] for i in expected], fmt
        # Same scores too: MediaPipe fed the raw pixels (mean 0, std 1 from the metadata).
        litert_top = np.sort(_run(annotated[fmt], images), 1)[:, -1]
        np.testing.assert_allclose([r[0]["score"] for r in got], litert_top, atol=0.01)


def test_runtime_classifier_needs_no_sidecar(annotated, tmp_path):
    """tlx's runtime classifies an annotated file alone: labels from the model itself."""
    from tlx.runtime import Classifier

    path = tmp_path / "model_int8.tflite"
    path.write_bytes(annotated["int8"])
    images = _images(n_per_class=1, seed=4)
    with Classifier.from_file(path) as classifier:
        assert classifier.labels == LABELS
        assert classifier.metadata["run_id"] == TLX_INFO["run_id"]
        expected = _run(annotated["int8"], images).argmax(1)
        got = [classifier.classify(image, top_k=1)[0] for image in images]
    assert [p.index for p in got] == list(expected)
    assert [p.label for p in got] == [LABELS[i] for i in expected]
