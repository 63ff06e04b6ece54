"""tlx bundle / tlx bench BUNDLE / tlx report --device: a tiny real trained and exported run,
bundled, benched in-process and through the CLI, and every kind of bad bundle refused."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tlx.bundle.archive import MANIFEST, BundleError, open_bundle, sha256_bytes
from tlx.bundle.device import DeviceBenchConfig, bench_bundle
from tlx.bundle.make import BundleConfig, make_bundle, stratified_subset
from tlx.cli import app

runner = CliRunner()
FAST = ["--threads", "1", "--runs", "3", "--warmup", "1", "--no-cold-start"]


@pytest.fixture(scope="module")
def bundle(exported_run, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("bundle") / "tiny.zip"
    summary = make_bundle(BundleConfig(run_dir=exported_run, out=out, max_images=9))
    assert summary.path == out and summary.images == 9 and summary.size_bytes == out.stat().st_size
    return out


def rewrite(src: Path, dst: Path, replace: dict | None = None, manifest=None) -> Path:
    """A copy of bundle `src` with members replaced ({name: bytes}) and the manifest edited
    by `manifest(dict)`, hashes NOT updated unless the edit does it."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == MANIFEST and manifest is not None:
                doc = json.loads(data)
                manifest(doc)
                data = json.dumps(doc).encode()
            new.writestr(item.filename, (replace or {}).get(item.filename, data))
    return dst


def test_stratified_subset_keeps_class_shares():
    items = [(f"a{i}", 0) for i in range(10)] + [(f"b{i}", 1) for i in range(5)] + [("c0", 2)]
    chosen = stratified_subset(items, 6, seed=0)
    assert len(chosen) == 6 and chosen == stratified_subset(items, 6, seed=0)
    counts = [sum(1 for _, label in chosen if label == c) for c in range(3)]
    assert counts == [4, 2, 0] or counts == [4, 1, 1]
    assert stratified_subset(items, None) == items and stratified_subset(items, 99) == items


def test_bundle_holds_models_photos_reference_and_host_results(bundle, exported_run):  # noqa: F811
    with open_bundle(bundle) as opened:
        manifest = opened.manifest
        assert [m["name"] for m in manifest["models"]] == ["float32", "int8"]
        assert len(manifest["images"]) == 9
        assert sorted(i["label"] for i in manifest["images"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert len(manifest["reference"]["probabilities"]) == 9
        assert {(r["model"], r["backend"]) for r in manifest["host"]["results"]} >= {
            ("int8", "litert"), ("int8", "litert-builtin"), ("float32", "litert")}
        assert manifest["host"]["machine"]["architecture"]
        # The run's preprocessing version travels with the photos (the device decodes with it).
        assert manifest["preprocessing"] == opened.preprocessing == 2
        # The photos are the original files, byte for byte.
        first = manifest["images"][0]
        from tlx.run_dir import RunDir
        original = Path(RunDir(exported_run).read_split().data_dir) / first["source"]
        assert opened.read(first["file"]) == original.read_bytes()


def test_bench_bundle_in_process_agrees_with_the_host(bundle):
    result = bench_bundle(DeviceBenchConfig(bundle=bundle, threads=(1,), runs=3, warmup=1, cold_start=False,
                                            backends=("litert", "litert-builtin"))).to_json()
    assert result["n_images"] == 9 and result["machine"]["cpu"]
    rows = {(m["name"], m["backend"]): m for m in result["models"]}
    assert set(rows) == {(n, b) for n in ("float32", "int8") for b in ("litert", "litert-builtin")}
    for m in rows.values():
        # Same machine, same kernels: the host's outputs exactly.
        assert m["host"]["identical"] == 9 and m["host"]["same_backend"]
        assert m["accuracy"]["n"] == 9 and set(m["latency"]) == {"1"}
        assert m["drop"]["n"] == 9
    assert rows[("int8", "litert")]["host"]["max_steps"] == 0
    assert rows[("float32", "litert")]["host"]["max_steps"] is None  # float output: no steps
    assert result["peak_rss_mb"] > 0


def test_bundle_bench_report_through_the_cli(exported_run, tmp_path):  # noqa: F811
    out = tmp_path / "b.zip"
    result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(out), "--max-images", "6"])
    assert result.exit_code == 0, result.output
    assert "MB" in result.output and "6 photos" in result.output and out.is_file()

    prefix = tmp_path / "device"
    result = runner.invoke(app, ["bench", str(out), *FAST, "--out", str(prefix), "--backend", "litert"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "device.json").read_text())
    assert doc["kind"] == "tlx-device-result" and len(doc["models"]) == 2
    assert "vs host" in (tmp_path / "device.md").read_text()

    result = runner.invoke(app, ["report", str(exported_run), "--device", str(tmp_path / "device.json")])
    assert "Host and devices" in (exported_run / "report.html").read_text()
    assert "Traceback" not in result.output


def _bench_fails(path: Path, tmp_path: Path, *words: str) -> str:
    prefix = tmp_path / "result"
    result = runner.invoke(app, ["bench", str(path), *FAST, "--out", str(prefix)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)
    for word in words:
        assert word in result.output, result.output
    assert not list(tmp_path.glob("result*")), "nothing half-written"
    return result.output


def test_truncated_bundle(bundle, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    _bench_fails(cut, tmp_path, "truncated", "tlx bundle")


def test_foreign_files(bundle, exported_run, tmp_path):  # noqa: F811
    text = tmp_path / "notes.zip"
    text.write_text("hello")
    _bench_fails(text, tmp_path, "not a tlx bench bundle")
    # A .tflite carries a zip of its metadata: a zip, but no bundle.
    _bench_fails(exported_run / "export" / "model_int8.tflite", tmp_path, "not a tlx bench bundle")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr(MANIFEST, json.dumps({"format": "something-else"}))
    _bench_fails(other, tmp_path, "not a tlx bench bundle")


def test_hash_mismatch(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as archive:
        photo = next(n for n in archive.namelist() if n.startswith("images/"))
        data = bytearray(archive.read(photo))
    data[-20] ^= 0xFF
    bad = rewrite(bundle, tmp_path / "bad.zip", replace={photo: bytes(data)})
    _bench_fails(bad, tmp_path, photo, "does not match its hash")


def test_newer_format(bundle, tmp_path):
    newer = rewrite(bundle, tmp_path / "new.zip",
                    manifest=lambda doc: doc.update(format_version=99, tlx="9.0"))
    _bench_fails(newer, tmp_path, "tlx 9.0", "format 99", "Upgrade tlx")


def test_model_labels_differ_from_the_manifest(bundle, tmp_path):
    labels = ["cyan", "magenta", "yellow"]
    text = "".join(f"{name}\n" for name in labels).encode()

    def relabel(doc):
        doc["labels"] = labels
        doc["files"]["labels.txt"] = sha256_bytes(text)
    bad = rewrite(bundle, tmp_path / "relabelled.zip", replace={"labels.txt": text}, manifest=relabel)
    _bench_fails(bad, tmp_path, "lists the labels", "manifest")


def test_open_bundle_refuses_labels_file_that_disagrees(bundle, tmp_path):
    text = b"x\ny\nz\n"

    def rehash(doc):
        doc["files"]["labels.txt"] = sha256_bytes(text)
    bad = rewrite(bundle, tmp_path / "labels.zip", replace={"labels.txt": text}, manifest=rehash)
    with pytest.raises(BundleError, match="list different classes"):
        open_bundle(bad)


def test_bundle_of_a_run_without_export(exported_run, tmp_path):  # noqa: F811
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("export", "bench", "checkpoints"))
    result = runner.invoke(app, ["bundle", str(run), "-o", str(tmp_path / "x.zip")])
    assert result.exit_code == 1 and f"tlx export {run}" in result.output
    assert not (tmp_path / "x.zip").exists() and not list(tmp_path.glob(".x.zip*"))


def test_report_refuses_a_file_that_is_no_device_result(exported_run, tmp_path):  # noqa: F811
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "something"}))
    result = runner.invoke(app, ["report", str(exported_run), "--device", str(other)])
    assert result.exit_code == 1 and "not a device result" in result.output


def test_run_folder_options_are_refused_for_a_bundle(bundle):
    result = runner.invoke(app, ["bench", str(bundle), "--data-dir", "x"])
    words = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "for a run folder" in words


def test_bundle_refuses_exports_of_another_model(exported_run, tmp_path):  # noqa: F811
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    with open(run / "model.keras", "ab") as f:  # a different model.keras: its hash changes
        f.write(b"\0")
    result = runner.invoke(app, ["bundle", str(run), "-o", str(tmp_path / "x.zip")])
    assert result.exit_code == 1 and "another model.keras" in result.output, result.output
    assert not (tmp_path / "x.zip").exists()


def test_a_failed_inference_on_the_device_is_counted_not_fatal(bundle, monkeypatch):
    from tlx.runtime.classifier import Classifier

    real_run, calls = Classifier.run, {"n": 0}

    def fails_on_second_photo(self, pixels):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("invoke failed")
        return real_run(self, pixels)

    monkeypatch.setattr(Classifier, "run", fails_on_second_photo)
    result = bench_bundle(DeviceBenchConfig(bundle=bundle, threads=(1,), runs=2, warmup=0, cold_start=False,
                                            backends=("litert",))).to_json()
    first = result["models"][0]
    assert len(first["failures"]) == 1 and "invoke failed" in first["failures"][0]["error"]
    assert first["host"]["differ"] == 1 and first["host"]["identical"] == 8
    assert first["accuracy"]["n"] == 9
    json.dumps(result, allow_nan=False)  # a valid JSON document, no NaN or Infinity
