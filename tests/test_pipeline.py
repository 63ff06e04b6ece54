"""The commands together, as a user runs them: relative paths, different working directories."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import make_image_folder
from tests.support.trainer import tiny_args, tiny_backbone  # noqa: F401  (fixture)
from tlx.cli import app
from tlx.run_dir import RunDir
from tlx.runtime.associated_files import read_tlx_metadata

runner = CliRunner()


def test_train_with_relative_paths_then_export_and_predict_from_elsewhere(tmp_path, monkeypatch,
                                                                          tiny_backbone):  # noqa: F811
    make_image_folder(tmp_path / "work" / "photos", classes=("cat", "dog"), per_class=10)
    monkeypatch.chdir(tmp_path / "work")
    result = runner.invoke(app, tiny_args("photos", "run", "--test-fraction", "0.5"))
    assert result.exit_code == 0, result.output

    # On disk: photos relative to the data folder, which is recorded absolute; read back,
    # every path is absolute again, whatever the working directory.
    split = json.loads((tmp_path / "work" / "run" / "split.json").read_text())
    assert split["data_dir"] == str((tmp_path / "work" / "photos").resolve())
    assert not any(path.startswith("/") for key in ("train", "validation", "test") for path, _ in split[key])
    test_photos = [path for path, _ in RunDir(tmp_path / "work" / "run").read_split().test]
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in test_photos)

    monkeypatch.chdir(tmp_path)  # export and predict from another folder
    result = runner.invoke(app, ["export", "work/run", "--format", "float32", "--calibration-samples", "4"])
    assert result.exit_code == 0, result.output
    model = tmp_path / "work" / "run" / "export" / "model_float32.tflite"
    info = read_tlx_metadata(model.read_bytes())
    # The training options reach the model file: backbone and its normalization.
    assert info["backbone"] == tiny_backbone
    assert info["preprocessing"]["in_graph"]["normalization"] is not None

    image = test_photos[0]
    result = runner.invoke(app, ["predict", str(model), image, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)
