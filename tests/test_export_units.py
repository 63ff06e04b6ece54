"""tlx export pieces on tiny models: the format table, calibration sampling and range, the
converter's error messages, the inference model. Seconds, not minutes."""

from __future__ import annotations

import numpy as np
import pytest

from tlx.errors import TlxError
from tlx.export import calibration
from tlx.export.formats import DEFAULT_FORMATS, FORMATS, ExportFormat, Quantization, get_format


# --- the format table --------------------------------------------------------------------

def test_cli_choices_come_from_the_format_table():
    assert [f.value for f in ExportFormat] == list(FORMATS)
    assert set(DEFAULT_FORMATS) <= set(FORMATS)
    assert len({spec.filename for spec in FORMATS.values()}) == len(FORMATS)
    assert [name for name, spec in FORMATS.items() if spec.needs_calibration] == ["int8"]


def test_unknown_format_lists_valid_ones():
    with pytest.raises(TlxError) as info:
        get_format("float64")
    for name in FORMATS:
        assert name in str(info.value)
    assert get_format(ExportFormat("int8")).quantization is Quantization.INT8


# --- calibration sample ------------------------------------------------------------------

def _train(counts):
    return [(f"/data/c{label}/{i:03d}.png", label) for label, n in enumerate(counts) for i in range(n)]


def test_calibration_sample_is_class_balanced_and_deterministic():
    assert list(np.bincount([label for _, label in calibration.select(_train([50, 40, 30]), 30)])) == [10, 10, 10]
    train = _train([50, 50, 8])
    chosen = calibration.select(train, 30)
    assert list(np.bincount([label for _, label in chosen], minlength=3)) == [11, 11, 8]
    assert calibration.select(list(reversed(train)), 30) == chosen  # order of the split does not matter
    assert calibration.select(train, 30, seed=1) != chosen
    # A small class gives all it has; the others fill the rest.
    chosen = calibration.select(train, 60)
    assert list(np.bincount([label for _, label in chosen], minlength=3)) == [26, 26, 8]
    assert len(set(chosen)) == len(chosen)
    assert len(calibration.select(train, 1000)) == len(train)


def test_calibration_sample_needs_a_positive_count():
    with pytest.raises(TlxError, match="at least 1"):
        calibration.select(_train([3]), 0)


def test_empty_calibration_set():
    with pytest.raises(TlxError, match="empty"):
        calibration.from_arrays(np.zeros((0, 8, 8, 3), np.uint8), [], [], (8, 8))


def test_unreadable_calibration_images_are_skipped_and_all_unreadable_is_an_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(TlxError, match="calibration set is empty.*unreadable"):
        calibration.load([(str(bad), 0)], (8, 8))


def test_calibration_images_of_the_wrong_shape():
    with pytest.raises(TlxError, match=r"shape \(16, 16, 3\).*\(8, 8, 3\)"):
        calibration.from_arrays(np.zeros((2, 16, 16, 3), np.uint8), [], [], (8, 8))
    with pytest.raises(TlxError, match="shape"):
        calibration.from_arrays(np.zeros((2, 8, 8), np.uint8), [], [], (8, 8))


def test_calibration_reads_through_the_shared_preprocessing(tmp_path):
    from PIL import Image

    from tlx.imaging import load_image

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 4), dtype=np.uint8), "RGBA").save(path)
    for version in (1, 2):  # the run's preprocessing version, as training read the images
        cal = calibration.load([(str(path), 0)], (8, 8), preprocessing=version)
        expected = calibration.cover_full_range(load_image(path, (8, 8), version=version)[np.newaxis])
        np.testing.assert_array_equal(cal.pixels, expected)
    assert not np.array_equal(load_image(path, (8, 8), version=1), load_image(path, (8, 8), version=2))
    batch = next(iter(cal.representative_dataset()()))
    assert batch[0].dtype == np.float32 and batch[0].shape == (1, 8, 8, 3)


def test_cover_full_range_touches_one_pixel_per_missing_endpoint():
    pixels = np.random.default_rng(0).integers(20, 231, (3, 8, 8, 3)).astype(np.uint8)
    covered = calibration.cover_full_range(pixels)
    assert covered.min() == 0 and covered.max() == 255
    assert np.count_nonzero(np.any(covered != pixels, axis=-1)) == 2
    full = pixels.copy()
    full[1, 2, 3, 0], full[2, 3, 4, 1] = 0, 255
    assert calibration.cover_full_range(full) is full


def _tiny_model(num_outputs=3, size=8):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="normalization")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(num_outputs)(x)))


def _input_quantization(content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    return it.get_input_details()[0]["quantization"]


def test_dim_calibration_images_still_give_input_scale_one_zero_point_zero():
    """DESIGN: data clipped to 20..230 gave input scale 0.902. Our calibration set covers
    0..255 whatever the photos, so the uint8 input stays the identity."""
    from tlx.export.convert import convert, saved_model

    dim = np.random.default_rng(0).integers(20, 231, (16, 8, 8, 3)).astype(np.uint8)
    with saved_model(_tiny_model()) as saved:
        ours = convert(saved, FORMATS["int8"],
                       representative=calibration.from_arrays(dim, [], [], (8, 8)).representative_dataset())
        assert _input_quantization(ours) == (1.0, 0)

        def raw():
            for image in dim:
                yield [image[np.newaxis].astype(np.float32)]

        naive = convert(saved, FORMATS["int8"], representative=raw)
        assert _input_quantization(naive)[0] < 0.95  # what the fix is for


# --- converter errors ----------------------------------------------------------------------

def test_unsupported_op_error_names_the_op_and_the_layer():
    import keras

    from tlx.export.convert import convert, saved_model

    inputs = keras.Input((8, 8, 3))
    # Augmentation forced on: random ops only TF Select has (what exporting the training model does).
    x = keras.layers.RandomRotation(0.2, name="augmentation")(inputs, training=True)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with saved_model(keras.Model(inputs, outputs)) as saved:
        with pytest.raises(TlxError) as info:
            convert(saved, FORMATS["float32"])
    message = str(info.value)
    assert "ImageProjectiveTransformV3 (layer 'augmentation')" in message
    assert "float32" in message
    assert "loc(" not in message


def test_converter_error_text_without_ops():
    from tlx.export.convert import explain_converter_error

    assert "failed for the int8 format: boom" in explain_converter_error(RuntimeError("boom\nmore"), "int8")


# --- the inference model -------------------------------------------------------------------

def test_inference_model_needs_the_layer_name_contract():
    import keras

    from tlx.export.inference import build_inference_model

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(inputs)))
    with pytest.raises(TlxError, match="'normalization', 'backbone', 'pool'"):
        build_inference_model(model, 3)


def test_inference_model_drops_augmentation_and_dropout_and_is_deterministic():
    import keras

    from tlx.export.inference import build_inference_model
    from tlx.trainer.backbones import Normalization, BackboneSpec
    from tlx.trainer.model import build_classifier

    def tiny_base(shape, weights):
        inputs = keras.Input(shape)
        return keras.Model(inputs, keras.layers.Conv2D(8, 3)(inputs))

    spec = BackboneSpec(tiny_base, Normalization(1 / 127.5, -1.0), 16, 0, "", lambda: "offline")
    trained = build_classifier(spec, 2, (16, 16), weights=None, dropout=0.5)
    model = build_inference_model(trained, 2)
    names = [layer.name for layer in model.layers]
    assert "augmentation" not in names and "dropout" not in names
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    first = model(pixels, training=True).numpy()
    np.testing.assert_array_equal(first, model(pixels, training=True).numpy())
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-6)
    logit = trained(pixels, training=False).numpy()[:, 0]
    np.testing.assert_allclose(first[:, 1], 1 / (1 + np.exp(-logit)), atol=1e-6)
    with pytest.raises(TlxError, match="labels"):
        build_inference_model(trained, 3)


# --- parity --------------------------------------------------------------------------------

def test_centered_logits_recover_logits_up_to_a_shift():
    from tlx.export.parity import centered_logits, compare

    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(centered_logits(probs), logits - logits.mean(axis=1, keepdims=True), atol=1e-9)
    shifted = probs.copy()
    shifted[0] = np.exp(logits[0] + [0.01, 0, 0]) / np.exp(logits[0] + [0.01, 0, 0]).sum()
    result = compare("float32", shifted, probs, np.array([0, 1]))
    assert result.max_abs_logit_diff == pytest.approx(0.01 * 2 / 3, abs=1e-9)
    assert result.top1_agreement == 1.0 and result.accuracy == 1.0 and result.accuracy_drop_points == 0
    assert compare("int8", shifted, probs, np.array([0, 1]), float_output=False).max_abs_logit_diff is None


def test_exported_metadata_names_the_runs_preprocessing_version():
    from tlx.export.records import common_tlx_info

    normalization = {"scale": 1 / 127.5, "offset": -1.0}
    for version in (1, 2):
        info = common_tlx_info("run", "sha", "tiny", ["a", "b"], (8, 8), normalization, version)
        assert info["preprocessing"]["version"] == version
        assert info["preprocessing"]["function"] == "tlx.imaging.load_image"
