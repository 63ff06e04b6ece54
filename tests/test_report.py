"""The HTML report renders in a real browser: the table shows and every image loads."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tlx.cli import app
from tlx.report import write_report
from tlx.run_dir import REPORT

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Appended to a copy of the report: after the load event, record what a reader would see.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const tables = [...document.querySelectorAll("table")].filter(t => t.offsetHeight > 0).length;
  const probe = document.createElement("div");
  probe.id = "probe";
  probe.textContent = `images=${images.length} loaded=${loaded} tables=${tables}`;
  document.body.appendChild(probe);
});
</script>"""


def _render(path, tmp_path) -> str:
    page = tmp_path / "probed.html"
    page.write_text(path.read_text().replace("</body>", _PROBE + "</body>"))
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'id="probe">images=(\d+) loaded=(\d+) tables=(\d+)<', result.stdout)
    assert match, result.stderr[-2000:]
    return match


@pytest.fixture(scope="module")
def benched_run(exported_run):  # noqa: F811
    result = runner.invoke(app, ["bench", str(exported_run), "--threads", "1", "--runs", "3", "--warmup", "1",
                                 "--no-cold-start"])
    assert result.exit_code == 0, result.output
    return exported_run


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh installs it)")
def test_report_renders_in_chromium_with_every_image(benched_run, tmp_path):
    path = write_report(benched_run)
    images, loaded, tables = (int(g) for g in _render(path, tmp_path).groups())
    # learning curves, predictions, accuracy/latency, one confusion matrix per model (3)
    assert images == 6 and loaded == images
    assert tables >= 3  # dataset, training options, float vs int8


def test_report_is_self_contained_and_complete(benched_run):
    result = runner.invoke(app, ["report", str(benched_run)])
    assert result.exit_code == 0, result.output
    html = (benched_run / REPORT).read_text()
    assert "Incomplete" not in html
    assert 'src="data:image/png;base64,' in html and 'src="http' not in html and 'src="file' not in html
    for text in ("Float vs int8", "int8", "float32", "keras", "Learning curves", "Confusion matrix"):
        assert text in html


def test_incomplete_run_is_never_presented_as_complete(benched_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(benched_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 3 and "incomplete" in result.output  # 3: written, incomplete; 1: error
    html = (run / REPORT).read_text()
    assert "Incomplete run" in html and "benchmark" in html


def test_report_of_a_folder_that_is_no_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "split.json" in result.output and "Traceback" not in result.output


def test_a_bench_of_another_model_is_not_reported(benched_run, tmp_path):
    import json

    run = tmp_path / "run"
    shutil.copytree(benched_run, run, ignore=shutil.ignore_patterns("checkpoints", REPORT))
    bench = json.loads((run / "bench" / "bench.json").read_text())
    bench["model_sha256"] = "0" * 64  # measured before `tlx train --overwrite` replaced the model
    (run / "bench" / "bench.json").write_text(json.dumps(bench))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "was measured on another model.keras" in result.output and "tlx bench" in result.output
    assert not (run / REPORT).exists()


def test_values_from_bench_json_are_html_escaped(benched_run, tmp_path):
    import json

    run = tmp_path / "run"
    shutil.copytree(benched_run, run, ignore=shutil.ignore_patterns("checkpoints", REPORT))
    bench = json.loads((run / "bench" / "bench.json").read_text())
    bench["environment"]["cpu"] = "<script>alert(1)</script>"
    (run / "bench" / "bench.json").write_text(json.dumps(bench))
    html = write_report(run).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # A figure that is text is no figure: refused by bench.json's row schema, with what to do.
    bench["n_test"] = "<script>alert(1)</script>"
    (run / "bench" / "bench.json").write_text(json.dumps(bench))
    (run / REPORT).unlink(missing_ok=True)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "n_test is '<script>" in result.output and "tlx bench RUN_DIR" in result.output
    assert not (run / REPORT).exists()
