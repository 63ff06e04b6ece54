"""tlx bench end to end: a tiny trained and exported run, measured through tlx.runtime."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from tests.conftest import make_image_folder
from tests.support.trainer import TINY, TINY_SPEC
from tlx.cli import app
from tlx.imaging import PREPROCESSING_VERSION

runner = CliRunner()
FAST = ["--threads", "1", "--runs", "5", "--warmup", "1"]


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """Three synthetic classes, the tiny test backbone, both phases, float32 + int8."""
    from tlx.export.export import ExportConfig, export_run
    from tlx.trainer import backbones
    from tlx.run_config import TrainConfig
    from tlx.trainer.train import train

    root = tmp_path_factory.mktemp("bench")
    data = make_image_folder(root / "data", classes=("red", "green", "blue"), per_class=20)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
        train(TrainConfig(data_dir=data, out=root / "run", backbone=TINY, weights="none", image_size=32,
                          phase1_epochs=3, phase2_epochs=1, batch_size=8, learning_rate=1e-2,
                          validation_fraction=0.5, test_fraction=0.5), log=lambda message: None)
        export_run(ExportConfig(run_dir=root / "run", calibration_samples=30))
    return root / "run"


def _bench(run_dir, *extra):
    return runner.invoke(app, ["bench", str(run_dir), *FAST, *extra])


def test_bench_reports_every_model_on_the_test_split(exported_run):
    result = _bench(exported_run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    split = json.loads((exported_run / "split.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert names == ["keras", "float32", "int8"]
    assert report["reference"] == "keras" and report["n_test"] == len(split["test"])
    for model in report["models"]:
        assert model["accuracy"]["n"] == len(split["test"])
        low, high = model["accuracy"]["ci95"]
        assert low <= model["accuracy"]["value"] <= high
        assert sum(map(sum, model["confusion"])) == len(split["test"])
    float32, int8 = report["models"][1], report["models"][2]
    # The float file computes what Keras computes (tiny model: metadata dominates the sizes).
    assert float32["agreement"]["value"] == 1.0 and float32["drop"]["points"] == 0.0
    assert int8["size_bytes"] < float32["size_bytes"]
    assert set(int8["latency"]) == {"1"} and int8["latency"]["1"]["runs"] == 5
    # The device path does not load TensorFlow; the Keras process does.
    assert int8["cold_start"]["peak_rss_mb"] < 250 < report["models"][0]["cold_start"]["peak_rss_mb"]
    bench_dir = exported_run / "bench"
    for name in ("bench.json", "bench.md", "accuracy_vs_latency.png", "confusion_keras.png",
                 "confusion_float32.png", "confusion_int8.png"):
        assert (bench_dir / name).stat().st_size > 0, name
    assert "| int8 |" in (bench_dir / "bench.md").read_text()
    # Every record says which CPU and which int8-relevant instruction sets it was timed on.
    from tlx import machine
    here = machine.current()
    assert report["environment"]["cpu"] == here.cpu
    assert report["environment"]["cpu_features"] == list(here.cpu_features)
    assert "int8-relevant CPU features: " + (", ".join(here.cpu_features) or "none") in \
        (bench_dir / "bench.md").read_text()


def test_without_keras_the_first_tflite_is_the_reference(exported_run):
    result = _bench(exported_run, "--no-keras", "--no-cold-start")
    assert result.exit_code == 0, result.output
    report = json.loads((exported_run / "bench" / "bench.json").read_text())
    assert report["reference"] == "float32" and [m["name"] for m in report["models"]] == ["float32", "int8"]
    assert "int8" in result.stdout and "top-1 %" in result.stdout
    assert "int8-relevant CPU features: " in result.stdout  # and what int8 speed to expect


def test_negative_max_drop_is_refused(exported_run):
    result = _bench(exported_run, "--max-drop", "-1")
    # A usage error, as in `tlx export` (the one --max-drop option has a minimum of 0).
    assert result.exit_code == 2 and "--max-drop" in result.output


def test_upper_bound_gate_without_max_drop_is_refused(exported_run, tmp_path):
    """It would gate nothing: refused before any work, for a run folder and a bundle."""
    result = _bench(exported_run, "--max-drop-on", "upper")
    assert result.exit_code == 1 and "add --max-drop POINTS" in result.output, result.output
    bundle = tmp_path / "device.zip"
    made = runner.invoke(app, ["bundle", str(exported_run), "-o", str(bundle), "--max-images", "3"])
    assert made.exit_code == 0, made.output
    result = _bench(bundle, "--max-drop-on", "upper", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "add --max-drop POINTS" in result.output, result.output
    assert "Traceback" not in result.output and not list(tmp_path.glob("r.*")), "nothing written"


def test_run_without_exports_says_what_to_run(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("export", "bench", "checkpoints"))
    result = _bench(run)
    assert result.exit_code == 1 and f"tlx export {run}" in result.output
    assert "Traceback" not in result.output


def test_empty_test_split_is_a_clear_error(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    split = json.loads((run / "split.json").read_text())
    split["test"] = []
    (run / "split.json").write_text(json.dumps(split))
    result = _bench(run)
    assert result.exit_code == 1 and "test split" in result.output and "empty" in result.output


def test_model_with_other_class_count_is_refused(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    (run / "labels.txt").write_text("red\ngreen\nblue\nyellow\n")
    result = _bench(run, "--no-keras", "--no-cold-start")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "its labels ['blue', 'green', 'red'] are not this run's" in result.output


def test_model_with_other_preprocessing_version_is_refused(exported_run, tmp_path):
    """The run was trained (and exported) with the current version; a config.json from before
    versions existed means version 1: the models then belong to another run."""
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["preprocessing"] == PREPROCESSING_VERSION
    del config["options"]["preprocessing"]
    (run / "config.json").write_text(json.dumps(config))
    result = _bench(run, "--no-keras", "--no-cold-start")
    assert result.exit_code == 1 and f"version {PREPROCESSING_VERSION} but the run was trained with version 1" in result.output
    assert "Traceback" not in result.output


def test_unreadable_test_image_is_reported_not_fatal(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    split = json.loads((run / "split.json").read_text())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    split["test"].append([str(broken), 0])
    (run / "split.json").write_text(json.dumps(split))
    result = _bench(run, "--no-keras", "--no-cold-start", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "bench.json").read_text())
    assert report["unreadable_test_images"][0]["path"] == str(broken)
    assert f"{broken}: " in result.stderr  # named on the terminal
    assert f"- {broken}: " in (run / "bench" / "bench.md").read_text()
    assert report["n_test"] == len(split["test"]) - 1
    # None readable: an error that names them.
    split["test"] = [[str(broken), 0]]
    (run / "split.json").write_text(json.dumps(split))
    result = _bench(run, "--no-keras", "--no-cold-start")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "None of the 1 test images could be read" in result.output and str(broken) in result.output


def test_bad_threads_option():
    result = runner.invoke(app, ["bench", "somewhere", "--threads", "one"])
    assert result.exit_code == 2 and "thread counts" in result.output


def test_a_model_failing_on_one_image_is_counted_not_fatal(exported_run):
    from tlx.bench import evaluate
    from tlx.run_dir import RunDir
    from tlx.runtime import Classifier

    split = RunDir(exported_run).read_split()
    images = evaluate.load_test_images(split.test, tuple(split.image_size))
    real = Classifier.from_file(exported_run / "export" / "model_int8.tflite")

    class FailsOnSecondImage:  # the real interpreter, except one inference raises
        calls = 0
        num_classes = real.num_classes

        def run(self, pixels):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("invoke failed")
            return real.run(pixels)

    predictions = evaluate.tflite_predictions(FailsOnSecondImage(), images)
    assert predictions.predicted[1] == -1 and (predictions.predicted[[0, 2]] >= 0).all()
    assert predictions.failures == [(images.paths[1], "RuntimeError: invoke failed")]


def test_a_model_of_another_image_size_is_refused(exported_run, tmp_path):
    """The .tflite's input size is checked against the run's split.json (the size bench
    decodes the test photos at), not discovered as a failure on every image."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    split = json.loads((run / "split.json").read_text())
    split["image_size"] = [24, 24]
    (run / "split.json").write_text(json.dumps(split))
    result = _bench(run, "--no-keras")
    assert result.exit_code == 1, result.output
    assert "takes 32x32 pixels but the run's split.json says 24x24" in result.output
    assert "Re-export it" in result.output
    assert "Traceback" not in result.output


def test_exports_of_another_model_are_refused(exported_run, tmp_path):
    """`tlx train --overwrite` replaced the model, then old files came back (an export killed
    between two renames leaves such a mix): bench names them instead of measuring them."""
    from tlx.trainer import backbones
    from tlx.run_config import TrainConfig
    from tlx.trainer.train import train

    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    split = json.loads((run / "split.json").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
        train(TrainConfig(data_dir=split["data_dir"], out=run, backbone=TINY, weights="none", image_size=32,
                          phase1_epochs=1, phase2_epochs=0, batch_size=8, seed=1, overwrite=True,
                          validation_fraction=0.5, test_fraction=0.5), log=lambda message: None)
    assert not (run / "export").exists()  # --overwrite removed what the old model made
    shutil.copytree(exported_run / "export", run / "export")
    result = _bench(run, "--no-keras", "--no-cold-start")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "model_int8.tflite: made from another model.keras" in result.output
    assert "tlx export" in result.output and not (run / "bench").exists()


def test_bench_md_escapes_labels_and_names():
    """bench.md renders as HTML in many viewers: a class name must stay text."""
    from pathlib import Path

    from tlx.bench.bench import BenchConfig, BenchResult, environment
    from tlx.bench.report import markdown

    result = BenchResult(BenchConfig(run_dir=Path("<i>run</i>")), ["<img src=x onerror=alert(1)>", "a|b\x1b[2J"],
                         0, [], "keras", [], environment())
    text = markdown(result, charts=False)
    assert "<img" not in text and "<i>" not in text and "\x1b" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "a&#124;b\\x1b[2J" in text


# --- the --max-drop gate, on a run whose int8 model really loses accuracy -----------------

@pytest.fixture(scope="module")
def lossy_run(tmp_path_factory):
    """tests/test_export_fallback.py's model, hostile to int8 (an activation reaching 300 next
    to the channels that carry the class), exported plainly: int8 drops tens of points on the
    18 test photos, with a wide paired interval."""
    from tests.test_export_fallback import make_hostile_run
    from tlx.export.export import ExportConfig, export_run

    run = make_hostile_run(tmp_path_factory.mktemp("lossy"))
    export_run(ExportConfig(run_dir=run, parity=False))
    return run


def _gate(run, *extra):
    return runner.invoke(app, ["bench", str(run), "--threads", "1", "--runs", "2", "--warmup", "0",
                               "--no-cold-start", *extra])


def test_upper_bound_gate_fails_where_the_point_gate_passes(lossy_run):
    measured = _gate(lossy_run, "--json")
    assert measured.exit_code == 0, measured.output
    int8 = next(m for m in json.loads(measured.stdout[measured.stdout.index("{"):])["models"]
                if m["name"] == "int8")
    drop = int8["drop"]
    low, high = drop["ci95"]
    assert drop["points"] > 10 and low < drop["points"] < high
    between = (drop["points"] + high) / 2  # over the measured drop, under its upper bound
    point = _gate(lossy_run, "--max-drop", f"{between:.3f}")
    assert point.exit_code == 0, point.output
    assert "within" in (lossy_run / "bench" / "bench.md").read_text()
    upper = _gate(lossy_run, "--max-drop", f"{between:.3f}", "--max-drop-on", "upper")
    assert upper.exit_code == 3, upper.output
    assert "upper bound of the 95% interval" in upper.output
    report = json.loads((lossy_run / "bench" / "bench.json").read_text())
    assert report["max_drop_exceeded"] is True and report["settings"]["max_drop_on"] == "upper"
    assert "EXCEEDED" in (lossy_run / "bench" / "bench.md").read_text()


def test_point_gate_fails_under_the_measured_drop_with_exit_3(lossy_run):
    result = _gate(lossy_run, "--max-drop", "5")
    assert result.exit_code == 3, result.output
    assert "int8 lost more than 5 points against keras" in result.output


def test_the_drop_interval_is_in_every_host_output(lossy_run):
    from tlx.stats import PairedDifference
    from tlx.drop import drop_text
    from tlx.run_dir import REPORT

    result = _gate(lossy_run, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    row = next(m for m in printed["models"] if m["name"] == "int8")["drop"]
    # Shaped as the device result's drop: points, ci95, n.
    assert set(row) == {"points", "ci95", "n"} and row["n"] == printed["n_test"]
    shown = drop_text(PairedDifference(row["points"], *row["ci95"], row["n"]))
    assert shown.count("[") == 1
    bench = json.loads((lossy_run / "bench" / "bench.json").read_text())
    assert next(m for m in bench["models"] if m["name"] == "int8")["drop"] == row
    assert f"| {shown} |" in (lossy_run / "bench" / "bench.md").read_text()
    table = _gate(lossy_run)
    assert shown in table.stdout and "drop pts [95% CI]" in table.stdout
    report = runner.invoke(app, ["report", str(lossy_run)])
    assert report.exit_code in (0, 3), report.output  # 3: no training history in this run
    html = (lossy_run / REPORT).read_text()
    assert f"<td>{shown}</td>" in html and "drop pts [95% CI]" in html
