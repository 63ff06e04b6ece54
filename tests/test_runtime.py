"""tlx.runtime: classification, metadata, quantization, preprocessing parity, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.runtime import LABELS, MODELS, SIZE, colour_image, models_folder
from tlx.errors import ImageError, MissingDependencyError, TlxError
from tlx.imaging import load_image
from tlx.runtime import Classifier, ModelError, Prediction, validate_model
from tlx.runtime import backends

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)


@pytest.fixture(scope="session")
def models(request) -> Path:
    return models_folder(request)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    colour_image(RED).save(folder / "red.jpg", quality=95)
    colour_image(GREEN).save(folder / "green.png")
    colour_image(BLUE, size=(480, 640)).save(folder / "blue_big.jpg", quality=90)
    return folder


# --- classification ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_classifies_colours_with_labels(models, photos, name):
    in_dtype, in_quant, out_dtype = MODELS[name]
    clf = Classifier.from_file(models / f"{name}.tflite", num_threads=1)
    assert clf.backend == backends.interpreter_class(None)[0]  # litert where installed
    assert clf.input_size == (SIZE, SIZE)
    assert str(clf.input_dtype) == in_dtype and str(clf.output_dtype) == out_dtype
    assert clf.input_quantization == in_quant
    assert clf.labels == LABELS
    assert clf.metadata["image_size"] == [SIZE, SIZE]
    for file, label in (("red.jpg", "red"), ("green.png", "green"), ("blue_big.jpg", "blue")):
        preds = clf.classify(photos / file, top_k=3)
        assert [type(p) for p in preds] == [Prediction] * 3
        assert preds[0].label == label and preds[0].index == LABELS.index(label)
        assert preds[0].score > 0.5
        scores = [p.score for p in preds]
        assert scores == sorted(scores, reverse=True)
        assert abs(sum(scores) - 1.0) < 0.05  # dequantized probabilities


def test_int8_matches_float(models, photos):
    f = Classifier.from_file(models / "float32.tflite")
    q = Classifier.from_file(models / "int8.tflite")
    q8 = Classifier.from_file(models / "int8_int8io.tflite")
    pixels = f.preprocess(photos / "red.jpg")
    np.testing.assert_allclose(f.run(pixels), q.run(pixels), atol=0.06)
    # uint8 and int8 quantized I/O are the same model: identical dequantized scores.
    np.testing.assert_array_equal(q.run(pixels), q8.run(pixels))


def test_model_without_metadata_runs_with_indices(models, photos):
    clf = Classifier.from_file(models / "int8_nometa.tflite")
    assert clf.labels is None and clf.metadata is None
    preds = clf.classify(photos / "red.jpg", top_k=2)
    assert preds[0].index == 0 and preds[0].label is None and preds[0].name == "0"
    with_meta = Classifier.from_file(models / "int8.tflite").classify(photos / "red.jpg", top_k=2)
    assert [p.score for p in preds] == [p.score for p in with_meta]


def test_classify_accepts_path_bytes_pil_and_array(models, photos):
    clf = Classifier.from_file(models / "float32.tflite")
    path = photos / "red.jpg"
    expected = clf.classify(path, top_k=3)
    for source in (str(path), path.read_bytes(), Image.open(path), np.asarray(Image.open(path))):
        assert clf.classify(source, top_k=3) == expected


def test_top_k(models, photos):
    clf = Classifier.from_file(models / "float32.tflite")
    assert len(clf.classify(photos / "red.jpg", top_k=1)) == 1
    assert len(clf.classify(photos / "red.jpg", top_k=10)) == 3
    assert len(clf.classify(photos / "red.jpg", top_k=None)) == 3
    with pytest.raises(TlxError, match="top_k"):
        clf.classify(photos / "red.jpg", top_k=0)


def test_top_ties_sorted_by_index(models):
    clf = Classifier.from_file(models / "int8.tflite")
    preds = clf.top(np.array([0.25, 0.5, 0.25], np.float32), top_k=None)
    assert [p.index for p in preds] == [1, 0, 2]


def test_classify_files_reports_errors_per_file(models, photos, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image, skipped in folders")
    clf = Classifier.from_file(models / "int8.tflite")
    results = list(clf.classify_files([photos, tmp_path, tmp_path / "missing.jpg"], top_k=1))
    by_name = {Path(r.path).name: r for r in results}
    assert set(by_name) == {"red.jpg", "green.png", "blue_big.jpg", "broken.jpg", "empty.png",
                            "missing.jpg"}
    assert by_name["red.jpg"].predictions[0].label == "red"
    for bad in ("broken.jpg", "empty.png", "missing.jpg"):
        assert not by_name[bad].ok and isinstance(by_name[bad].error, ImageError)
        assert by_name[bad].to_json()["error"]
    json.dumps([r.to_json() for r in results])


# --- preprocessing parity ---------------------------------------------------------------

def _awkward_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), "RGB")
    files = {}
    files["jpeg"] = folder / "a.jpg"
    rgb.save(files["jpeg"], quality=92)
    files["png_rgba"] = folder / "b.png"
    rgb.convert("RGBA").save(files["png_rgba"])
    files["cmyk"] = folder / "c.jpg"
    rgb.convert("CMYK").save(files["cmyk"])
    files["gray16"] = folder / "d.png"
    Image.fromarray(rng.integers(0, 65536, (40, 50), dtype=np.uint16)).save(files["gray16"])
    files["exif_rotated"] = folder / "e.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    rgb.save(files["exif_rotated"], exif=exif, quality=92)
    return files


def _with_preprocessing(models, tmp_path, version) -> Path:
    """The int8 test model, its tlx.json naming preprocessing `version` as the exporter writes it."""
    from tests.support.runtime import annotate
    path = tmp_path / f"v{version}.tflite"
    path.write_bytes((models / "int8_nometa.tflite").read_bytes())
    return annotate(path, info={"image_size": [SIZE, SIZE], "labels": LABELS,
                                "preprocessing": {"function": "tlx.imaging.load_image", "version": version}})


def _camera_frame(width=640, height=480) -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.asarray(Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
                      .resize((width, height), Image.Resampling.BICUBIC))


def test_model_is_preprocessed_with_the_version_it_was_trained_with(models, tmp_path):
    frame = _camera_frame()
    jpeg = tmp_path / "frame.jpg"
    Image.fromarray(frame).save(jpeg, quality=90)
    old = Classifier.from_file(models / "int8.tflite")  # tlx.json without a version: 1
    new = Classifier.from_file(_with_preprocessing(models, tmp_path, 2))
    assert (old.preprocessing, new.preprocessing) == (1, 2)
    for source in (frame, jpeg):
        np.testing.assert_array_equal(old.preprocess(source), load_image(source, SIZE, version=1))
        np.testing.assert_array_equal(new.preprocess(source), load_image(source, SIZE, version=2))
        assert not np.array_equal(old.preprocess(source), new.preprocess(source))
    # --fast-jpeg approximates version 2's decoder reduction for version 1 models; a version 2
    # model already reduces the way it was trained, so the flag changes nothing there.
    fast_new = Classifier.from_file(_with_preprocessing(models, tmp_path, 2), fast_decode=True)
    np.testing.assert_array_equal(fast_new.preprocess(jpeg), new.preprocess(jpeg))


def test_model_from_a_newer_tlx_is_a_clear_error(models, tmp_path):
    with pytest.raises(TlxError, match="preprocessing version 7.*Upgrade tlx"):
        Classifier.from_file(_with_preprocessing(models, tmp_path, 7))


def test_runtime_pixels_identical_to_shared_preprocessing(models, tmp_path):
    """The runtime feeds the interpreter exactly tlx.imaging.load_image's pixels (the
    function the trainer and the exporter's calibration use)."""
    clf = Classifier.from_file(models / "int8.tflite")
    for kind, path in _awkward_images(tmp_path).items():
        expected = load_image(path, (SIZE, SIZE), version=clf.preprocessing)
        got = clf.preprocess(path)
        assert got.dtype == np.uint8 and got.shape == (SIZE, SIZE, 3), kind
        np.testing.assert_array_equal(got, expected, err_msg=kind)


def test_exif_rotation_is_applied(models, tmp_path):
    files = _awkward_images(tmp_path)
    clf = Classifier.from_file(models / "int8.tflite")
    rotated = load_image(files["exif_rotated"], None)
    assert rotated.shape[:2] == (90, 60)  # portrait after the EXIF transpose
    np.testing.assert_array_equal(clf.preprocess(files["exif_rotated"]),
                                  load_image(files["exif_rotated"], (SIZE, SIZE), version=clf.preprocessing))


#: --fast-jpeg promise: mean absolute pixel difference from the full decode at most this.
FAST_JPEG_MEAN_TOLERANCE = 2.0
FAST_JPEG_MAX_TOLERANCE = 48


def test_fast_jpeg_decode_within_tolerance(models, tmp_path):
    rng = np.random.default_rng(5)
    # A smooth photo-like 640x480 image (camera photos are smooth at 4x4 pixel scale).
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
    path = tmp_path / "photo.jpg"
    big.save(path, quality=90)
    exact = Classifier.from_file(models / "float32.tflite")
    fast = Classifier.from_file(models / "float32.tflite", fast_decode=True)
    a = exact.preprocess(path).astype(int)
    b = fast.preprocess(path).astype(int)
    diff = np.abs(a - b)
    assert diff.mean() <= FAST_JPEG_MEAN_TOLERANCE and diff.max() <= FAST_JPEG_MAX_TOLERANCE
    assert exact.classify(path, top_k=1)[0].index == fast.classify(path, top_k=1)[0].index
    # Not a JPEG: the normal path, bit-identical.
    png = tmp_path / "photo.png"
    big.save(png)
    np.testing.assert_array_equal(fast.preprocess(png), exact.preprocess(png))


def test_bad_images_give_image_errors(models, tmp_path):
    clf = Classifier.from_file(models / "int8.tflite")
    good = tmp_path / "good.jpg"
    colour_image(RED, size=(200, 300)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    for name in ("truncated.jpg", "zero.jpg", "text.png", "missing.jpg"):
        with pytest.raises(ImageError) as info:
            clf.classify(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ImageError, match="over the limit"):
        # A huge image is refused by its header, before decoding.
        Image.new("L", (10_000, 10_000)).save(tmp_path / "huge.png", optimize=False)
        clf.classify(tmp_path / "huge.png")
    with pytest.raises(ImageError, match="uint8"):
        clf.classify(np.zeros((8, 8, 3), np.float32))


# --- bad models ---------------------------------------------------------------------------

def test_bad_model_files_give_clear_errors(models, tmp_path):
    good = (models / "int8.tflite").read_bytes()
    cases = {
        "empty.tflite": (b"", "empty"),
        "tiny.tflite": (b"TFL3", "too small"),
        "photo.tflite": (b"\xff\xd8\xff\xe0" + b"\0" * 100, "TFL3"),
        "model.keras": (b"PK\x03\x04" + b"\0" * 100, "zip archive"),
        "half.tflite": (good[: len(good) // 2], "truncated"),
        "shortened.tflite": (good[:200], "truncated"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelError, match=message) as info:
            Classifier.from_file(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ModelError, match="no such file"):
        Classifier.from_file(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="directory"):
        Classifier.from_file(tmp_path)


def test_model_that_is_not_an_image_classifier(models):
    with pytest.raises(ModelError, match=r"expected a 4-D image tensor \[1, height, width, 3\]"):
        Classifier.from_file(models / "vector.tflite")


def test_labels_that_do_not_match_outputs(models, tmp_path):
    from tests.support.runtime import annotate
    path = tmp_path / "m.tflite"
    path.write_bytes((models / "int8_nometa.tflite").read_bytes())
    annotate(path, labels=["a", "b"])
    with pytest.raises(ModelError, match="3 outputs but its labels list 2"):
        Classifier.from_file(path)


def test_validate_model_describes_tensors(models):
    info = validate_model((models / "int8.tflite").read_bytes())
    (inp,), (out,) = info.inputs, info.outputs
    assert inp.shape == (1, SIZE, SIZE, 3) and inp.dtype == "uint8" and inp.quantization == (1.0, 0)
    assert out.shape == (1, 3) and out.dtype == "uint8"
    assert info.num_subgraphs == 1 and info.num_operators >= 3


def test_probe_reports_outcomes(models, tmp_path):
    from tlx.runtime import probe_model
    assert probe_model(models / "int8.tflite").outcome == "ok"
    (tmp_path / "x.tflite").write_bytes(b"garbage" * 10)
    result = probe_model(tmp_path / "x.tflite")
    assert result.outcome == "error" and "TFL3" in result.message


# --- backends -----------------------------------------------------------------------------

def test_unknown_backend_lists_valid_ones(models):
    with pytest.raises(TlxError, match="litert, litert-builtin, tflite-runtime, tensorflow"):
        Classifier.from_file(models / "int8.tflite", backend="onnx")


def test_litert_builtin_kernels_backend(models):
    """ai-edge-litert without XNNPACK (how tflite-runtime runs int8): same classes."""
    pytest.importorskip("ai_edge_litert")
    default = Classifier.from_file(models / "int8.tflite", backend="litert")
    builtin = Classifier.from_file(models / "int8.tflite", backend="litert-builtin")
    image = default.preprocess(colour_image((200, 30, 30)))
    assert builtin.backend == "litert-builtin"
    assert builtin.classify(image, top_k=1)[0].index == default.classify(image, top_k=1)[0].index
    assert np.abs(builtin.run(image) - default.run(image)).max() <= 8 / 256


def test_backend_aliases():
    assert backends.resolve_name("ai-edge-litert") == "litert"
    assert backends.resolve_name("tflite_runtime") == "tflite-runtime"
    assert backends.resolve_name("auto") is None and backends.resolve_name(None) is None


def test_missing_backend_says_how_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("tflite_runtime"):
            raise ModuleNotFoundError(f"No module named '{name}'", name="tflite_runtime")
        return real(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"pip install 'tlx-edge\[tflite\]'"):
        backends.interpreter_class("tflite-runtime")


def test_no_backend_installed_lists_both_extras(monkeypatch):
    def fake(name, *args):
        raise ModuleNotFoundError(f"No module named '{name}'", name=name.split(".")[0])

    monkeypatch.setattr(backends.importlib, "import_module", fake)
    with pytest.raises(TlxError) as info:
        backends.interpreter_class(None)
    assert "tlx-edge[runtime]" in str(info.value) and "tlx-edge[tflite]" in str(info.value)
    assert "tensorflow" not in str(info.value).lower()


def test_bad_thread_count(models):
    with pytest.raises(TlxError, match="num_threads"):
        Classifier.from_file(models / "int8.tflite", num_threads=0)


def test_runtime_never_imports_tensorflow(models, photos):
    """In the main venv (where TensorFlow IS installed): importing and using the runtime
    and the predict command leaves TensorFlow unimported."""
    code = (
        "import sys\n"
        "from tlx.runtime import Classifier\n"
        "import tlx.cli\n"
        f"c = Classifier.from_file({str(models / 'int8.tflite')!r})\n"
        f"print(c.classify({str(photos / 'red.jpg')!r})[0].label)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "red"


def test_interpreter_messages_run_together_are_separated():
    """TFLite's error reporter joins its messages without a break; the strings are LiteRT's own
    (from its XNNPACK delegate), as a mutated model produced them."""
    from tlx.runtime.backends import interpreter_message

    raw = RuntimeError("unsupported datatype (INT4) of tensor 5 in XNNPACK delegateNode number 3 "
                       "(TfLiteXNNPackDelegate) failed to prepare.\n")
    assert interpreter_message(raw) == ("unsupported datatype (INT4) of tensor 5 in XNNPACK delegate; "
                                        "Node number 3 (TfLiteXNNPackDelegate) failed to prepare.")
    assert interpreter_message(RuntimeError("the delegates were unsupported")) == "the delegates were unsupported"
