"""`tlx export --fallback auto`: the int8 float fallback (tlx.export.fallback) wired into the
exporter, on a run dir whose model is hostile to int8.

The model is tests/test_fallback.py's (fixed weights, 8x8 pixels: a 1x1 conv whose brightness
channel reaches 300 while the colour channels that carry the class stay below 0.1), laid out
with the layer names `tlx train` gives ("normalization", "backbone", "pool", "logits"), saved
next to labels.txt, split.json and config.json as the trainer writes them. Plain int8
collapses to chance; keeping `outlier_conv` in float restores it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_image_folder
from tests.test_fallback import SIZE
from tests.test_fallback import _model as hostile_layers
from tlx import files
from tlx.run_dir import RunConfig, RunDir, Split
from tlx.run_config import TrainConfig

CLASSES = ("red", "green", "blue")
RUNNER = CliRunner()


def hostile_classifier():
    """The hostile model with the trainer's layer-name contract (tlx.trainer.model)."""
    import keras

    flat = hostile_layers(outlier=300.0)
    features = inputs = keras.Input((SIZE, SIZE, 3))
    for name in ("stem", "outlier_conv", "mix_conv"):
        features = flat.get_layer(name)(features)
    backbone = keras.Model(inputs, features, name="backbone")

    pixels = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="normalization")(pixels)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(len(CLASSES), name="logits")
    model = keras.Model(pixels, logits(x), name="tlx_hostile")
    logits.set_weights(flat.get_layer("head").get_weights())  # softmax comes with export
    return model


def make_hostile_run(root: Path, validation: bool = True) -> Path:
    """A run dir as `tlx train` leaves it: a third of the images each for train (calibration),
    validation (the fallback decides there) and test (the --max-drop gate)."""
    data = make_image_folder(root / "data", classes=CLASSES, per_class=18)
    items = [(str(path), CLASSES.index(path.parent.name)) for path in sorted(data.rglob("*.png"))]
    parts = [tuple(item for i, item in enumerate(items) if i % 3 == k) for k in range(3)]
    run = root / "run"
    run.mkdir()
    hostile_classifier().save(run / "model.keras")
    rd = RunDir(run)
    rd.write_labels(CLASSES)
    files.write_json(rd.split, Split(classes=CLASSES, train=parts[0],
                                     validation=parts[1] if validation else (), test=parts[2],
                                     image_size=(SIZE, SIZE), data_dir=str(data)).to_json())
    files.write_json(rd.config, RunConfig(
        TrainConfig(data_dir=data, out=run, backbone="hostile_test", image_size=SIZE),
        run_id="test-hostile").to_json())
    return run


def cli(*args):
    from tlx.cli import app

    return RUNNER.invoke(app, ["export", *map(str, args)])


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    return make_hostile_run(tmp_path_factory.mktemp("hostile"))


# --- up-front checks: exit 1, a message, before loading anything slow -----------------

@pytest.mark.parametrize("args, message", [
    (("--format", "int8", "--fallback", "auto"), "add --max-drop"),
    (("--format", "float32", "--max-drop", "5", "--fallback", "auto"), "--format int8"),
    (("--format", "float32", "--format", "float16", "--fallback", "auto"), "--max-drop"),
])
def test_fallback_auto_needs_max_drop_and_int8(tmp_path, args, message):
    # Checked before the run dir is even read.
    result = cli(tmp_path / "no-such-run", *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "--fallback auto" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_fallback_auto_needs_validation_images(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"never loaded")
    RunDir(run).write_labels(CLASSES)
    files.write_json(RunDir(run).split, Split(
        classes=CLASSES, train=(("/x/a.png", 0),), validation=(), test=(("/x/b.png", 1),)).to_json())
    files.write_json(RunDir(run).config, RunConfig(
        TrainConfig(data_dir=tmp_path, out=run, image_size=SIZE), run_id="test").to_json())
    from tlx.export import inference

    def not_now(*args, **kwargs):
        raise AssertionError("the model must not be loaded before the checks")

    monkeypatch.setattr(inference, "load_trained_model", not_now)
    result = cli(run, "--format", "int8", "--max-drop", "5", "--fallback", "auto")
    assert result.exit_code == 1, result.output
    assert "validation images" in result.output and "split.json" in result.output
    assert "Traceback" not in result.output


def test_fallback_option_in_help():
    result = cli("--help")
    assert result.exit_code == 0
    assert "--fallback" in result.output and "none|auto" in result.output


# --- end to end ----------------------------------------------------------------------

def test_hostile_model_fails_the_gate_without_fallback(hostile_run, tmp_path):
    out = tmp_path / "plain"
    result = cli(hostile_run, "--format", "int8", "--max-drop", "5", "--out", out)
    assert result.exit_code == 3, result.output
    summary = json.loads((out / "export.json").read_text())
    assert summary["status"] == "max_drop_exceeded"
    assert summary["max_drop"]["int8_drop_points"] > 30  # collapses to about chance
    assert summary["int8_fallback"] is None


def test_fallback_auto_restores_the_hostile_model(hostile_run, tmp_path):
    out = tmp_path / "auto"
    result = cli(hostile_run, "--format", "int8", "--format", "float32", "--max-drop", "5",
                 "--fallback", "auto", "--out", out)
    assert result.exit_code == 0, result.output
    assert "int8 float fallback" in result.stdout and "outlier_conv" in result.stdout

    summary = json.loads((out / "export.json").read_text())
    assert summary["status"] == "ok"
    fallback = summary["int8_fallback"]
    assert fallback["decided_on"] == "validation" and fallback["passed"] is True
    assert fallback["chosen_step"] == 1 and fallback["float_layers"] == ["outlier_conv"]
    plain, chosen = fallback["steps"]
    assert plain["val_drop_points"] > 30 and chosen["val_drop_points"] <= 5
    assert all(s["size_bytes"] > 0 and s["latency_ms"] > 0 for s in fallback["steps"])
    # Reported on test, and the gate (on the file written) agrees.
    assert fallback["test"]["int8_drop_points"] > 30 and fallback["test"]["chosen_drop_points"] <= 5
    assert summary["max_drop"]["passed"] is True and summary["max_drop"]["int8_drop_points"] <= 5
    assert summary["parity"]["formats"]["int8"]["accuracy"] >= 0.95
    assert fallback["files"] == {"csv": "fallback_layers.csv", "png": "fallback_layers.png"}

    with open(out / "fallback_layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["layer"] == "outlier_conv" and rows[0]["float_in_chosen"] == "True"
    assert (out / "fallback_layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The file written is the repaired one: the conv and its reader in float, uint8 I/O.
    from tlx.inspect import inspect_bytes
    from tlx.runtime.associated_files import read_tlx_metadata

    int8 = (out / "model_int8.tflite").read_bytes()
    assert inspect_bytes(int8).float_ops == chosen["float_ops"] == 2
    assert summary["files"]["int8"]["input"]["dtype"] == "uint8"
    assert summary["files"]["int8"]["input"]["scale"] == 1.0
    assert read_tlx_metadata(int8)["float_fallback"] == ["outlier_conv"]
    assert "float_fallback" not in read_tlx_metadata((out / "model_float32.tflite").read_bytes())

    # Exported again without the fallback, the folder no longer carries its reports.
    result = cli(hostile_run, "--format", "float32", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model_float32.tflite"]
    summary = json.loads((out / "export.json").read_text())
    assert set(summary["removed_stale_files"]) == {"fallback_layers.csv", "fallback_layers.png",
                                                  "model_int8.tflite"}


def test_the_upper_bound_gate_fails_where_the_point_gate_passes(hostile_run, tmp_path):
    """--max-drop-on upper: the int8 drop's paired 95% interval (export.json's int8_drop) is
    held to the limit; a limit over the drop but under the interval's upper end fails."""
    plain = cli(hostile_run, "--format", "int8", "--out", tmp_path / "measure", "--json")
    assert plain.exit_code == 0, plain.output
    drop = json.loads(plain.stdout[plain.stdout.index("{"):])["parity"]["formats"]["int8"]["drop"]
    low, high = drop["ci95"]
    assert drop["points"] > 10 and low < drop["points"] < high
    between = f"{(drop['points'] + high) / 2:.3f}"
    point = cli(hostile_run, "--format", "int8", "--max-drop", between, "--out", tmp_path / "point")
    assert point.exit_code == 0, point.output
    upper = cli(hostile_run, "--format", "int8", "--max-drop", between, "--max-drop-on", "upper",
                "--out", tmp_path / "upper")
    assert upper.exit_code == 3, upper.output
    assert "upper bound of the 95% interval" in upper.output and "[" in upper.output
    gate = json.loads((tmp_path / "upper" / "export.json").read_text())["max_drop"]
    assert gate["passed"] is False and gate["max_drop_on"] == "upper"
    assert gate["int8_drop"]["ci95"][1] > float(between) > gate["int8_drop_points"]


def test_the_upper_bound_gate_without_max_drop_is_refused(hostile_run, tmp_path):
    result = cli(hostile_run, "--max-drop-on", "upper", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "add --max-drop POINTS" in result.output, result.output
    assert not (tmp_path / "out").exists()
