"""`tlx train` through typer's CliRunner (and one subprocess for the import check)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.support.trainer import REPO, make_image_folder, tiny_args, tiny_backbone  # noqa: F401
from tlx.cli import app

runner = CliRunner()


def _text(output: str) -> str:
    """Typer's usage errors come in a box wrapped at the terminal width: unwrap them."""
    for char in "│╭╮╰╯─":
        output = output.replace(char, " ")
    return " ".join(output.split())


def test_help_lists_options_with_defaults():
    # That --help imports no TensorFlow: tests/test_boundaries.py.
    code = (
        "import tlx.cli\n"
        "try:\n"
        "    tlx.cli.app(['train', '--help'], prog_name='tlx')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for option in ("--out", "--resume", "--backbone", "--weights", "--image-size", "--test-fraction",
                   "--test-dir", "--no-augment", "--phase1-epochs", "--phase2-epochs", "--fine-tune-at",
                   "--cache-features", "--strategy", "--cache-dir", "--workers", "--json"):
        assert option in out, option
    assert "default: 10" in out and "the backbone's native size" in out and "mobilenet_v2" in out


@pytest.mark.parametrize("command", ["", "train", "export", "predict", "bench", "bundle", "demo",
                                     "report", "backbones", "inspect"])
def test_help_is_readable_at_80_columns(command):
    """Every --help fits 80 columns with room for its text: flags carry no type, the option
    column is capped (a long option moves its help to the next line), defaults are shown."""
    result = runner.invoke(app, [*command.split(), "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "<bool>" not in result.output and "list[Path]" not in result.output
    # Help text starts by column 40 on every option line, leaving it half the width.
    for line in lines:
        option = re.match(r"  -\S.*?\s{2,}(?=\S)", line)
        if option:
            assert option.end() <= 40, line


def test_train_json_summary_on_stdout_progress_on_stderr(tmp_path, tiny_backbone):  # noqa: F811
    data = make_image_folder(tmp_path / "data")
    result = runner.invoke(app, tiny_args(data, tmp_path / "run", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["cat", "dog"] and summary["phase1"]["epochs"] == 1
    assert "test_accuracy" in summary and summary["images"]["train"] == 20
    assert "Phase 1" in result.stderr and "Phase 2" in result.stderr and "epoch   2/2" in result.stderr
    assert "Decoded 24 images" in result.stderr
    # A second run into the same folder refuses to overwrite it.
    again = runner.invoke(app, tiny_args(data, tmp_path / "run"))
    assert again.exit_code == 1 and "already holds a run" in again.output and "--resume" in again.output


def test_mirrored_strategy_runs_as_one_replica_on_cpu(tmp_path, tiny_backbone):  # noqa: F811
    data = make_image_folder(tmp_path / "data")
    result = runner.invoke(app, tiny_args(data, tmp_path / "run", "--strategy", "mirrored",
                                          "--phase2-epochs", "0"))
    assert result.exit_code == 0, result.output
    assert "test: loss" in result.output and (tmp_path / "run" / "model.keras").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["strategy"] == "mirrored"


def test_resume_through_the_cli(tmp_path, tiny_backbone):  # noqa: F811
    from tlx.run_dir import RunDir

    data = make_image_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--resume", str(run)]).exit_code == 1
    result = runner.invoke(app, tiny_args(data, run, "--phase2-epochs", "0"))
    assert result.exit_code == 0, result.output
    # Pretend it stopped after phase 1, before the test evaluation.
    state = json.loads(RunDir(run).state.read_text())
    state.pop("finished")
    RunDir(run).state.write_text(json.dumps(state))
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["phase1"]["epochs"] == 1
    assert "Resuming" in resumed.stderr
    # The pixels come back from the cache the first run wrote.
    assert "Read 24 images back from the pixel cache" in resumed.stderr
    mixed = runner.invoke(app, ["train", str(data), "--resume", str(run)])
    assert mixed.exit_code == 2 and "only --resume" in _text(mixed.output)


@pytest.mark.parametrize("case, code, message", [
    ("no_out", 2, "Missing --out"),
    ("no_data", 2, "Missing DATA_DIR"),
    ("out_is_file", 1, "is a file"),
    ("out_unwritable", 1, "not writable"),
    ("augment_and_cache", 1, "--no-augment"),
    ("bad_strategy", 2, "mirrored"),
    ("unknown_backbone", 1, "Unknown backbone"),
    ("missing_weights_file", 1, "no such file"),
    ("single_class", 1, "single class"),
    ("no_workers", 1, "--workers 0"),
    ("unknown_preprocessing", 1, "preprocessing version 9"),
    ("cache_dir_is_a_file", 1, "Cannot write the pixel cache"),
])
def test_user_errors_are_messages_not_tracebacks(tmp_path, case, code, message):
    data = make_image_folder(tmp_path / "data", classes=("cat",) if case == "single_class" else ("cat", "dog"))
    (tmp_path / "a_file").write_text("x")
    out = str(tmp_path / "run")
    args = {
        "no_out": ["train", str(data)],
        "no_data": ["train", "--out", out],
        "out_is_file": ["train", str(data), "--out", str(tmp_path / "a_file")],
        # A folder below a regular file cannot be created (works as root, unlike chmod).
        "out_unwritable": ["train", str(data), "--out", str(tmp_path / "a_file" / "run")],
        "augment_and_cache": ["train", str(data), "--out", out, "--cache-features"],
        "bad_strategy": ["train", str(data), "--out", out, "--strategy", "tpu"],
        "unknown_backbone": ["train", str(data), "--out", out, "--backbone", "resnet9000"],
        "missing_weights_file": ["train", str(data), "--out", out, "--weights", str(tmp_path / "no.h5")],
        "single_class": ["train", str(data), "--out", out, "--weights", "none"],
        "no_workers": ["train", str(data), "--out", out, "--workers", "0"],
        "unknown_preprocessing": ["train", str(data), "--out", out, "--preprocessing", "9"],
        "cache_dir_is_a_file": ["train", str(data), "--out", out, "--weights", "none",
                                "--cache-dir", str(tmp_path / "a_file")],
    }[case]
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in _text(result.output)
    assert "Traceback" not in result.output


def test_imagenet_weights_offline_name_the_alternatives(tmp_path, monkeypatch):
    """No cached file and no network: a clear error naming --weights PATH and the offline
    pretrained efficientnet_lite0, no traceback, and no half-written run."""
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "empty_keras_home"))
    monkeypatch.setenv("HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/weights.h5: None -- offline")

    # The real download fails the same way here; patched so the test never waits on a network.
    monkeypatch.setattr("keras.utils.get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.file_utils.get_file", offline)
    data = make_image_folder(tmp_path / "data")
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--image-size", "96"])
    assert result.exit_code == 1, result.output
    assert "--weights PATH" in result.output and "efficientnet_lite0" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "config.json").exists()


def test_without_tensorflow_says_which_pip_command(tmp_path, monkeypatch):
    for name in ("tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    data = make_image_folder(tmp_path / "data")
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "pip install 'tlx-edge[train]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_mobilenet_v2_end_to_end_tutorial_defaults(tmp_path):
    """The real MobileNetV2 (random init, 32 px): fine-tuning from layer 100 as the tutorial."""
    import keras

    data = make_image_folder(tmp_path / "data")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--out", str(run), "--weights", "none", "--image-size",
                                 "32", "--phase1-epochs", "1", "--phase2-epochs", "1", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "fine-tuning from layer 100 of 154" in result.output
    model = keras.models.load_model(run / "model.keras")
    base = model.get_layer("backbone")
    # (Only layers with weights: Keras does not save an InputLayer's trainable flag.)
    assert not any(layer.trainable for layer in base.layers[:100] if layer.weights)
    assert any(layer.trainable for layer in base.layers[100:] if layer.weights)
    assert not any(layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
