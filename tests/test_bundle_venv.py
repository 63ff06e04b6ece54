"""`tlx bench BUNDLE` where it runs on a device: a venv with the base install and one backend,
no TensorFlow, through the `tlx` console script (the venvs of tests/test_runtime_venv.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tests.test_runtime_venv import RUNTIME_VENVS, ensure_venv
from tests.test_sweep_bundle import SIZES, TINY, _tiny_backbone, sweep_bundle, sweep_dir  # noqa: F401

pytestmark = pytest.mark.venv


@pytest.fixture(scope="module")
def bundle(exported_run, tmp_path_factory):  # noqa: F811
    from tlx.bundle.make import BundleConfig, make_bundle

    return make_bundle(BundleConfig(run_dir=exported_run, out=tmp_path_factory.mktemp("b") / "b.zip")).path


@pytest.mark.parametrize("venv", list(RUNTIME_VENVS))
def test_bench_bundle_without_tensorflow(venv, bundle, tmp_path):
    extra, backend = RUNTIME_VENVS[venv]
    folder = ensure_venv(venv, extra)
    proc = subprocess.run([str(folder / "bin" / "tlx"), "bench", str(bundle), "--threads", "1", "--runs", "3",
                           "--warmup", "1", "--out", str(tmp_path / "device"), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    rows = {m["name"]: m for m in result["models"]}
    assert {m["backend"] for m in result["models"]} == {backend}
    for m in rows.values():
        assert m["accuracy"]["n"] == result["n_images"] and not m["failures"]
        assert m["cold_start"]["peak_rss_mb"] > 0
    # The same x86 kernels as the host's run of the same file: identical outputs
    # (tflite-runtime's int8 against the host's litert-builtin, the same builtin kernels).
    int8 = rows["int8"]["host"]
    assert int8["identical"] == int8["n"] and int8["max_steps"] == 0, int8
    assert (tmp_path / "device.md").is_file()


@pytest.mark.parametrize("venv", list(RUNTIME_VENVS)[:1])
def test_bench_sweep_bundle_without_tensorflow(venv, sweep_bundle, tmp_path):  # noqa: F811
    """A sweep's bundle on the device: every candidate's models, each row naming its candidate."""
    extra, backend = RUNTIME_VENVS[venv]
    folder = ensure_venv(venv, extra)
    proc = subprocess.run([str(folder / "bin" / "tlx"), "bench", str(sweep_bundle), "--threads", "1", "--runs",
                           "3", "--warmup", "1", "--no-cold-start", "--out", str(tmp_path / "device"), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["bundle"]["sweep"] and result["reference"] is None
    assert sorted({(m["candidate"]["run"]["name"], m["name"]) for m in result["models"]}) == sorted(
        (f"{TINY}-{size}", fmt) for size in SIZES for fmt in ("float32", "int8"))
    for m in result["models"]:
        assert m["backend"] == backend and m["accuracy"]["n"] == result["n_images"] and not m["failures"]
