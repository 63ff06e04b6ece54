"""A sweep on the device: `tlx bundle SWEEP_DIR` packs every candidate's models with the test
photos once, `tlx bench` of it measures every model one interpreter at a time, `tlx report
SWEEP_DIR --device` draws accuracy against device latency with the Pareto front per device;
crafted or mixed-up sweep bundles and results of another sweep are refused. Tiny backbone."""

from __future__ import annotations

import hashlib
import os
import re
import json
import shutil
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import make_image_folder
from tests.test_sweep import TRAINING
from tests.support.trainer import TINY, TINY_SPEC
from tlx.bench.options import MeasureOptions
from tlx.bundle.archive import open_bundle
from tlx.bundle.device import DeviceBenchConfig, bench_bundle, write_result
from tlx.cli import app
from tlx.trainer import backbones

runner = CliRunner()
SIZES = (32, 40)


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbone():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
        yield


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    data = make_image_folder(tmp_path_factory.mktemp("data") / "data", classes=("red", "green", "blue"),
                             per_class=8)
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    result = runner.invoke(app, ["sweep", str(data), "--out", str(out), "--backbones", TINY,
                                 "--image-sizes", ",".join(map(str, SIZES)), *TRAINING])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def sweep_bundle(sweep_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "sweep.zip"
    result = runner.invoke(app, ["bundle", str(sweep_dir), "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_bundle_holds_every_candidates_models_and_each_photo_once(sweep_dir, sweep_bundle):
    members = _members(sweep_bundle)
    manifest = json.loads(members["manifest.json"])
    runs = [f"{TINY}-{size}" for size in SIZES]
    assert [c["run"]["name"] for c in manifest["candidates"]] == runs
    models = sorted(n for n in members if n.startswith("models/"))
    assert models == sorted(f"models/{run}/model_{fmt}.tflite" for run in runs for fmt in ("float32", "int8"))
    for name in models:
        run, file = name.split("/")[1:]
        assert members[name] == (sweep_dir / run / "export" / file).read_bytes()
    photos = [n for n in members if n.startswith("images/")]
    split = json.loads((sweep_dir / "split.json").read_text())
    # Each test photo once, shared by both image sizes: no two photo members hold the same bytes.
    assert len(photos) == len(split["test"]) == len({hashlib.sha256(members[n]).hexdigest() for n in photos})
    assert [i["file"] for i in manifest["images"]] == sorted(photos)
    with open_bundle(sweep_bundle) as bundle:
        assert [p.image_size for p in bundle.manifest.parts()] == [(s, s) for s in SIZES]
        assert [p.backbone for p in bundle.manifest.parts()] == [TINY, TINY]


@pytest.fixture(scope="module")
def device_results(sweep_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("device")
    result = bench_bundle(DeviceBenchConfig(bundle=sweep_bundle, backends=("litert",),
                                            measurement=MeasureOptions(threads=(1,), runs=3, warmup=1,
                                                                       cold_start=False)))
    first = write_result(result, folder / "pi5")[0]
    cli = runner.invoke(app, ["bench", str(sweep_bundle), "--threads", "1", "--runs", "3", "--warmup", "1",
                              "--no-cold-start", "--out", str(folder / "pi4"), "--json"])
    assert cli.exit_code == 0, cli.output
    return result, first, folder / "pi4.json"


def test_the_device_measures_every_model_of_every_candidate(device_results):
    result, first, second = device_results
    assert [(m.candidate.run.name, m.name) for m in result.models] == [
        (f"{TINY}-{s}", fmt) for s in SIZES for fmt in ("float32", "int8")]
    for m in result.models:
        assert m.candidate.image_size == int(m.candidate.run.name.rsplit("-", 1)[1])
        assert m.accuracy.n == result.n_images and m.host is not None and not m.failures
    cli = json.loads(second.read_text())
    assert cli["bundle"]["run"] is None and cli["bundle"]["sweep"]["name"] == "sweep"
    assert [m["candidate"]["run"]["name"] for m in cli["models"]] == [m.candidate.run.name for m in result.models]


def test_the_report_draws_each_devices_front_and_picks(sweep_dir, device_results):
    _, first, second = device_results
    result = runner.invoke(app, ["report", str(sweep_dir), "--device", str(first), "--device", str(second)])
    assert result.exit_code == 0, result.output
    page = (sweep_dir / "report.html").read_text()
    assert page.count("<h2>Device: ") == 2 and page.count("data:image/png;base64,") == 2
    assert page.count("<h3>Pick per budget</h3>") == 2
    from tlx.bundle.result import read_result
    from tlx.sweep.device_report import device_points
    from tlx.sweep.pareto import Budgets, pareto_front

    for path in (first, second):
        device = device_points(read_result(path), Budgets())
        assert list(device.front) == pareto_front(device.points) and device.front
        best = max(device.points, key=lambda p: (p.accuracy, -p.latency_ms, -p.size_bytes))
        budget, pick, reason = device.picks[0]
        assert pick.accuracy == best.accuracy and pick.id in page and "most accurate" in reason
        # Every latency budget picks a front model within it.
        for budget, pick, _ in device.picks[1:]:
            assert pick in device.front and pick.latency_ms <= budget.max_latency_ms


def test_a_sweep_result_of_format_2_is_still_read_and_reported(sweep_dir, device_results, tmp_path):
    """A sweep's result written before the one row type (by hand: "agreement_reference", no
    "confusion"): the same rows, the same report."""
    from tlx.bundle.result import read_result

    _, first, _ = device_results
    doc = json.loads(first.read_text())
    doc["format_version"] = 2
    for row in doc["models"]:
        row["agreement_reference"] = row.pop("agreement")
        del row["confusion"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert read_result(old).models == read_result(first).models
    result = runner.invoke(app, ["report", str(sweep_dir), "--device", str(old)])
    assert result.exit_code == 0, result.output
    assert (sweep_dir / "report.html").read_text().count("<h2>Device: ") == 1


def test_report_json_of_a_sweep_folder_names_the_report(sweep_dir, device_results):
    _, first, _ = device_results
    result = runner.invoke(app, ["report", str(sweep_dir), "--device", str(first), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"report": str(sweep_dir / "report.html"), "complete": True,
                                         "missing": []}


def test_bundle_json_of_a_sweep_folder_is_the_summary(sweep_dir, tmp_path):
    out = tmp_path / "s.zip"
    result = runner.invoke(app, ["bundle", str(sweep_dir), "-o", str(out), "--max-images", "3", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["path"] == str(out) and doc["size_bytes"] == out.stat().st_size and doc["images"] == 3
    assert doc["models"] == [f"{TINY}-{s}/{fmt}" for s in SIZES for fmt in ("float32", "int8")]


# --- refused: results of another sweep or run, mixed-up and crafted sweep bundles ---------------

def test_results_of_another_sweep_or_run_are_refused(sweep_dir, device_results, tmp_path):
    _, first, _ = device_results
    from tlx.bundle.compare import not_of_this_run
    from tlx.bundle.result import read_result
    from tlx.run_dir import RunDir

    # Another sweep: same candidates' names, another split.
    other = tmp_path / "other"
    shutil.copytree(sweep_dir, other)
    split = json.loads((other / "split.json").read_text())
    split["seed"] = split.get("seed", 0) + 1
    (other / "split.json").write_text(json.dumps(split))
    report = other / "report.html"
    report.unlink(missing_ok=True)
    result = runner.invoke(app, ["report", str(other), "--device", str(first)])
    assert result.exit_code == 1 and "another sweep" in result.output and "Traceback" not in result.output
    assert not report.exists()
    # The same sweep with one candidate exported again: that file is not the one measured.
    shutil.copytree(sweep_dir, tmp_path / "again")
    again = tmp_path / "again"
    int8 = again / f"{TINY}-{SIZES[1]}" / "export" / "model_int8.tflite"
    int8.write_bytes(int8.read_bytes() + b"\0")
    result = runner.invoke(app, ["report", str(again), "--device", str(first)])
    assert result.exit_code == 1 and f"{TINY}-{SIZES[1]}: export/model_int8.tflite is not the file" in result.output
    # A sweep's result is no run's, and a candidate name from the file is never used as a path.
    assert "sweep" in not_of_this_run(RunDir(sweep_dir / f"{TINY}-{SIZES[0]}"), read_result(first))[0]
    doc = json.loads(first.read_text())
    for row in doc["models"]:
        row["candidate"]["backbone"], row["candidate"]["run"]["name"] = "../x", f"../x-{row['candidate']['image_size']}"
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps(doc))
    result = runner.invoke(app, ["report", str(sweep_dir), "--device", str(crafted)])
    assert result.exit_code == 1 and "no finished candidate of this sweep" in result.output


def _rehash(doc: dict, members: dict[str, bytes]) -> None:
    doc["files"] = {n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != "manifest.json"}
    for candidate in doc["candidates"]:
        for model in candidate["models"]:
            model["size_bytes"] = len(members[model["file"]])


def _write(path, members: dict[str, bytes], doc: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            if name != "manifest.json":
                archive.writestr(name, data)
        archive.writestr("manifest.json", json.dumps(doc))
    return path


def _bench_refused(path, tmp_path, *words) -> str:
    result = runner.invoke(app, ["bench", str(path), "--threads", "1", "--runs", "1", "--warmup", "0",
                                 "--no-cold-start", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in result.output, result.output
    assert not list(tmp_path.glob("r.*"))
    return result.output


def test_a_candidates_model_swapped_with_anothers_is_refused(sweep_bundle, tmp_path):
    members = _members(sweep_bundle)
    doc = json.loads(members["manifest.json"])
    small, large = (f"models/{TINY}-{s}/model_int8.tflite" for s in SIZES)
    members[small], members[large] = members[large], members[small]
    _rehash(doc, members)
    output = _bench_refused(_write(tmp_path / "swapped.zip", members, doc), tmp_path,
                            f"models/{TINY}-{SIZES[0]}/model_int8.tflite does not match")
    assert "made from another model.keras" in output and "it takes input" in output


def test_a_sweep_bundle_is_refused_by_a_reader_of_format_1_only(sweep_bundle, tmp_path, monkeypatch):
    from tlx.bundle import manifest as schema

    doc = json.loads(_members(sweep_bundle)["manifest.json"])
    assert doc["format_version"] == schema.SWEEP_VERSION > schema.SINGLE_RUN_VERSION
    monkeypatch.setattr(schema, "FORMAT_VERSION", schema.SINGLE_RUN_VERSION)
    _bench_refused(sweep_bundle, tmp_path, "format 2", "Upgrade tlx")
    doc["format_version"] = 1  # a format-1 manifest holds no candidates
    monkeypatch.undo()
    members = _members(sweep_bundle)
    _bench_refused(_write(tmp_path / "v1.zip", members, doc), tmp_path, "candidates", "a bundle of format 1")


@pytest.fixture(scope="module")
def genuine_sweep(sweep_bundle, tmp_path_factory):
    from tests.test_bundle import FAST_JSON

    result = runner.invoke(app, ["bench", str(sweep_bundle), *FAST_JSON, "--json", "--out",
                                 str(tmp_path_factory.mktemp("g") / "genuine")])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def _sweep_figures(result: dict) -> dict:
    """What a sweep's result claims per model (not timings, the machine, the reference's name or
    the optional run id, which the report checks against the run folder when present)."""
    def candidate(c: dict) -> dict:
        return {"backbone": c["backbone"], "image_size": c["image_size"], "reference": c["reference"]["accuracy"],
                "run": {k: v for k, v in c["run"].items() if k != "run_id"}}

    return {(m["candidate"]["run"]["name"], m["name"], m["backend"]): {
        **{k: m[k] for k in ("size_bytes", "accuracy", "drop", "agreement", "host", "failures")},
        "candidate": candidate(m["candidate"])} for m in result["models"]}


def _undetectable_in_sweep(path, value, labels: int) -> bool:
    """The claims no device can check (the manifest is not signed): a photo's label changed to
    another class, a host score changed to another possible output (tests/test_bundle.py)."""
    from tests.test_bundle import _pattern

    pattern = _pattern(path)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if pattern == ("images", "*", "label"):
        return number and type(value) is int and 0 <= value < labels
    if pattern[:4] == ("candidates", "*", "host_results", "*") and "scores" in pattern:
        return (number and 0 <= value <= 1.001 if len(pattern) == 7 else
                isinstance(value, list) and len(value) == labels and all(v is None for v in value))
    return False


def test_any_mutation_of_a_sweep_bundle_is_refused_clearly_or_changes_no_figure(
        sweep_bundle, genuine_sweep, tmp_path_factory):
    import copy
    import os

    from tests.test_bundle import FAST_JSON, _apply, mutations, write_zip

    members0 = list(_members(sweep_bundle).items())
    doc0 = json.loads(dict(members0)["manifest.json"])
    expected = _sweep_figures(genuine_sweep)
    folder = tmp_path_factory.mktemp("mutated-sweep")
    outcomes = {"accepted": 0, "refused": 0}

    @settings(max_examples=int(os.environ.get("TLX_BUNDLE_EXAMPLES", "40")), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutations(doc0, [n for n, _ in members0]))
    def check(mutation):
        if mutation[0] == "replace" and _undetectable_in_sweep(mutation[1], mutation[2], len(doc0["labels"])):
            return
        doc, members = _apply(mutation, copy.deepcopy(doc0), list(members0))
        path = write_zip(folder / "m.zip", members, doc)
        for old in folder.glob("r.*"):
            old.unlink()
        result = runner.invoke(app, ["bench", str(path), *FAST_JSON, "--json", "--out", str(folder / "r")])
        assert result.exception is None or isinstance(result.exception, SystemExit), (mutation, result.exception)
        assert "Traceback" not in result.output
        outcomes["accepted" if result.exit_code == 0 else "refused"] += 1
        if result.exit_code == 0:
            mutated = _sweep_figures(json.loads(result.stdout[result.stdout.index("{"):]))
            assert mutated.keys() == expected.keys(), mutation
            for key, row in expected.items():
                if mutated[key]["host"] is None:  # a host result left out: no figure, not a wrong one
                    row = {**row, "host": None}
                assert mutated[key] == row, mutation
        else:
            message = result.output.strip()
            assert result.exit_code == 1 and message.startswith("Error: ") and len(message) < 1500, (
                mutation, message)
            assert "tlx bundle" in message or "Upgrade tlx" in message, (mutation, message)
            assert not list(folder.glob("r.*")), "nothing written for a refused bundle"

    check()
    print(f"mutated sweep bundles: {outcomes}")


def test_benching_a_sweep_bundle_stays_within_the_bundles_memory_bound(sweep_bundle, tmp_path):
    from tests.test_bundle import MAX_RSS_MB, bench_in_fresh_process

    code, err, peak = bench_in_fresh_process(sweep_bundle, tmp_path / "r")
    assert code == 0, err
    # One interpreter alive at a time and one image size's photos decoded at a time: the bound
    # of a single run's bundle holds for the whole sweep.
    assert peak < MAX_RSS_MB, peak
    print(f"peak RSS benching a sweep bundle of {len(SIZES)} candidates: {peak:.0f} MB")


def test_text_from_a_device_result_is_escaped_in_the_sweep_report(sweep_dir, device_results, tmp_path):
    _, first, _ = device_results
    doc = json.loads(first.read_text())
    doc["machine"]["cpu"] = "<script>alert(1)</script>\x1b]0;title\x07"
    doc["bundle"]["file"] = "<img src=x onerror=alert(1)>.zip"
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(doc))
    result = runner.invoke(app, ["report", str(sweep_dir), "--device", str(hostile)])
    assert result.exit_code == 0, result.output
    page = (sweep_dir / "report.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page and "\x1b" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x1b]0;title\\x07" in page


def test_bad_sweep_bundles_are_refused_before_the_work(sweep_dir, tmp_path, monkeypatch):
    from tlx.bundle import make

    (tmp_path / "taken.zip").mkdir()
    result = runner.invoke(app, ["bundle", str(sweep_dir), "-o", str(tmp_path / "taken.zip")])
    assert result.exit_code == 1 and "is a folder" in result.output, result.output
    # More scores than a manifest holds: told to take fewer photos, before any Keras reference.
    monkeypatch.setattr(make, "MAX_SCORE_VALUES", 10)
    result = runner.invoke(app, ["bundle", str(sweep_dir), "-o", str(tmp_path / "b.zip")])
    assert result.exit_code == 1 and "--max-images" in result.output, result.output
    assert "Keras reference" not in result.output and not (tmp_path / "b.zip").exists()


def _row_figures(result) -> dict:
    return {(m.candidate.run.name, m.name, m.backend): (m.accuracy, m.drop.points, m.first_p50, m.size_bytes,
                                                       m.candidate.reference_accuracy)
            for m in result.models}


def test_any_mutation_of_a_sweep_result_is_refused_or_shows_the_genuine_figures(sweep_dir, device_results,
                                                                                 tmp_path_factory):
    from hypothesis import event

    from tests.test_device_result import (OUR_TAGS, _assert_safe_output, _at, _mutate, _mutations, _paths,
                                          _raw_controls)
    from tlx.bundle.result import ResultError, read_result

    _, first, _ = device_results
    doc = json.loads(first.read_text())
    genuine = _row_figures(read_result(first))
    work = tmp_path_factory.mktemp("mutated-result")
    report = sweep_dir / "report.html"
    paths = list(_paths(doc))
    texts = [p for p in paths if isinstance(_at(doc, p), str)]
    numbers = [p for p in paths if isinstance(_at(doc, p), (int, float)) and not isinstance(_at(doc, p), bool)]

    @settings(max_examples=int(os.environ.get("TLX_BUNDLE_EXAMPLES", "60")), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(data=st.data())
    def check(data):
        path = data.draw(st.sampled_from(texts) | st.sampled_from(numbers) | st.sampled_from(paths))
        kind, value = data.draw(_mutations)
        device = work / "mutated.json"
        device.write_text(_mutate(doc, path, kind, value), encoding="utf-8", errors="surrogatepass")
        report.unlink(missing_ok=True)
        result = runner.invoke(app, ["report", str(sweep_dir), "--device", str(device)])
        _assert_safe_output(result)
        assert result.exception is None or isinstance(result.exception, SystemExit), (path, result.exception)
        if result.exit_code != 0:
            event("refused")
            assert result.exit_code == 1 and "Error: " in result.output and "Traceback" not in result.output
            assert not report.exists(), "no report from a refused result"
            return
        event("accepted")
        try:
            parsed = read_result(device)
        except ResultError as exc:  # pragma: no cover - the report read the same file
            raise AssertionError(exc) from None
        assert _row_figures(parsed) == genuine, (path, kind, value)
        page = report.read_text()
        tags = {tag.lower().lstrip("/") for tag in re.findall(r"<(/?[^\s>/]*)", page)}
        assert tags <= OUR_TAGS | {"h3"}, tags - OUR_TAGS
        assert not _raw_controls(page.replace(page[page.index("<style>"):page.index("</style>")], ""))

    check()
