"""tlx bundle / tlx bench BUNDLE / tlx report --device: a tiny real trained and exported run,
bundled, benched in-process and through the CLI, and every kind of bad bundle refused."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from typer.testing import CliRunner

from tests.test_bench import exported_run, lossy_run  # noqa: F401  (module-scoped fixtures)
from tlx.bench.options import MeasureOptions
from tlx.bundle import manifest as schema
from tlx.bundle.archive import MANIFEST, BundleError, open_bundle, sha256_bytes
from tlx.bundle.device import DeviceBenchConfig, bench_bundle
from tlx.bundle.make import BundleConfig, make_bundle, stratified_subset
from tlx.cli import app
from tlx.imaging import PREPROCESSING_VERSION

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
        assert [m.name for m in manifest.models] == ["float32", "int8"]
        assert len(manifest.images) == 9
        assert sorted(i.label for i in manifest.images) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert len(manifest.reference_top1) == 9
        assert {(r.model, r.backend) for r in manifest.host_results} >= {
            ("int8", "litert"), ("int8", "litert-builtin"), ("float32", "litert")}
        assert manifest.host_machine["architecture"]
        # The run's preprocessing version travels with the photos (the device decodes with it).
        assert manifest.preprocessing == opened.preprocessing == PREPROCESSING_VERSION
        # The photos are the original files, byte for byte.
        first = manifest.images[0]
        from tlx.run_dir import RunDir
        original = Path(RunDir(exported_run).read_split().data_dir) / first.source
        assert opened.read(first.file) == original.read_bytes()


def test_bench_bundle_in_process_agrees_with_the_host(bundle):
    result = bench_bundle(DeviceBenchConfig(
        bundle=bundle, measurement=MeasureOptions(threads=(1,), runs=3, warmup=1, cold_start=False),
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


def test_device_bench_gates_on_the_upper_bound_with_exit_3(lossy_run, tmp_path):  # noqa: F811
    """The int8 model of tests/test_bench.py's lossy run really loses accuracy on the device
    too: a limit between its drop and the drop's upper bound passes the point gate and fails
    the upper-bound one."""
    out = tmp_path / "lossy.zip"
    made = runner.invoke(app, ["bundle", str(lossy_run), "-o", str(out)])
    assert made.exit_code == 0, made.output

    def bench(*extra):
        return runner.invoke(app, ["bench", str(out), *FAST, "--backend", "litert", "--out",
                                   str(tmp_path / "device"), *extra])

    measured = bench("--json")
    assert measured.exit_code == 0, measured.output
    drop = next(m for m in json.loads(measured.stdout[measured.stdout.index("{"):])["models"]
                if m["name"] == "int8")["drop"]
    assert drop["points"] > 10 and drop["ci95"][0] < drop["points"] < drop["ci95"][1]
    between = f"{(drop['points'] + drop['ci95'][1]) / 2:.3f}"
    assert bench("--max-drop", between).exit_code == 0
    upper = bench("--max-drop", between, "--max-drop-on", "upper")
    assert upper.exit_code == 3, upper.output
    assert "upper bound of the 95% interval" in upper.output
    doc = json.loads((tmp_path / "device.json").read_text())
    assert doc["settings"]["max_drop_on"] == "upper" and doc["max_drop_exceeded"] is True
    assert "(upper bound of the 95% interval): EXCEEDED" in (tmp_path / "device.md").read_text()


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
    _bench_fails(bad, tmp_path, "lists the labels", "the manifest")


def test_open_bundle_refuses_labels_file_that_disagrees(bundle, tmp_path):
    text = b"x\ny\nz\n"

    def rehash(doc):
        doc["files"]["labels.txt"] = sha256_bytes(text)
    bad = rewrite(bundle, tmp_path / "labels.zip", replace={"labels.txt": text}, manifest=rehash)
    with pytest.raises(BundleError, match="list different classes"):
        open_bundle(bad)


def test_photos_the_device_would_refuse_are_left_out_of_the_bundle(exported_run, tmp_path, monkeypatch):  # noqa: F811
    """The device decodes at most MAX_PHOTO_PIXELS a photo: `tlx bundle` leaves out (and
    lists) a photo over it instead of shipping one that fails there. Here every photo
    (40 wide, 48 high) is one pixel over a lowered limit."""
    monkeypatch.setattr(schema, "MAX_PHOTO_PIXELS", 48 * 40 - 1)
    result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(tmp_path / "b.zip")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "None of the test photos could be read" in result.output
    assert "40x48 pixels is over the limit of 1,919" in result.output
    assert not (tmp_path / "b.zip").exists()
    monkeypatch.setattr(schema, "MAX_PHOTO_PIXELS", 48 * 40)
    summary = make_bundle(BundleConfig(run_dir=exported_run, out=tmp_path / "b.zip", max_images=3))
    assert summary.images == 3 and not summary.skipped


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
    result = bench_bundle(DeviceBenchConfig(
        bundle=bundle, measurement=MeasureOptions(threads=(1,), runs=2, warmup=0, cold_start=False),
        backends=("litert",))).to_json()
    first = result["models"][0]
    assert len(first["failures"]) == 1 and "invoke failed" in first["failures"][0]["error"]
    assert first["host"]["differ"] == 1 and first["host"]["identical"] == 8
    assert first["accuracy"]["n"] == 9
    json.dumps(result, allow_nan=False)  # a valid JSON document, no NaN or Infinity


# --- hostile bundles ---------------------------------------------------------------------------
# Each named case of a crafted bundle, then a property-based test over mutations of a genuine
# one. Bounds on memory are measured in a fresh process (peak RSS), since this one holds
# TensorFlow.

MAX_RSS_MB = 300
FAST_JSON = ["--threads", "1", "--runs", "1", "--warmup", "0", "--no-cold-start", "--backend", "litert"]


def members_of(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def manifest_of(path: Path) -> dict:
    return json.loads(dict(members_of(path))[MANIFEST])


def write_zip(dst: Path, members: list[tuple[str, bytes]], manifest: dict | None = None,
              rehash: bool = False) -> Path:
    """A bundle of `members` in order (names may repeat), with `manifest` (a dict, written
    last) whose file hashes and model sizes are recomputed when `rehash`."""
    members = [(n, d) for n, d in members if n != MANIFEST or manifest is None]
    if manifest is not None:
        if rehash:
            manifest["files"] = {n: sha256_bytes(d) for n, d in members if n != MANIFEST}
            sizes = dict(members)
            for model in manifest["models"]:
                model["size_bytes"] = len(sizes.get(model["file"], b""))
        members.append((MANIFEST, json.dumps(manifest).encode()))
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for name, data in members:
            archive.writestr(name, data)
    return dst


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream that inflates to `size` zero bytes, made in milliseconds: after a
    full flush every MiB of zeros compresses to the same bytes, so the stream is repeated."""
    block = bytes(1 << 20)
    assert size % len(block) == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    middle = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(block) + c.flush(zlib.Z_FULL_FLUSH) == middle
    last = c.compress(block) + c.flush()
    return first + middle * (size // len(block) - 3) + middle + last


def raw_zip(dst: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip written by hand: (name, deflate stream, declared inflated size, CRC-32) each; for
    sizes zipfile would not write without zip64 or would compute itself."""
    local, central = bytearray(), bytearray()
    for name, stream, size, crc in entries:
        encoded = name.encode()
        offset = len(local)
        local += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size,
                             len(encoded), 0) + encoded + stream
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), size,
                               len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central),
                      len(local), 0)
    dst.write_bytes(bytes(local + central + end))
    return dst


def bench_in_fresh_process(path: Path, out: Path, *extra: str) -> tuple[int, str, float]:
    """`tlx bench BUNDLE` in a new Python process: (exit code, stderr, its peak RSS in MB).

    The peak is VmHWM from /proc/self/status: getrusage's ru_maxrss would carry over this
    process's peak (TensorFlow's) through fork and exec."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc (Linux)")
    code = ("import atexit, sys\n"
            "def peak():\n"
            "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "    print('PEAK_RSS_KB', line.split()[1], file=sys.stderr)\n"
            "atexit.register(peak)\n"
            "from tlx.cli import main\n"
            "sys.argv = ['tlx'] + sys.argv[1:]\n"
            "main()\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, "bench", str(path), *FAST_JSON, "--out", str(out),
                           *extra], capture_output=True, text=True, env=env, timeout=300)
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    assert peak, done.stderr
    return done.returncode, done.stderr, int(peak[-1].split()[1]) / 1024


def test_genuine_bundle_stays_within_the_memory_bound(bundle, tmp_path):
    code, err, peak = bench_in_fresh_process(bundle, tmp_path / "r")
    assert code == 0, err
    assert peak < MAX_RSS_MB
    print(f"genuine bundle: peak RSS {peak:.0f} MB")


def test_zip_bomb_member_is_refused_before_it_inflates(bundle, tmp_path):
    # 2 GiB of zeros in a 2 MB member; declared honestly, then with a lying size.
    photo = manifest_of(bundle)["images"][0]["file"]
    stream = deflated_zeros(2 << 30)
    assert len(stream) < 3 << 20
    kept = [(n, d) for n, d in members_of(bundle) if n != photo]
    for declared, words in (((2 << 30) - 1, ["inflates to", photo]), (1000, ["cannot read", photo])):
        plain = write_zip(tmp_path / "plain.zip", kept)
        with zipfile.ZipFile(plain) as archive:
            entries = [(i.filename, _deflate(archive.read(i)), i.file_size, i.CRC) for i in archive.infolist()]
        bomb = raw_zip(tmp_path / "bomb.zip", [(photo, stream, declared, 0)] + entries)
        code, err, peak = bench_in_fresh_process(bomb, tmp_path / "r")
        assert code == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), err
        assert peak < MAX_RSS_MB
        print(f"bomb member declared {declared} bytes: refused, peak RSS {peak:.0f} MB")


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def test_huge_manifest_is_refused_before_it_is_read(tmp_path):
    # 1.5 GiB of spaces (valid JSON padding) as manifest.json.
    block = b" " * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    middle = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    last = c.compress(b"{}") + c.flush()
    size = 1536 << 20
    huge = raw_zip(tmp_path / "huge.zip", [(MANIFEST, first + middle * 1535 + last, size + 2, 0)])
    code, err, peak = bench_in_fresh_process(huge, tmp_path / "r")
    assert code == 1 and "Traceback" not in err and "manifest.json inflates to" in err, err
    assert peak < MAX_RSS_MB
    print(f"1.5 GiB manifest: refused, peak RSS {peak:.0f} MB")


@pytest.mark.parametrize("dense", [b"{}", b"[]", b"1e1"])
def test_dense_manifest_under_the_size_cap_is_refused_before_parsing(tmp_path, dense):
    # 15 MB of "{}," would be 5 million Python dicts (over 300 MB).
    text = b"[" + (dense + b",") * (15_000_000 // (len(dense) + 1)) + dense + b"]"
    assert len(text) < schema.MAX_MANIFEST_BYTES
    dense_zip = write_zip(tmp_path / "dense.zip", [(MANIFEST, text)])
    code, err, peak = bench_in_fresh_process(dense_zip, tmp_path / "r")
    assert code == 1 and "Traceback" not in err and "objects and lists" in err, err
    assert peak < MAX_RSS_MB
    print(f"dense manifest {dense!r}: refused, peak RSS {peak:.0f} MB")


def test_densest_manifest_within_the_counts_stays_within_the_memory_bound(tmp_path):
    rows = schema.MAX_CONTAINERS - 3  # and the outer object and two lists
    floats = b",".join([b"\"ab\""] * (schema.MAX_VALUES - rows - 1))  # a str costs most
    rows = b",".join([b"[]"] * rows)
    text = b'{"format": "tlx-bench-bundle", "format_version": 1, "a": [' + floats + b'], "b": [' + rows + b"]}"
    dense_zip = write_zip(tmp_path / "dense.zip", [(MANIFEST, text)])
    code, err, peak = bench_in_fresh_process(dense_zip, tmp_path / "r")
    assert code == 1 and "Traceback" not in err and "labels: is missing" in err, err
    assert peak < MAX_RSS_MB
    print(f"densest manifest within the counts: parsed, refused, peak RSS {peak:.0f} MB")


def test_image_size_of_ten_gigapixels_is_refused_without_allocating(bundle, tmp_path):
    doc = manifest_of(bundle)
    doc["image_size"] = [100000, 100000]
    bad = write_zip(tmp_path / "big.zip", members_of(bundle), doc)
    code, err, peak = bench_in_fresh_process(bad, tmp_path / "r")
    assert code == 1 and "Traceback" not in err and "image_size[0]: 100000 is outside" in err, err
    assert peak < MAX_RSS_MB
    print(f"image_size [100000, 100000]: refused, peak RSS {peak:.0f} MB")


def test_duplicate_manifest_is_refused(bundle, tmp_path):
    members = members_of(bundle)
    doc = manifest_of(bundle)
    doc["images"][0]["label"] = (doc["images"][0]["label"] + 1) % len(doc["labels"])
    # The first is what unzip shows, the last what Python's zipfile reads.
    twice = write_zip(tmp_path / "twice.zip", members + [(MANIFEST, json.dumps(doc).encode())])
    _bench_fails(twice, tmp_path, "two members named 'manifest.json'")


def test_any_duplicate_member_is_refused(bundle, tmp_path):
    members = members_of(bundle)
    photo = next(m for m in members if m[0].startswith("images/"))
    twice = write_zip(tmp_path / "twice.zip", members[:1] + [photo] + members[1:])
    _bench_fails(twice, tmp_path, "two members named", photo[0])


def test_swapped_models_with_recomputed_hashes_are_refused(bundle, tmp_path):
    members = dict(members_of(bundle))
    doc = manifest_of(bundle)
    members["models/model_float32.tflite"], members["models/model_int8.tflite"] = (
        members["models/model_int8.tflite"], members["models/model_float32.tflite"])
    by_name = {m["name"]: m for m in doc["models"]}
    by_name["float32"]["output_quantization"], by_name["int8"]["output_quantization"] = (
        by_name["int8"]["output_quantization"], by_name["float32"]["output_quantization"])
    for result in doc["host"]["results"]:  # a consistent lie: the host's rows follow the files
        result["model"] = {"int8": "float32", "float32": "int8"}[result["model"]]
    swapped = write_zip(tmp_path / "swapped.zip", list(members.items()), doc, rehash=True)
    _bench_fails(swapped, tmp_path, "models/model_float32.tflite does not match",
             "it says it is the 'int8' export, the manifest 'float32'")


def test_photo_named_like_a_model_does_not_replace_it_in_the_cold_start(bundle, tmp_path):
    members = members_of(bundle)
    doc = manifest_of(bundle)
    old = doc["images"][0]["file"]
    new = "images/0000-model_int8.tflite"
    doc["images"][0]["file"] = new
    renamed = write_zip(tmp_path / "renamed.zip", [(new if n == old else n, d) for n, d in members], doc,
                        rehash=True)
    genuine = bench_bundle(DeviceBenchConfig(
        bundle=bundle, measurement=MeasureOptions(threads=(1,), runs=1, warmup=0, cold_start=False),
        backends=("litert",))).to_json()
    result = bench_bundle(DeviceBenchConfig(
        bundle=renamed, measurement=MeasureOptions(threads=(1,), runs=1, warmup=0, cold_start=True),
        backends=("litert",))).to_json()
    assert figures(result) == figures(genuine)
    for model in result["models"]:
        assert model["cold_start"] and model["cold_start"]["first_output_s"] > 0


@pytest.mark.parametrize("name", ["../manifest.json", "images/../models/model_int8.tflite", "/etc/passwd",
                                  "images\\0000-x.png", "images/sub/0000-x.png", "other.txt"])
def test_member_names_outside_the_layout_are_refused(bundle, tmp_path, name):
    bad = write_zip(tmp_path / "names.zip", members_of(bundle) + [(name, b"x")])
    _bench_fails(bad, tmp_path, "outside a bundle's layout")


def test_image_entry_with_dot_dot_is_refused(bundle, tmp_path):
    members, doc = members_of(bundle), manifest_of(bundle)
    old = doc["images"][0]["file"]
    doc["images"][0]["file"] = "images/../models/model_int8.tflite"
    bad = write_zip(tmp_path / "dots.zip", [(doc["images"][0]["file"] if n == old else n, d)
                                           for n, d in members], doc, rehash=True)
    _bench_fails(bad, tmp_path, "outside a bundle's layout")


@pytest.mark.parametrize("label, words", [(99, "images[0].label: 99 is outside 0..2"),
                                          (-1, "images[0].label: -1 is outside 0..2"),
                                          (True, "images[0].label: must be a whole number"),
                                          (1.0, "images[0].label: must be a whole number")])
def test_labels_out_of_range_are_refused(bundle, tmp_path, label, words):
    doc = manifest_of(bundle)
    doc["images"][0]["label"] = label
    _bench_fails(write_zip(tmp_path / "label.zip", members_of(bundle), doc), tmp_path, words)


@pytest.mark.parametrize("times", [20, 20_000])
def test_one_photo_listed_many_times_is_refused(bundle, tmp_path, times):
    doc = manifest_of(bundle)
    doc["images"] = [doc["images"][0]] * times
    doc["reference"]["probabilities"] = [doc["reference"]["probabilities"][0]] * times
    doc["reference"]["top1"] = [doc["reference"]["top1"][0]] * times
    for result in doc["host"]["results"]:
        result["scores"], result["top1"] = [result["scores"][0]] * times, [result["top1"][0]] * times
    words = "is not numbered 0001" if times < schema.MAX_IMAGES else f"1..{schema.MAX_IMAGES} expected"
    _bench_fails(write_zip(tmp_path / "many.zip", members_of(bundle), doc), tmp_path, words)


@pytest.mark.parametrize("reshape", ["drop a column", "drop a row", "add a row", "flat"])
def test_host_scores_of_the_wrong_shape_are_refused(bundle, tmp_path, reshape):
    doc = manifest_of(bundle)
    scores = doc["host"]["results"][0]["scores"]
    doc["host"]["results"][0]["scores"] = {
        "drop a column": [row[:-1] for row in scores], "drop a row": scores[:-1],
        "add a row": scores + scores[:1], "flat": [v for row in scores for v in row]}[reshape]
    _bench_fails(write_zip(tmp_path / "shape.zip", members_of(bundle), doc), tmp_path,
             "host.results[0].scores")


@pytest.mark.parametrize("text, words", [
    (b'{"format": "tlx-bench-bundle", "format": "x"}', "'format': appears twice"),
    (b'{"format": "tlx-bench-bundle", "format_version": NaN}', "NaN: is not a JSON number"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'\xff\xfe', "not valid JSON"),
])
def test_hostile_json_is_refused(bundle, tmp_path, text, words):
    members = [(n, d) for n, d in members_of(bundle) if n != MANIFEST] + [(MANIFEST, text)]
    _bench_fails(write_zip(tmp_path / "json.zip", members), tmp_path, words)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(images=[], reference={"name": "keras", "probabilities": [], "top1": []}),
     "images: has 0 entries"),
    (lambda d: d.update(labels="abc"), "labels: must be a list"),
    (lambda d: d["models"][0].update(output_quantization=[0, 0]), "the scale must be a positive number"),
    (lambda d: d["reference"]["top1"].__setitem__(0, (d["reference"]["top1"][0] + 1) % 3),
     "reference.top1[0]: is not the class with the highest score"),
    (lambda d: d.pop("host"), "host: is missing"),
    (lambda d: d.update(preprocessing=99), "preprocessing version 99"),
    (lambda d: d["run"].update(model_sha256="0" * 64), "made from another model.keras"),
    (lambda d: d["images"][0].update(file="images/0000-\u202egpj.exe"), "holds a control character"),
])
def test_hostile_fields_are_refused(bundle, tmp_path, edit, words):
    doc = manifest_of(bundle)
    edit(doc)
    _bench_fails(write_zip(tmp_path / "field.zip", members_of(bundle), doc), tmp_path, words)


def figures(result: dict) -> dict:
    """What a device result claims about accuracy and agreement (not timings or machine)."""
    return {"n": result["n_images"], "reference": result["reference"]["accuracy"],
            "models": {(m["name"], m["backend"]): {k: m[k] for k in (
                "size_bytes", "accuracy", "drop", "agreement", "host", "failures")}
                for m in result["models"]}}


# --- where results and bundles go: checked before the work, written atomically --------------

@pytest.mark.parametrize("where", ["under a file", "read-only", "folder in the way"])
def test_bench_out_that_cannot_be_written_is_refused_before_the_benchmark(bundle, tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "taken.json").mkdir()
    out = {"under a file": tmp_path / "file.txt" / "result",
           # /proc takes no new files, even for root (a chmod'ed folder would not stop root).
           "read-only": Path("/proc/tlx-result"),
           "folder in the way": tmp_path / "taken"}[where]
    result = runner.invoke(app, ["bench", str(bundle), *FAST, "--out", str(out)])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "--out" in result.output and "Traceback" not in result.output, result.output
    assert "Timing" not in result.output, "refused before the benchmark ran"


def test_bench_out_naming_a_folder_writes_inside_it(bundle, tmp_path):
    result = runner.invoke(app, ["bench", str(bundle), *FAST, "--backend", "litert", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(p.suffix for p in tmp_path.iterdir() if p.name.startswith("tiny-"))
    assert written == [".json", ".md"]


def test_bench_result_that_fails_to_write_is_an_error(bundle, tmp_path, monkeypatch):
    import errno

    from tlx import files

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_bytes", full_disk)  # the disk fills up during the benchmark
    result = runner.invoke(app, ["bench", str(bundle), *FAST, "--backend", "litert",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Could not write the result" in result.output and "No space left" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["folder", "under a file", "read-only"])
def test_bundle_out_that_cannot_be_written_is_refused_before_the_work(exported_run, tmp_path, where):  # noqa: F811
    (tmp_path / "file.txt").write_text("x")
    out = {"folder": tmp_path, "under a file": tmp_path / "file.txt" / "b.zip",
           "read-only": Path("/proc/b.zip")}[where]
    result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "-o" in result.output and "Keras reference" not in result.output, result.output


def test_bundle_that_fails_to_write_or_its_own_check_leaves_nothing(exported_run, tmp_path, monkeypatch):  # noqa: F811
    import errno

    from tlx.bundle import make

    out = tmp_path / "b.zip"
    real_writestr = zipfile.ZipFile.writestr

    def full_disk(self, name, data, *args, **kwargs):
        if name.startswith("images/"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_writestr(self, name, data, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "writestr", full_disk)
        result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(out), "--max-images", "3"])
    assert result.exit_code == 1 and "No space left" in result.output, result.output
    assert not list(tmp_path.iterdir()), "no bundle and no temp file"

    # A writer bug (a wrong hash) is caught by the device's own reader before the rename.
    monkeypatch.setattr(make, "sha256_bytes", lambda data: "0" * 64)
    result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(out), "--max-images", "3"])
    assert result.exit_code == 1 and "failed its own check" in result.output, result.output
    assert not list(tmp_path.iterdir())


# --- property: any mutation of a genuine bundle is refused clearly, or changes no figure ------

_HOSTILE_NAMES = ["../evil", "images/../models/model_int8.tflite", "/etc/passwd", "images\\0000-x.png",
                  "images/0000-a/b.png", "models/model_int8.tflite", MANIFEST, "labels.txt",
                  "images/9999-x.png", "models/model_x.tflite", "images/0001-\x1b[2J.png"]
_VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from([-1, 0, 1, 2, 3, 99, 2**31, 100_000, -2**63, 10**30]),
    st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.sampled_from(["0" * 64, "tlx-bench-bundle", "litert", "int8", "float32", "models/model_int8.tflite"]),
    st.lists(st.integers(-2, 5), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(node, prefix=()):
    """Every (path, value) in a JSON document, the root left out."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,), child
        yield from _paths(child, prefix + (key,))


def _pattern(path) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def _undetectable(path, value, labels: int) -> bool:
    """The manifest's claims no device can check (it is not signed): a photo's label changed to
    another class, a host score changed to another possible output. These are left out."""
    pattern = _pattern(path)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if pattern == ("images", "*", "label"):
        return number and type(value) is int and 0 <= value < labels
    if pattern[:2] == ("host", "results") and "scores" in pattern:
        return (number and 0 <= value <= 1.001 if len(pattern) == 6 else
                isinstance(value, list) and len(value) == labels and all(v is None for v in value))
    return False


@st.composite
def mutations(draw, doc: dict, member_names: list[str]):
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "duplicate", "add key",
                                 "member: duplicate", "member: extra", "member: rename", "member: flip"]))
    if kind.startswith("member"):
        return (kind, draw(st.sampled_from(member_names)), draw(st.sampled_from(_HOSTILE_NAMES)))
    paths = list(_paths(doc))
    if kind in ("duplicate",):
        paths = [(p, v) for p, v in paths if isinstance(v, list) and v]
    if kind == "add key":
        paths = [(p, v) for p, v in paths if isinstance(v, dict)] + [((), doc)]
    # One field family first (all photos' labels are one), then one instance: the score
    # tables would otherwise take nearly every draw.
    families = sorted({_pattern(p) for p, _ in paths}, key=str)
    family = draw(st.sampled_from(families))
    path = draw(st.sampled_from([p for p, _ in paths if _pattern(p) == family]))
    return (kind, path, draw(_VALUES) if kind in ("replace", "add key") else None,
            draw(st.text(min_size=1, max_size=8)) if kind == "add key" else None)


def _apply(mutation, doc: dict, members: list[tuple[str, bytes]]):
    kind = mutation[0]
    if kind.startswith("member"):
        _, name, other = mutation
        data = dict(members)[name]
        if kind == "member: duplicate":
            return doc, members + [(name, data)]
        if kind == "member: extra":
            return doc, members + [(other, b"\x89PNG not really")]
        if kind == "member: rename":
            return doc, [(other if n == name else n, d) for n, d in members]
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        return doc, [(n, bytes(flipped) if n == name else d) for n, d in members]
    _, path, value, key = mutation
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1] if path else None
    if kind == "replace":
        parent[last] = value
    elif kind == "delete":
        del parent[last]
    elif kind == "duplicate":
        parent[last].append(parent[last][0])
    else:
        (parent[last] if path else doc)[key] = value
    return doc, members


@pytest.fixture(scope="module")
def genuine(bundle):
    import copy

    result = runner.invoke(app, ["bench", str(bundle), *FAST_JSON, "--json", "--out",
                                 str(bundle.with_name("genuine"))])
    assert result.exit_code == 0, result.output
    return {"figures": figures(json.loads(result.stdout[result.stdout.index("{"):])),
            "manifest": manifest_of(bundle), "members": members_of(bundle), "copy": copy.deepcopy}


def test_any_mutation_is_refused_clearly_or_changes_no_figure(genuine, tmp_path_factory):
    import tracemalloc

    doc0, members0 = genuine["manifest"], genuine["members"]
    names = [n for n, _ in members0]
    folder = tmp_path_factory.mktemp("mutated")
    outcomes = {"accepted": 0, "refused": 0}

    @settings(max_examples=int(os.environ.get("TLX_BUNDLE_EXAMPLES", "60")), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutations(doc0, names))
    def check(mutation):
        if mutation[0] == "replace":
            assume(not _undetectable(mutation[1], mutation[2], len(doc0["labels"])))
        doc, members = _apply(mutation, genuine["copy"](doc0), list(members0))
        path = write_zip(folder / "m.zip", members, doc)
        for old in folder.glob("r.*"):
            old.unlink()
        tracemalloc.start()
        try:
            result = runner.invoke(app, ["bench", str(path), *FAST_JSON, "--json", "--out", str(folder / "r")])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            mutation, result.exception)
        assert "Traceback" not in result.output
        assert peak < 64 << 20, (mutation, peak)
        outcomes["accepted" if result.exit_code == 0 else "refused"] += 1
        if result.exit_code == 0:
            mutated = figures(json.loads(result.stdout[result.stdout.index("{"):]))
            for key, row in genuine["figures"]["models"].items():
                if mutated["models"][key]["host"] is None:  # a host result left out: no figure,
                    row = {**row, "host": None}  # not a wrong one
                assert mutated["models"][key] == row, mutation
            assert {k: v for k, v in mutated.items() if k != "models"} == {
                k: v for k, v in genuine["figures"].items() if k != "models"}, mutation
        else:
            assert result.exit_code == 1, (mutation, result.output)
            message = result.output.strip()
            assert message.startswith("Error: ") and len(message) < 1500, (mutation, message)
            assert "tlx bundle" in message or "Upgrade tlx" in message, (mutation, message)
            assert not list(folder.glob("r.*")), "nothing written for a refused bundle"

    check()
    print(f"mutated bundles: {outcomes}")


def test_bundle_of_more_photos_than_a_device_holds_is_refused_before_the_work(exported_run, tmp_path,  # noqa: F811
                                                                              monkeypatch):
    from tlx.bundle import make

    monkeypatch.setattr(make, "MAX_IMAGES", 2)
    result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(tmp_path / "b.zip")])
    assert result.exit_code == 1 and "--max-images 2" in result.output, result.output
    assert "Keras reference" not in result.output and not list(tmp_path.iterdir())
