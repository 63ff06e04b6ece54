"""tlx demo end to end on real images with the real pretrained backbone (small settings)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tlx.cli import app

runner = CliRunner()
SMALL = ["--dataset", "lfw-subset", "--limit", "25", "--image-size", "64", "--phase1-epochs", "1",
         "--phase2-epochs", "1"]


@pytest.mark.slow
def test_interrupted_demo_finishes_on_the_next_run(tmp_path, monkeypatch):
    import tlx.export.export as export_module

    out = tmp_path / "demo"

    def interrupted_export(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while exporting

    with monkeypatch.context() as patch:
        patch.setattr(export_module, "export_run", interrupted_export)
        first = runner.invoke(app, ["demo", "--out", str(out), *SMALL])
    assert first.exit_code == 130 and "Interrupted" in first.output
    run = out / "run"
    assert (run / "metrics.json").is_file() and not (run / "report.html").exists()
    trained_at = (run / "model.keras").stat().st_mtime

    second = runner.invoke(app, ["demo", "--out", str(out), *SMALL, "--json"])
    assert second.exit_code == 0, second.output
    assert "already trained" in second.stderr
    assert json.loads(second.stdout) == {"report": str(run / "report.html"), "run_dir": str(run)}
    assert (run / "model.keras").stat().st_mtime == trained_at
    report = (run / "report.html").read_text()
    assert "Incomplete" not in report and "Float vs int8" in report
    bench = json.loads((run / "bench" / "bench.json").read_text())
    assert [m["name"] for m in bench["models"]] == ["keras", "float32", "int8"]
    assert bench["n_test"] >= 5


def test_unknown_dataset_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["demo", "--dataset", "imagenet", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "lfw-subset" in result.output
