"""`tlx predict` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.runtime import colour_image, models_folder
from tlx.cli import app
from tlx.runtime.backends import interpreter_class


@pytest.fixture(scope="module")
def models(request) -> Path:
    return models_folder(request)


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    colour_image((220, 30, 30)).save(folder / "red.jpg")
    colour_image((30, 30, 220)).save(folder / "sub" / "blue.png")
    (folder / "readme.txt").write_text("not an image: skipped when a folder expands")
    return folder


def invoke(*args):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def test_table_per_image_and_directories_expand(models, images):
    result = invoke(models / "int8.tflite", images, "--top-k", "2", "--threads", "1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "red.jpg" in out and "blue.png" in out and "readme" not in out
    red_block = out.split("red.jpg")[1].splitlines()
    assert red_block[1].split()[:2] == ["#", "label"]
    assert red_block[2].split()[:2] == ["1", "red"]
    assert len([line for line in out.splitlines() if line.strip().startswith("1 ")]) == 2


def test_json_output(models, images):
    result = invoke(models / "float32.tflite", images / "red.jpg", "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["backend"] == interpreter_class(None)[0] and doc["labels"] is True
    (entry,) = doc["results"]
    assert [p["label"] for p in entry["predictions"]][0] == "red"
    assert len(entry["predictions"]) == 3
    assert set(entry["predictions"][0]) == {"index", "label", "score"}


def test_failing_file_prints_error_others_still_print(models, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    result = invoke(models / "int8.tflite", bad, images / "red.jpg", tmp_path / "missing.png")
    assert result.exit_code == 1
    assert "bad.jpg: error:" in result.stderr and "missing.png: error: no such file" in result.stderr
    assert "red.jpg" in result.stdout and "2 file(s) failed" in result.stderr
    assert "Traceback" not in result.output


def test_json_with_errors(models, images, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = invoke(models / "int8.tflite", tmp_path / "empty.jpg", images / "red.jpg", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert "error" in doc["results"][0] and "predictions" in doc["results"][1]


def test_model_without_labels_shows_indices(models, images):
    result = invoke(models / "int8_nometa.tflite", images / "red.jpg", "--top-k", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split()[:2] == ["1", "0"]


def test_bad_model_is_a_clear_error(models, images, tmp_path):
    for target, message in ((images / "red.jpg", "TFL3"), (models / "vector.tflite", "4-D image"),
                            (tmp_path / "none.tflite", "no such file")):
        result = invoke(target, images)
        assert result.exit_code == 1, result.output
        assert message in result.stderr and "Traceback" not in result.output


def test_backend_option(models, images):
    name = interpreter_class(None)[0]
    result = invoke(models / "int8.tflite", images, "--backend", name, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["backend"] == name
    result = invoke(models / "int8.tflite", images, "--backend", "onnx")
    assert result.exit_code == 2 and "onnx" in result.output


def test_empty_folder(models, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(models / "int8.tflite", tmp_path / "empty")
    assert result.exit_code == 1 and "No images found" in result.stderr
