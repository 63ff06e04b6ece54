"""A sweep on the device: `tlx bundle SWEEP_DIR` packs every candidate's models with the test
photos once, `tlx bench` of it measures every model one interpreter at a time, `tlx report
SWEEP_DIR --device` draws accuracy against device latency with the Pareto front per device;
crafted or mixed-up sweep bundles and results of another sweep are refused. Tiny backbone."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import make_image_folder
from tests.test_sweep import TRAINING
from tests.trainer_support import TINY, TINY_SPEC
from tlx.bundle.archive import open_bundle
from tlx.bundle.device import DeviceBenchConfig, bench_bundle, write_result
from tlx.bundle.manifest import BundleError
from tlx.cli import app
from tlx.errors import TlxError
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
    result = bench_bundle(DeviceBenchConfig(bundle=sweep_bundle, threads=(1,), runs=3, warmup=1,
                                            backends=("litert",), cold_start=False))
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
