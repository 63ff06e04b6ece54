"""One row type for host and device bench (tlx.bench.rows.ModelRow): the same fields in
bench.json and in a device result, one to_json and one reader, older files of both sides read
under today's names, and any damage to a bench.json's rows refused with a message or read
exactly. The files are genuine: a real `tlx bench RUN_DIR` and a real device bench of the
same run's bundle (tests/test_device_result.py's fixture)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tests.test_device_result import _at, _mutate, _mutations, _paths, genuine  # noqa: F401
from tlx.bench.rows import (BENCH_VERSION, MAX_BENCH_BYTES, MAX_BENCH_CONTAINERS, MAX_BENCH_VALUES, Fields,
                            ModelRow, ResultError, RowContext, read_bench, read_bench_rows, read_row)
from tlx.bundle.result import RESULT_VERSION, read_result
from tlx.cli import app
from tlx.run_dir import REPORT

runner = CliRunner()
ROW_KEYS = set(ModelRow.__dataclass_fields__)


@pytest.fixture(scope="module")
def bench_doc(genuine) -> dict:  # noqa: F811
    return json.loads((genuine["run"] / "bench" / "bench.json").read_text())


def test_host_and_device_rows_of_the_same_model_have_the_same_fields(genuine, bench_doc):  # noqa: F811
    device = json.loads(genuine["text"])
    assert bench_doc["format_version"] == BENCH_VERSION and device["format_version"] == RESULT_VERSION
    host_rows = {m["name"]: m for m in bench_doc["models"]}
    for row in device["models"]:
        host = host_rows[row["name"]]
        assert set(row) == set(host) == ROW_KEYS, (sorted(row), sorted(host))
        # The same file measured on both sides: the same hash, size and photo count.
        assert (row["sha256"], row["size_bytes"]) == (host["sha256"], host["size_bytes"])
        assert Path(row["file"]).name == Path(host["file"]).name
        # What one side does not measure is null there, never missing.
        assert row["confusion"] is None and host["host"] is None and host["candidate"] is None
    assert set(host_rows["keras"]) == ROW_KEYS and host_rows["keras"]["drop"] is None


def _same(a, b) -> bool:
    """Equal JSON values, numbers to the reader's tolerance (1e-9)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_a_row_reads_back_exactly_what_it_wrote(genuine, bench_doc):  # noqa: F811
    rows = read_bench_rows(bench_doc, "bench.json")
    assert [row.to_json() for row in rows] == bench_doc["models"]
    # One row through the one reader alone: to_json -> read_row -> the same row.
    device = read_result(genuine["path"])
    row = device.models[-1]
    context = RowContext(n=device.n_images, n_labels=len(device.labels), threads=device.settings.threads,
                         runs=device.settings.runs, reference=device.reference_accuracy, max_failures=20)
    again = read_row(Fields(json.loads(json.dumps(row.to_json())), "row", "test", "advice"), context)
    assert again == row and again.to_json() == row.to_json()


def _as_format_1(doc: dict) -> dict:
    """bench.json as tlx wrote it before the one row type, by hand: no kind or format_version;
    "path" for the file, failures {path, error}, a "drop_points" copy of the drop, no sha256,
    host or candidate; a cold start that printed nothing written as NaN."""
    doc = json.loads(json.dumps(doc))
    del doc["kind"], doc["format_version"]
    for row in doc["models"]:
        row["path"] = row.pop("file")
        row["drop_points"] = row["drop"] and row["drop"]["points"]
        for key in ("sha256", "host", "candidate"):
            del row[key]
    doc["models"][-1]["failures"] = [{"path": "photos/broken.png", "error": "cannot identify image file"}]
    doc["models"][-1]["cold_start"] = {"first_output_s": math.nan, "peak_rss_mb": math.nan}
    return doc


def test_a_bench_json_of_format_1_is_still_read_and_reported(genuine, bench_doc, tmp_path):  # noqa: F811
    old = _as_format_1(bench_doc)
    rows = read_bench_rows(old, "old bench.json")
    new = read_bench_rows(bench_doc, "bench.json")
    assert [r.file for r in rows] == [r.file for r in new] and all(r.sha256 is None for r in rows)
    assert rows[-1].failures == (("photos/broken.png", "cannot identify image file"),)
    assert rows[-1].cold_start is None and [r.drop for r in rows] == [r.drop for r in new]
    # tlx report of a run whose bench.json is that old: the same host figures.
    run = genuine["run"]
    path = run / "bench" / "bench.json"
    text = path.read_text()
    try:
        path.write_text(json.dumps(old))  # NaN as Python's json wrote it then
        (run / REPORT).unlink(missing_ok=True)
        result = runner.invoke(app, ["report", str(run)])
        assert result.exit_code == 0, result.output
        assert "Float vs int8" in (run / REPORT).read_text()
    finally:
        path.write_text(text)


@pytest.mark.parametrize("damage, words", [
    (lambda doc: doc.update(format_version=BENCH_VERSION + 1), "newer tlx"),
    (lambda doc: doc.update(kind="tlx-device-result"), "kind is not 'tlx-bench'"),
    (lambda doc: doc.update(reference="nobody"), "reference 'nobody' names no row"),
    (lambda doc: doc["models"][0].pop("file"), r"models\[0\]\.file is missing"),
    (lambda doc: doc["models"][2]["confusion"][0].append(0), r"confusion row 0 is not 3 counts"),
    (lambda doc: doc["models"][2]["drop"].update(points=50.0), r"models\[2\]\.drop\.points is 50"),
    (lambda doc: doc.update(environment="x86"), "environment is 'x86', not a JSON object"),
    (lambda doc: doc["environment"].update(cpu_features=[1]), r"environment\.cpu_features\[0\] is 1, not text"),
])
def test_a_damaged_bench_json_is_refused_naming_the_place(bench_doc, damage, words):
    doc = json.loads(json.dumps(bench_doc))
    damage(doc)
    with pytest.raises(ResultError, match=words) as refused:
        read_bench_rows(doc, "RUN/bench/bench.json")
    assert "RUN/bench/bench.json" in str(refused.value) and "tlx bench RUN_DIR" in str(refused.value)


def test_a_bench_json_that_is_no_json_or_too_large_is_refused(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResultError, match="is not a bench.json: not JSON"):
        read_bench(path)
    with path.open("wb") as f:
        f.truncate(MAX_BENCH_BYTES + 1)
    with pytest.raises(ResultError, match="larger than 64 MB"):
        read_bench(path)


_READ_IN_FRESH_PROCESS = r"""
import sys
from tlx.bench.rows import ResultError, read_bench
try:
    read_bench(sys.argv[1])
    print("read")
except ResultError as exc:
    print("refused:", str(exc)[:300])
print("PEAK_RSS_KB", next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
"""


def _read_bench_in_fresh_process(path: Path) -> tuple[str, float]:
    """read_bench(path) in a new process: (its first line of output, its peak RSS in MB)."""
    import os
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc (Linux)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _READ_IN_FRESH_PROCESS, str(path)], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines and lines[-1].startswith("PEAK_RSS_KB"), done.stderr[-3000:]
    return lines[0], int(lines[-1].split()[1]) / 1024


#: Peak RSS of a process that imports the row reader and reads the costliest bench.json the
#: bounds let through (measured: 428 MB, five million short strings; the same process
#: reading a file of "[]," before the bounds: over 1 GB).
MAX_READ_RSS_MB = 600


@pytest.mark.parametrize("dense", [b"{}", b"[]", b"1e1", b'""'])
def test_a_dense_bench_json_under_the_byte_cap_is_refused_before_parsing(tmp_path, dense):
    """60 MB of "[]," would be 20 million Python lists, over 1 GB."""
    path = tmp_path / "bench.json"
    path.write_bytes(b"[" + (dense + b",") * (60_000_000 // (len(dense) + 1)) + dense + b"]")
    assert path.stat().st_size < MAX_BENCH_BYTES
    first, peak = _read_bench_in_fresh_process(path)
    assert first.startswith("refused:") and "objects and lists" in first, first
    assert peak < MAX_READ_RSS_MB, peak


def test_the_densest_bench_json_within_the_counts_stays_within_the_memory_bound(tmp_path):
    lists = MAX_BENCH_CONTAINERS - 3  # and the outer object and its two lists
    strings = b",".join([b'"ab"'] * (MAX_BENCH_VALUES - lists - 3))  # a short str costs most
    path = tmp_path / "bench.json"
    path.write_bytes(b'{"kind": "tlx-bench", "a": [' + strings + b'], "b": [' + b",".join([b"[]"] * lists) + b"]}")
    assert path.stat().st_size < MAX_BENCH_BYTES
    first, peak = _read_bench_in_fresh_process(path)
    assert first.startswith("refused:") and "objects and lists" not in first, first  # parsed, then refused
    assert peak < MAX_READ_RSS_MB, peak
    print(f"densest bench.json within the counts: parsed, refused, peak RSS {peak:.0f} MB")


#: Where a mutation can reach what the row reader reads.
_READ = ("models", "n_test", "labels", "settings", "reference", "format_version", "kind", "date", "environment")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large,
                                                                  HealthCheck.large_base_example])
@given(data=st.data())
def test_any_mutation_of_a_bench_json_is_refused_or_read_exactly(bench_doc, data):
    """The row reader either refuses a changed bench.json (ResultError, a TlxError, naming
    the file and what to do) or gives back exactly the rows the file holds."""
    paths = [p for p in _paths(bench_doc) if not p or p[0] in _READ]
    numbers = [p for p in paths if isinstance(_at(bench_doc, p), (int, float))
               and not isinstance(_at(bench_doc, p), bool)]
    path = data.draw(st.sampled_from(numbers) | st.sampled_from(paths), label="path")
    kind, value = data.draw(_mutations, label="mutation")
    try:
        doc = json.loads(_mutate(bench_doc, path, kind, value))
    except (ValueError, RecursionError):
        event("not JSON")  # read_bench's concern (test above), not the row reader's
        return
    try:
        rows = read_bench_rows(doc, "RUN/bench/bench.json")
    except ResultError as exc:
        event("refused")
        assert "RUN/bench/bench.json" in str(exc) and "tlx bench RUN_DIR" in str(exc), str(exc)
        return
    event("accepted")
    # A key the schema does not know is passed over: the rows are then the genuine ones.
    written = [{k: v for k, v in m.items() if k in ROW_KEYS}
               for m in (bench_doc if kind == "extra" else doc)["models"]]
    assert _same([row.to_json() for row in rows], written), (path, kind, value)


def test_a_sweep_reads_a_candidates_bench_json_through_the_same_rows(genuine, bench_doc, tmp_path):  # noqa: F811
    from tlx.errors import TlxError
    from tlx.sweep.records import models_from_bench

    models = models_from_bench(genuine["run"] / "bench" / "bench.json")
    rows = {row.name: row for row in read_bench_rows(bench_doc, "bench.json")}
    assert [m.format for m in models] == ["float32", "int8"]
    for m in models:
        assert (m.accuracy, m.latency_ms, m.size_bytes) == (
            rows[m.format].accuracy.value, rows[m.format].latency[1].p50, rows[m.format].size_bytes)
    damaged = json.loads(json.dumps(bench_doc))
    damaged["models"][1]["accuracy"]["successes"] += 1
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(damaged))
    with pytest.raises(TlxError, match=r"models\[1\]\.accuracy\.value .* sweep measures it again"):
        models_from_bench(path)
