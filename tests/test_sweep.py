"""tlx sweep: candidates on one split, a failing candidate recorded, resume after Ctrl-C,
shards + --collect equal to one sweep, bad input, the Pareto front and the pick (properties),
and the typed schema of the sweep's files (hostile input). Tiny test backbone throughout."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import make_image_folder
from tests.support.trainer import TINY, TINY_SPEC
from tlx.cli import app
from tlx.errors import TlxError
from tlx.sweep import records
from tlx.sweep.pareto import Budgets, ModelPoint, dominates, pareto_front, recommend
from tlx.sweep.plan import Shard, _write_once
from tlx.trainer import backbones

runner = CliRunner()
BROKEN = "broken_test"


def _build_broken(input_shape, weights):
    raise ValueError("this backbone cannot be built (test)")


BROKEN_SPEC = backbones.BackboneSpec(
    build=_build_broken, normalization=TINY_SPEC.normalization, default_image_size=32,
    default_fine_tune_at=1, weights_source="none (test only)", weights_status=lambda: "offline")

#: The training options of every test sweep: tiny, 1 + 1 epochs.
TRAINING = ["--weights", "none", "--phase1-epochs", "1", "--phase2-epochs", "1", "--batch-size", "8",
            "--learning-rate", "0.01", "--validation-fraction", "0.5", "--test-fraction", "0.5",
            "--bench-runs", "3", "--bench-warmup", "1"]


@pytest.fixture(scope="module", autouse=True)
def _test_backbones():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(backbones.BACKBONES, TINY, TINY_SPEC)
        mp.setitem(backbones.BACKBONES, BROKEN, BROKEN_SPEC)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("sweep-data") / "data",
                             classes=("red", "green", "blue"), per_class=12)


def _sweep_args(data, out, *extra, backbones_=f"{BROKEN},{TINY}", sizes="32,40"):
    return ["sweep", str(data), "--out", str(out), "--backbones", backbones_, "--image-sizes", sizes,
            *TRAINING, *extra]


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture(scope="module")
def full_sweep(data, tmp_path_factory):
    """Both backbones (the broken one first) x 32, 40 px, unsharded."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    result = runner.invoke(app, _sweep_args(data, out, "--json"))
    return out, _json(result), result.output


def _lists(split: dict) -> dict:
    return {name: split[name] for name in ("classes", "train", "validation", "test")}


def test_every_candidate_is_listed_and_a_failure_does_not_stop_the_sweep(full_sweep):
    out, summary, output = full_sweep
    assert [(c["backbone"], c["image_size"], c["run"], c["status"]) for c in summary["candidates"]] == [
        (BROKEN, 32, f"{BROKEN}-32", "failed"), (BROKEN, 40, f"{BROKEN}-40", "failed"),
        (TINY, 32, f"{TINY}-32", "done"), (TINY, 40, f"{TINY}-40", "done")]
    for failed in summary["candidates"][:2]:
        assert "this backbone cannot be built (test)" in failed["error"] and failed["models"] == []
    for done in summary["candidates"][2:]:
        assert [m["format"] for m in done["models"]] == ["float32", "int8"]
        for model in done["models"]:
            assert 0 <= model["accuracy"] <= 1 and model["latency_ms"] > 0
            assert model["size_bytes"] == (out / done["run"] / "export" / f"model_{model['format']}.tflite").stat().st_size
    # A progress line per candidate.
    assert output.count("FAILED: ValueError: this backbone cannot be built (test)") == 2
    assert f"[4/4] {TINY} 40 px: done" in output
    assert json.loads((out / "sweep.json").read_text()) == summary
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_candidate_trains_and_is_tested_on_the_one_split(full_sweep):
    out, summary, _ = full_sweep
    shared = json.loads((out / "split.json").read_text())
    for size in (32, 40):
        split = json.loads((out / f"{TINY}-{size}" / "split.json").read_text())
        assert _lists(split) == _lists(shared) and split["image_size"] == [size, size]
        bench = json.loads((out / f"{TINY}-{size}" / "bench" / "bench.json").read_text())
        assert bench["n_test"] == len(shared["test"])


def test_pareto_front_and_pick_are_consistent_with_the_table(full_sweep):
    _, summary, _ = full_sweep
    points = [ModelPoint(f"{c['run']}/{m['format']}", m["accuracy"], m["latency_ms"], m["size_bytes"])
              for c in summary["candidates"] for m in c["models"]]
    assert summary["pareto"] == [p.id for p in pareto_front(points)]
    assert summary["recommended"]["model"] in summary["pareto"]
    assert records.read_sweep(summary_path(full_sweep)).recommended == summary["recommended"]["model"]


def summary_path(full_sweep):
    return full_sweep[0] / "sweep.json"


def test_budgets_choose_the_pick_with_the_reason(full_sweep, data):
    out, summary, _ = full_sweep
    smallest = min(m["size_bytes"] for c in summary["candidates"] for m in c["models"])
    result = runner.invoke(app, ["sweep", str(out), "--collect", "--max-size-mb", str(smallest / 1e6), "--json"])
    picked = _json(result)["recommended"]
    run, fmt = picked["model"].split("/")
    sizes = {f"{c['run']}/{m['format']}": m["size_bytes"] for c in summary["candidates"] for m in c["models"]}
    assert sizes[picked["model"]] == smallest and "within size <=" in picked["reason"]
    none = _json(runner.invoke(app, ["sweep", str(out), "--collect", "--max-latency-ms", "0", "--json"]))
    assert none["recommended"]["model"] is None and "no model meets every budget" in none["recommended"]["reason"]


def test_running_again_keeps_finished_candidates(full_sweep, data):
    out, summary, _ = full_sweep
    bench = out / f"{TINY}-32" / "bench" / "bench.json"
    before = bench.stat().st_mtime_ns
    result = runner.invoke(app, _sweep_args(data, out, "--json"))
    again = _json(result)
    assert result.output.count("already done (trained, exported and benched; hashes match)") == 2
    assert bench.stat().st_mtime_ns == before
    # The done records are kept as they were; the failed ones were tried again (and failed).
    assert again["candidates"][2:] == summary["candidates"][2:]
    assert [c["status"] for c in again["candidates"][:2]] == ["failed", "failed"]
    # A run whose export is gone is completed again, without training again.
    model = out / f"{TINY}-40" / "model.keras"
    trained = model.stat().st_mtime_ns
    shutil.rmtree(out / f"{TINY}-40" / "export")
    result = runner.invoke(app, _sweep_args(data, out, "--json"))
    assert _json(result)["candidates"][3]["status"] == "done"
    assert "trained already" in result.output and model.stat().st_mtime_ns == trained


def test_other_options_in_the_same_sweep_folder_are_refused(full_sweep, data):
    out, _, _ = full_sweep
    result = runner.invoke(app, _sweep_args(data, out, "--seed", "7"))
    assert result.exit_code == 1 and "--seed" in result.output and "other options" in result.output
    assert "Traceback" not in result.output


def test_shards_then_collect_equal_one_sweep(full_sweep, data, tmp_path):
    _, summary, _ = full_sweep
    out = tmp_path / "sharded"
    first = runner.invoke(app, _sweep_args(data, out, "--shard", "1/2"))
    assert first.exit_code == 0, first.output
    assert "Shard 1/2: 2 of 4 candidates" in first.output and not (out / "sweep.json").exists()
    shard_json = json.loads((out / "candidates" / f"{BROKEN}-32.json").read_text())
    assert shard_json["status"] == "failed"
    # Collecting before every shard finished lists the rest as pending.
    partial = _json(runner.invoke(app, ["sweep", str(out), "--collect", "--json"]))
    assert [c["status"] for c in partial["candidates"]] == ["failed", "pending", "done", "pending"]
    second = _json(runner.invoke(app, _sweep_args(data, out, "--shard", "2/2", "--json")))
    assert second["shard"] == "2/2"
    assert [c["run"] for c in second["candidates"]] == [f"{BROKEN}-40", f"{TINY}-40"]
    collected = _json(runner.invoke(app, ["sweep", str(out), "--collect", "--json"]))

    def shape(s):
        return [(c["backbone"], c["image_size"], c["run"], c["status"], [m["format"] for m in c["models"]])
                for c in s["candidates"]]

    assert shape(collected) == shape(summary)
    assert _lists(json.loads((out / "split.json").read_text())) == \
        _lists(json.loads((full_sweep[0] / "split.json").read_text()))


def test_an_interrupted_candidate_resumes_from_its_last_epoch(data, tmp_path):
    import keras

    from tlx.sweep.plan import SweepConfig
    from tlx.sweep.run import run_sweep, training_state
    from tlx.run_dir import RunDir
    from tlx.run_config import TrainConfig

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    out = tmp_path / "sweep"
    training = TrainConfig(data_dir=data, out=out, weights="none", phase1_epochs=2, phase2_epochs=1,
                           batch_size=8, learning_rate=0.01, validation_fraction=0.5, test_fraction=0.5)
    config = SweepConfig(data_dir=data, out=out, backbones=(TINY,), image_sizes=(32,), training=training,
                         bench_runs=3, bench_warmup=1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, log=lambda _: None, callbacks=[StopAfterFirstEpoch()])
    run = RunDir(out / f"{TINY}-32")
    assert training_state(run) == "interrupted" and not (out / "candidates" / f"{TINY}-32.json").exists()

    result = runner.invoke(app, _sweep_args(data, out, "--phase1-epochs", "2", "--json",
                                            backbones_=TINY, sizes="32"))
    summary = _json(result)
    assert "Resuming" in result.output and "after epoch 1" in result.output
    assert summary["candidates"][0]["status"] == "done"
    history = json.loads(run.history.read_text())
    assert len(history["phase1"]["loss"]) == 2 and len(history["phase2"]["loss"]) == 1


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--backbones", "nope"], "Choose one of: "),
    (["--shard", "3/2"], "I must be from 1 to N"),
    (["--shard", "0/0"], "I must be from 1 to N"),
    (["--shard", "one/two"], "write I/N"),
    (["--image-sizes", "32,5000"], "from 32 to 1024 pixels"),  # 32: as `tlx train --image-size`
    (["--image-sizes", "4"], "from 32 to 1024 pixels"),
    (["--image-sizes", "32,32"], "more than once"),
    (["--image-sizes", "96,big"], "whole pixel sizes"),
    (["--strategy", "multi-worker"], "--shard I/N instead"),
    (["--weights", "missing.weights.h5"], "no such file"),
    (["--cache-features"], "--no-augment"),
])
def test_bad_options_are_refused_before_any_work(data, tmp_path, extra, message):
    out = tmp_path / "sweep"
    result = runner.invoke(app, [*_sweep_args(data, out), *extra])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_unknown_backbone_lists_the_registry(data, tmp_path):
    result = runner.invoke(app, _sweep_args(data, tmp_path / "s", backbones_="efficientnet_lite0,nope"))
    assert result.exit_code == 1
    assert "Unknown backbone 'nope'" in result.output and "efficientnet_lite0, efficientnet_lite1" in result.output and "mobilenet_v2" in result.output


def test_sweep_dir_that_is_a_file(data, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    result = runner.invoke(app, _sweep_args(data, target))
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    collect = runner.invoke(app, ["sweep", str(target), "--collect"])
    assert collect.exit_code != 0 and "is a file" in collect.output
    assert target.read_text() == "not a folder"


def test_a_data_folder_without_classes_leaves_no_sweep_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "sweep"
    result = runner.invoke(app, _sweep_args(empty, out, backbones_=TINY, sizes="32"))
    assert result.exit_code == 1 and "no class folders" in result.output and not out.exists()


def test_collect_needs_a_sweep_and_only_budgets(tmp_path, data):
    result = runner.invoke(app, ["sweep", str(tmp_path), "--collect"])
    assert result.exit_code == 1 and "holds no sweep" in result.output
    result = runner.invoke(app, ["sweep", str(tmp_path), "--collect", "--seed", "3"])
    assert result.exit_code != 0 and "--seed" in result.output


def test_a_damaged_candidate_record_names_the_file(full_sweep, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_sweep[0], out)
    record = out / "candidates" / f"{TINY}-32.json"
    obj = json.loads(record.read_text())
    obj["models"][0]["accuracy"] = 7
    record.write_text(json.dumps(obj))
    result = runner.invoke(app, ["sweep", str(out), "--collect"])
    assert result.exit_code == 1 and f"{TINY}-32.json" in result.output and "accuracy" in result.output


def test_a_run_changed_after_its_bench_counts_as_pending(full_sweep, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_sweep[0], out)
    (out / f"{TINY}-40" / "bench" / "bench.json").unlink()
    collected = _json(runner.invoke(app, ["sweep", str(out), "--collect", "--json"]))
    assert [c["status"] for c in collected["candidates"]][3] == "pending"
    assert all(not p.startswith(f"{TINY}-40/") for p in collected["pareto"])


def test_the_split_and_plan_are_written_once(tmp_path):
    path = tmp_path / "plan.json"
    _write_once(path, {"a": 1})
    _write_once(path, {"a": 2})  # a second shard with another content does not replace it
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_shard_slices_cover_every_candidate_once():
    for count in range(1, 6):
        owners = [[i for i in range(1, count + 1) if Shard(i, count).owns(k)] for k in range(11)]
        assert all(len(o) == 1 for o in owners)


# -- the Pareto front and the pick (properties) ------------------------------------------

_points = st.lists(st.builds(
    ModelPoint, id=st.uuids().map(str),
    accuracy=st.integers(0, 20).map(lambda v: v / 20),
    latency_ms=st.integers(1, 30).map(float),
    size_bytes=st.integers(1, 30).map(lambda v: v * 100_000)), min_size=0, max_size=25)
_budgets = st.builds(Budgets,
                     max_latency_ms=st.none() | st.integers(0, 31).map(float),
                     max_size_mb=st.none() | st.integers(0, 31).map(lambda v: v / 10),
                     min_accuracy=st.none() | st.integers(0, 20).map(lambda v: v / 20))


@settings(max_examples=300, deadline=None)
@given(_points, _budgets)
def test_the_pick_is_never_beaten_on_all_three_axes(points, budgets):
    pick, reason = recommend(points, budgets)
    within = [p for p in points if not budgets.problems(p)]
    assert (pick is None) == (not within) and reason
    if pick is not None:
        assert not budgets.problems(pick)
        assert not any(dominates(other, pick) for other in points)
        assert pick in pareto_front(points)
        assert pick.accuracy == max(p.accuracy for p in within)


@settings(max_examples=300, deadline=None)
@given(_points)
def test_the_front_is_exactly_the_undominated_models(points):
    front = pareto_front(points)
    for p in points:
        assert (p in front) == (not any(dominates(q, p) for q in points))
    for p in points:
        if p not in front:
            assert any(dominates(q, p) for q in front)


# -- the schema of the sweep's files (hostile input) --------------------------------------

def _containers(children):
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    _containers, max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_any_json_is_a_valid_record_or_a_named_problem(value):
    for parse in (records.parse_candidate, records.parse_sweep):
        try:
            parse(value)
        except records._Bad:
            pass


def _valid_candidate() -> dict:
    return {"backbone": TINY, "image_size": 32, "run": f"{TINY}-32", "status": "done", "error": None,
            "seconds": 1.0, "models": [{"format": "int8", "accuracy": 0.5, "latency_ms": 1.0, "size_bytes": 10}]}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["backbone", "image_size", "run", "status", "models", "seconds"]), _json_values)
def test_a_changed_field_is_parsed_or_refused(key, value):
    obj = _valid_candidate()
    obj[key] = value
    try:
        record = records.parse_candidate(obj)
    except records._Bad:
        return
    assert record.run == records.run_name(record.backbone, record.image_size)
    assert all(0 <= m.accuracy <= 1 and math.isfinite(m.latency_ms) for m in record.models)


@pytest.mark.parametrize("change, message", [
    (lambda o: o.update(run="../../etc-32"), "run"),
    (lambda o: o["models"][0].update(latency_ms=float("inf")), "latency_ms"),
    (lambda o: o["models"].append(dict(o["models"][0])), "format twice"),
    (lambda o: o.update(status="failed"), "failed with 1 models"),
])
def test_hand_picked_bad_records(change, message):
    obj = _valid_candidate()
    change(obj)
    with pytest.raises(records._Bad, match=message):
        records.parse_candidate(obj)


def test_oversized_and_non_json_files_are_refused(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (records.MAX_CANDIDATE_BYTES + 1))
    with pytest.raises(TlxError, match="larger than"):
        records.read_candidate(big)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff{")
    with pytest.raises(TlxError, match="not valid JSON"):
        records.read_candidate(bad)
    deep = tmp_path / "deep.json"  # deeper than the parser's recursion: a message, not a traceback
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TlxError, match="not valid JSON"):
        records.read_candidate(deep)


def test_a_candidate_another_process_holds_is_skipped_not_redone(data, tmp_path):
    from tlx import files

    out = tmp_path / "sweep"
    held = out / f"{TINY}-32"
    held.mkdir(parents=True)
    with files.exclusive(held, "test"):
        result = runner.invoke(app, _sweep_args(data, out, "--json", backbones_=TINY, sizes="32"))
    summary = _json(result)
    assert "another process is working on it; skipped here" in result.output
    assert summary["candidates"][0]["status"] == "pending" and not (out / "candidates").exists()
    assert list(held.iterdir()) == []


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(["format", "candidates", "pareto", "recommended", "budgets", "data_dir", "date"]),
       value=_json_values)
def test_a_changed_sweep_json_is_parsed_or_refused(full_sweep, key, value):
    obj = json.loads((full_sweep[0] / "sweep.json").read_text())
    obj[key] = value
    try:
        record = records.parse_sweep(obj)
    except records._Bad:
        return
    assert record.recommended is None or record.recommended in record.pareto
    models = {f"{c.run}/{m.format}" for c in record.candidates for m in c.models}
    assert set(record.pareto) <= models
