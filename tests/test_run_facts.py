"""One reader of a run's facts: the preprocessing version comes from RunDir by one rule, and
bench, bundle and export all follow it (a damaged config.json is refused by each; a model that
decodes photos another way than the run is refused by bench and bundle alike)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tlx.cli import app
from tlx.run_dir import RunDir

runner = CliRunner()
FAST = ["--threads", "1", "--runs", "2", "--warmup", "1", "--no-cold-start"]


@pytest.fixture
def run(exported_run, tmp_path):  # noqa: F811
    copy = tmp_path / "run"
    shutil.copytree(exported_run, copy, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    return RunDir(copy)


def _commands(run: RunDir, tmp_path) -> dict[str, list[str]]:
    return {"bench": ["bench", str(run.root), *FAST],
            "bundle": ["bundle", str(run.root), "-o", str(tmp_path / "b.zip")],
            "export": ["export", str(run.root), "--out", str(tmp_path / "again")]}


def test_a_run_without_config_json_was_trained_with_version_1(run):
    run.config.unlink()
    assert run.preprocessing_version() == 1


def test_the_recorded_version_is_read(run):
    assert run.preprocessing_version() == json.loads(run.config.read_text())["options"]["preprocessing"]


@pytest.mark.parametrize("command", ["bench", "bundle", "export"])
def test_a_damaged_config_json_is_refused_by_every_consumer(run, tmp_path, command):
    run.config.write_text('{"options": {"preprocessing": "two"')
    result = runner.invoke(app, _commands(run, tmp_path)[command])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and str(run.config) in result.output
    assert not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize("command", ["bench", "bundle"])
def test_a_model_that_decodes_photos_another_way_is_refused(run, tmp_path, command):
    doc = json.loads(run.config.read_text())
    trained = doc["options"]["preprocessing"]
    doc["options"]["preprocessing"] = 1 if trained != 1 else 2
    run.config.write_text(json.dumps(doc))
    result = runner.invoke(app, _commands(run, tmp_path)[command])
    words = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert f"preprocesses images with version {trained}" in words and "Re-export" in words
    assert not (tmp_path / "b.zip").exists()
