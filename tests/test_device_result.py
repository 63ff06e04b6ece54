"""The device result file (`tlx bench BUNDLE` writes it, `tlx report --device` reads it): a genuine
result from a real device bench of a tiny real run, then mutated every way a damaged or hostile
file can be. Never a traceback, never a wrong figure, never a raw control character or a `<`
from the file in the terminal, the .md or the report."""

from __future__ import annotations

import json
import re
import shutil
import tracemalloc
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tlx.bench.options import MeasureOptions
from tlx.bundle.device import DeviceBenchConfig, bench_bundle, markdown, text_table, write_result
from tlx.bundle.make import BundleConfig, make_bundle
from tlx.bundle.result import MAX_RESULT_BYTES, ResultError, read_result
from tlx.cli import app
from tlx.run_dir import REPORT

runner = CliRunner()

#: Text a hostile file may carry: a terminal title (OSC), a screen clear (CSI), a bidi override,
#: HTML that would run, Markdown that would link, a cell end.
HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\u202eevil", "<script>alert(1)</script>",
           '"><img src=x onerror=alert(1)>', "[x](javascript:alert(1))", "a|b", "\r\n", "\ud800"]
#: JSON text that Python's json module builds no value for, or builds at a cost.
RAW_FRAGMENTS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000,
                 "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
                 '"' + "x" * (MAX_RESULT_BYTES + 10) + '"', "[" + ",".join(["{}"] * 200_000) + "]"]
#: Tags report.html is made of; anything else came from a file.
OUR_TAGS = {"!doctype", "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "i", "code",
            "table", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption"}


@pytest.fixture(scope="module")
def genuine(exported_run, tmp_path_factory):  # noqa: F811
    """A benched run (report complete) and the result of a real device bench of its bundle:
    2 models x 2 backends, 2 thread counts, cold start measured. Built once per session."""
    work = tmp_path_factory.mktemp("device-result")
    result = runner.invoke(app, ["bench", str(exported_run), "--threads", "1", "--runs", "3", "--warmup", "1",
                                 "--no-cold-start"])
    assert result.exit_code == 0, result.output
    bundle = make_bundle(BundleConfig(run_dir=exported_run, out=work / "b.zip", max_images=9)).path
    measured = bench_bundle(DeviceBenchConfig(
        bundle=bundle, measurement=MeasureOptions(threads=(1, 2), runs=3, warmup=1),
        backends=("litert", "litert-builtin")))
    json_path, _ = write_result(measured, work / "device")
    # The reader gives back exactly what the writer wrote.
    assert read_result(json_path).to_json() == measured.to_json()
    report = runner.invoke(app, ["report", str(exported_run), "--device", str(json_path)])
    assert report.exit_code == 0, report.output
    return {"run": exported_run, "work": work, "path": json_path, "text": json_path.read_text(),
            "rows": _device_rows((exported_run / REPORT).read_text())}


def _device_rows(page: str) -> list[list[str]]:
    table = page[page.index("Host and devices"):]
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    return [row for row in rows if row and row[0].startswith(("device", "emulated"))]


def _raw_controls(text: str) -> list[str]:
    return sorted({repr(c) for c in text if unicodedata.category(c)[0] == "C" and c not in "\n"})


def _foreign_tags(page: str) -> set[str]:
    return {tag.lower().lstrip("/") for tag in re.findall(r"<(/?[^\s>/]*)", page)} - OUR_TAGS


def _report(run: Path, device: Path):
    (run / REPORT).unlink(missing_ok=True)
    return runner.invoke(app, ["report", str(run), "--device", str(device)])


def _assert_refused(result, run: Path, device: Path) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "Error: " in result.output
    assert str(device) in result.output  # the message names the file
    assert not (run / REPORT).exists(), "no report from a refused result"


def _assert_safe_output(result) -> None:
    assert not _raw_controls(result.output), _raw_controls(result.output)


# --- property: any mutation of a genuine result ------------------------------------------------

def _paths(node, prefix=()):
    """Every place in the document: (keys...) down to each value."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40) | st.sampled_from(HOSTILE),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
_mutations = st.one_of(
    st.tuples(st.just("replace"), _values),
    st.tuples(st.just("raw"), st.sampled_from(RAW_FRAGMENTS)),
    st.tuples(st.just("delete"), st.none()),
    st.tuples(st.just("extra"), _values),
    st.tuples(st.just("nudge"), st.sampled_from([1, -1, 0.5, 1e-6, -1e-6, 2.0, 1e12]))
    | st.tuples(st.just("scale"), st.sampled_from([0.0, -1.0, 0.5, 2.0, 1e300])),
    st.tuples(st.just("hostile"), st.sampled_from(HOSTILE)))


def _at(doc, path):
    for step in path:
        doc = doc[step]
    return doc


def _mutate(doc, path, kind, value) -> str:
    """The mutated document as JSON text (raw fragments are pasted in as text)."""
    doc = json.loads(json.dumps(doc))
    marker = "@@raw-fragment@@"
    parent, key = None, None
    node = doc
    for step in path:
        parent, key, node = node, step, node[step]
    if kind == "delete" and parent is not None:
        del parent[key]
    elif kind == "extra":
        target = node if isinstance(node, dict) else doc
        target["unexpected-" + str(len(target))] = value
    elif kind in ("nudge", "scale") and isinstance(node, (int, float)) and not isinstance(node, bool):
        new = node + value if kind == "nudge" else node * value
        if parent is None:
            doc = new
        else:
            parent[key] = new
    else:
        new = marker if kind == "raw" else value
        if kind == "hostile" and isinstance(node, str):
            new = node + value
        if parent is None:
            doc = new
        else:
            parent[key] = new
    return json.dumps(doc).replace(json.dumps(marker), value if kind == "raw" else json.dumps(marker))


def _figures_same_or_absent(rows: list[list[str]], genuine: list[list[str]]) -> None:
    """Every figure shown (columns 4-9) is the genuine one, or no figure at all."""
    assert len(rows) == len(genuine)
    for row, expected in zip(rows, genuine):
        for cell, want in zip(row[4:], expected[4:]):
            assert cell == want or cell in ("-", "not a device figure"), (cell, want, row, expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large,
                                                                  HealthCheck.large_base_example])
@given(data=st.data())
def test_any_mutation_of_a_device_result_is_refused_or_shows_the_genuine_figures(genuine, data):
    doc = json.loads(genuine["text"])
    paths = list(_paths(doc))
    # A third of the draws aim at a text value (few places hold one, and text is what must be
    # escaped), a third at a number (figures), a third anywhere.
    texts = [p for p in paths if isinstance(_at(doc, p), str)]
    numbers = [p for p in paths if isinstance(_at(doc, p), (int, float)) and not isinstance(_at(doc, p), bool)]
    path = data.draw(st.sampled_from(texts) | st.sampled_from(numbers) | st.sampled_from(paths), label="path")
    kind, value = data.draw(_mutations, label="mutation")
    text = _mutate(doc, path, kind, value)
    device = genuine["work"] / "mutated.json"
    device.write_text(text, encoding="utf-8", errors="surrogatepass")

    # Bounded memory: the file is read only below the size cap, then parsed once.
    tracemalloc.start()
    try:
        parsed = read_result(device)
    except ResultError:
        parsed = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 40 * MAX_RESULT_BYTES, f"{peak / 1e6:.0f} MB to read {len(text)} bytes"

    run = genuine["run"]
    result = _report(run, device)
    _assert_safe_output(result)
    if result.exit_code != 0:
        event("refused")
        _assert_refused(result, run, device)
        return
    event("accepted")
    assert parsed is not None
    page = (run / REPORT).read_text()
    _figures_same_or_absent(_device_rows(page), genuine["rows"])
    assert not _raw_controls(page.replace(page[page.index("<style>"):page.index("</style>")], ""))
    assert not _foreign_tags(page), _foreign_tags(page)
    # What the device prints and writes from the same result: escaped too.
    md, table = markdown(parsed), text_table(parsed)
    assert "<" not in md and not _raw_controls(md) and not _raw_controls(table)


#: Where the figures of the report's device rows come from.
_FIGURE_KEYS = {"accuracy", "drop", "agreement", "host", "latency", "n_images", "reference",
                "threads"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_figure_is_refused_or_not_shown(genuine, data):
    """Aimed at the numbers behind the report's figures: any other number, near or far."""
    doc = json.loads(genuine["text"])
    numbers = [p for p in _paths(doc) if _FIGURE_KEYS & set(p)
               and isinstance(_at(doc, p), (int, float)) and not isinstance(_at(doc, p), bool)]
    path = data.draw(st.sampled_from(numbers), label="path")
    old = _at(doc, path)
    # Mostly values a reader would believe (in range, near the old one), some far off.
    near = st.sampled_from([0, 1, 0.5, old * 0.5, old * 1.01, old + 1, old - 1, old + 1e-9])
    new = data.draw(near | near | st.integers(-2, 20) | st.floats(-1, 200, allow_nan=False), label="value")
    device = genuine["work"] / "figure.json"
    device.write_text(_mutate(doc, path, "replace", new))
    result = _report(genuine["run"], device)
    if result.exit_code != 0:
        event("refused")
        _assert_refused(result, genuine["run"], device)
        return
    event("accepted")
    _figures_same_or_absent(_device_rows((genuine["run"] / REPORT).read_text()), genuine["rows"])


# --- by hand: each kind of damage that used to end in a traceback (KeyError, TypeError,
# ValueError, RecursionError) or a wrong figure (NaN shown as "nan") ------------------------

def _edit(genuine, change) -> Path:
    doc = json.loads(genuine["text"])
    change(doc)
    path = genuine["work"] / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def _set(path, value):
    def change(doc):
        node = doc
        for step in path[:-1]:
            node = node[step]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return change


@pytest.mark.parametrize("path, value, words", [
    (("models", 0, "latency"), KeyError, "models[0].latency is missing"),
    (("bundle",), [], "bundle is a JSON list, not a JSON object"),
    (("machine",), None, "machine is null"),
    (("models", 0, "accuracy", "value"), "high", "not a number"),
    (("models", 1, "latency", "1", "p50_ms"), -3.0, "outside"),
    (("models", 0, "accuracy", "successes"), 8, "successes / n"),
    (("models", 0, "drop", "points"), 12.5, "accuracies give"),
    (("models", 0, "host"), {"n": 9}, "models[0].host.backend is missing"),
    (("models", 2, "host", "identical"), 3, "n - identical"),
    (("models", 0, "latency", "1", "p50_ms"), 1e-3, "1000 / p50"),
    (("settings", "threads"), [1, 4], "not settings.threads"),
    (("models",), [], "not every model on every backend"),
    (("n_images",), 10**9, "outside"),
    (("labels",), ["x"] * 200_000, "at most"),
    (("models", 0, "name"), "int8", "not the name of its file"),
    (("models", 0, "accuracy", "ci95"), None, "models[0].accuracy.ci95 is null"),
    (("date",), 5, "date is 5, not text"),
])
def test_a_damaged_field_is_named(genuine, path, value, words):
    device = _edit(genuine, _set(path, value))
    result = _report(genuine["run"], device)
    _assert_refused(result, genuine["run"], device)
    assert words in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("content", [
    b"NaN", b'{"kind": "tlx-device-result", "n_images": NaN}', b"[" * 100_000, b"\xff\xfe not utf-8",
    b"", b"{" + b" " * (MAX_RESULT_BYTES + 1) + b"}", b'{"kind": "something else"}', b"[]",
])
def test_a_file_that_is_no_result_is_refused_without_reading_it_all(genuine, content):
    device = genuine["work"] / "garbage.json"
    device.write_bytes(content)
    _assert_refused(_report(genuine["run"], device), genuine["run"], device)


def test_the_costliest_json_at_the_size_cap_parses_in_bounded_memory(tmp_path):
    # One byte of "[{},{},...]" becomes about 27 bytes of Python objects: the worst shape.
    device = tmp_path / "dicts.json"
    device.write_text("[" + ",".join(["{}"] * ((MAX_RESULT_BYTES - 2) // 3)) + "]")
    assert device.stat().st_size <= MAX_RESULT_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(ResultError, match="not a JSON object"):
            read_result(device)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * MAX_RESULT_BYTES


def test_a_folder_or_a_missing_file_is_refused(genuine):
    for device in (genuine["work"], genuine["work"] / "absent.json"):
        _assert_refused(_report(genuine["run"], device), genuine["run"], device)


def test_a_result_from_a_newer_tlx_says_upgrade(genuine):
    device = _edit(genuine, lambda doc: doc.update(format_version=99, tlx="9.0"))
    result = _report(genuine["run"], device)
    _assert_refused(result, genuine["run"], device)
    assert "newer tlx" in result.output and "9.0" in result.output


# --- the result belongs to the run ---------------------------------------------------------

def test_a_result_of_another_model_is_refused_naming_why(genuine):
    device = _edit(genuine, lambda doc: doc["bundle"]["run"].update(model_sha256="0" * 64))
    result = _report(genuine["run"], device)
    _assert_refused(result, genuine["run"], device)
    assert "another model.keras" in result.output and "tlx bundle" in result.output


def test_a_result_of_an_earlier_export_is_refused(genuine, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(genuine["run"], run, ignore=shutil.ignore_patterns("checkpoints", REPORT))
    with open(run / "export" / "model_int8.tflite", "ab") as f:  # exported again since the bundle
        f.write(b"\0")
    result = _report(run, genuine["path"])
    _assert_refused(result, run, genuine["path"])
    assert "export/model_int8.tflite is not the file the device measured" in result.output
    assert "model_float32" not in result.output  # names only what differs


def test_a_result_of_another_run_id_is_refused(genuine, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(genuine["run"], run, ignore=shutil.ignore_patterns("checkpoints", REPORT))
    config = json.loads((run / "config.json").read_text())
    config["run_id"] = "another-run"
    (run / "config.json").write_text(json.dumps(config))
    result = _report(run, genuine["path"])
    _assert_refused(result, run, genuine["path"])
    assert "'another-run'" in result.output


def test_the_models_hashes_are_recorded(genuine):
    import hashlib

    doc = json.loads(genuine["text"])
    for row in doc["models"]:
        exported = genuine["run"] / "export" / Path(row["file"]).name
        assert row["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()


# --- text from files is escaped on the device and in the report ---------------------------------

def test_hostile_names_in_a_bundle_and_cpu_string_are_escaped_everywhere(genuine, tmp_path, monkeypatch):
    from tests.test_bundle import rewrite
    from tlx import machine

    title, clear, script = "\x1b]0;pwned\x07", "\x1b[2J", "<script>alert(1)</script>"
    bundle = rewrite(genuine["work"] / "b.zip", tmp_path / "hostile.zip", manifest=lambda doc: (
        doc["run"].update(name=f"run{title}{script}"), doc.update(created=clear + script),
        doc["host"]["machine"].update(cpu=f"host{title}<b>cpu</b>")))
    real = machine.current()
    monkeypatch.setattr(machine, "current", lambda *a: machine.Machine(
        **{**real.__dict__, "cpu": f"device{clear}{script}", "cpu_features": ("avx2", script)}))
    prefix = tmp_path / "hostile"
    result = runner.invoke(app, ["bench", str(bundle), "--threads", "1", "--runs", "2", "--warmup", "0",
                                 "--no-cold-start", "--backend", "litert", "--out", str(prefix)])
    assert result.exit_code == 0, result.output
    assert not _raw_controls(result.output)
    md = (tmp_path / "hostile.md").read_text()
    assert "<" not in md and not _raw_controls(md) and "&lt;script&gt;" in md and "\\x1b]0;pwned" in md

    # The result itself keeps the text as it was; the report shows it escaped.
    doc = json.loads((tmp_path / "hostile.json").read_text())
    assert doc["machine"]["cpu"] == f"device{clear}{script}"
    report = _report(genuine["run"], tmp_path / "hostile.json")
    assert report.exit_code == 0, report.output
    assert not _raw_controls(report.output)
    page = (genuine["run"] / REPORT).read_text()
    assert not _foreign_tags(page) and "device\\x1b[2J&lt;script&gt;" in page


def test_error_messages_quoting_a_file_are_printable(genuine):
    device = _edit(genuine, _set(("models", 0, "backend"), "\x1b]0;pwned\x07"))
    result = _report(genuine["run"], device)
    _assert_refused(result, genuine["run"], device)
    assert not _raw_controls(result.output) and "\\x1b]0;pwned\\x07" in result.output


def test_report_help_documents_its_exit_codes():
    result = runner.invoke(app, ["report", "--help"])
    words = " ".join(result.output.replace("│", " ").split())
    assert "Exit codes: 0 the report is written; 3 the report is written but the run is incomplete" in words


@pytest.mark.parametrize("edit", [
    lambda doc: doc["run"].update(name=["not", "text"]),
    lambda doc: doc["run"].update(model_sha256="not a hash"),
    lambda doc: doc["host"]["machine"].update(cores="two"),
    lambda doc: doc["host"].update(machine=None),
    lambda doc: doc["run"].pop("model_sha256"),
    lambda doc: doc["host"]["machine"].pop("python"),
    lambda doc: doc["host"]["machine"].update(versions={"x": ["not", "text"]}),
])
def test_the_device_never_writes_a_result_the_report_would_refuse(genuine, tmp_path, edit):
    from tests.test_bundle import rewrite

    bundle = rewrite(genuine["work"] / "b.zip", tmp_path / "edited.zip", manifest=edit)
    result = runner.invoke(app, ["bench", str(bundle), "--threads", "1", "--runs", "2", "--warmup", "0",
                                 "--no-cold-start", "--backend", "litert", "--out", str(tmp_path / "odd")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "manifest" in result.output and "tlx bundle" in result.output
    assert not list(tmp_path.glob("odd.*")), "nothing written"


def _as_format_2(doc: dict) -> None:
    """A result as tlx wrote it before the one row type (format 2), by hand: the agreement
    named "agreement_reference", no "confusion", "candidate" only in a sweep's rows."""
    doc["format_version"] = 2
    for row in doc["models"]:
        row["agreement_reference"] = row.pop("agreement")
        del row["confusion"]
        if row["candidate"] is None:
            del row["candidate"]


def test_a_version_2_result_is_still_read_with_the_same_rows(genuine):
    """Results of format 2 are on devices already: read, their rows under today's names."""
    device = _edit(genuine, _as_format_2)
    assert "agreement_reference" in device.read_text() and '"agreement"' not in device.read_text()
    old, new = read_result(device), read_result(genuine["path"])
    assert old.format_version == 2 and old.models == new.models
    result = _report(genuine["run"], device)
    assert result.exit_code == 0, result.output
    assert _device_rows((genuine["run"] / REPORT).read_text()) == genuine["rows"]


def test_a_version_3_row_with_an_old_field_name_is_refused(genuine):
    """Format 3 has one name per field: the old one alone is a damaged row, named as such."""
    def renamed_back(doc):
        doc["models"][0]["agreement_reference"] = doc["models"][0].pop("agreement")
    with pytest.raises(ResultError, match=r"models\[0\]\.agreement is missing\. Pass the \.json"):
        read_result(_edit(genuine, renamed_back))


def test_a_version_1_result_without_model_hashes_is_still_read(genuine):
    def older(doc):
        _as_format_2(doc)
        doc["format_version"] = 1
        for row in doc["models"]:
            del row["sha256"]
    device = _edit(genuine, older)
    result = _report(genuine["run"], device)
    assert result.exit_code == 0, result.output
    assert _device_rows((genuine["run"] / REPORT).read_text()) == genuine["rows"]


def test_a_drop_with_an_interval_is_read_and_a_lopsided_interval_refused(genuine):
    """The genuine run changes no photo's correctness; here the int8 model loses one photo."""
    from tlx.stats import paired_difference, wilson
    from tlx.bundle.result import parse_result

    doc = json.loads(genuine["text"])
    n, reference = doc["n_images"], doc["reference"]["accuracy"]["successes"]
    truth = [0] * n
    ref = [0] * reference + [1] * (n - reference)
    worse = [1] + ref[1:]  # the first photo, right for the reference, wrong here
    for row in doc["models"][2:]:
        row["accuracy"] = wilson(reference - 1, n).to_json()
        row["drop"] = paired_difference(truth, ref, worse).to_json()
        row["agreement"] = wilson(n - 1, n).to_json()
    parsed = parse_result(json.loads(json.dumps(doc)), "edited")
    assert parsed.models[2].drop.points == pytest.approx(100 / n) and parsed.models[2].drop.low < 0
    doc["models"][2]["drop"]["ci95"][1] += 1.0
    with pytest.raises(ResultError, match=r"models\[2\]\.drop\.ci95 .* is no interval about"):
        parse_result(doc, "edited")


def test_the_gate_mode_is_read_checked_and_defaults_to_the_point(genuine):
    """settings.max_drop_on: "point" or "upper"; a file from before the option has none (the
    point); anything else is refused, and max_drop_exceeded must agree with the mode."""
    from tlx.drop import DropGate

    assert read_result(genuine["path"]).settings.max_drop_on is DropGate.POINT
    # Format 2 came before the option (and before its bump): no mode there is the point.
    older = read_result(_edit(genuine, lambda doc: (_as_format_2(doc), doc["settings"].pop("max_drop_on"))))
    assert older.settings.max_drop_on is DropGate.POINT
    # Format 3 always writes it: without it the file is damaged.
    with pytest.raises(ResultError, match=r"settings\.max_drop_on is missing"):
        read_result(_edit(genuine, lambda doc: doc["settings"].pop("max_drop_on")))
    with pytest.raises(ResultError, match=r"settings\.max_drop_on is 'sideways', not one of point, upper"):
        read_result(_edit(genuine, lambda doc: doc["settings"].update(max_drop_on="sideways")))

    def upper_gate_over_a_lost_photo(doc):
        from tlx.stats import paired_difference, wilson

        n, reference = doc["n_images"], doc["reference"]["accuracy"]["successes"]
        truth, ref = [0] * n, [0] * reference + [1] * (n - reference)
        for row in doc["models"]:
            if row["name"] == "int8":
                row["accuracy"] = wilson(reference - 1, n).to_json()
                row["drop"] = paired_difference(truth, ref, [1] + ref[1:]).to_json()
                row["agreement"] = wilson(n - 1, n).to_json()
        # Over the drop (100 / n points), under its upper bound.
        doc["settings"].update(max_drop=100 / n + 1, max_drop_on="upper")
        doc["max_drop_exceeded"] = True

    assert read_result(_edit(genuine, upper_gate_over_a_lost_photo)).max_drop_exceeded
    with pytest.raises(ResultError, match="max_drop_exceeded .* max_drop_on say otherwise"):
        read_result(_edit(genuine, lambda doc: (upper_gate_over_a_lost_photo(doc),
                                                doc["settings"].update(max_drop_on="point"))))
