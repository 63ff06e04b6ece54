"""The runtime in virtual environments that hold only the base install and ONE backend.

Proves that classification works without TensorFlow installed and that TensorFlow is never
imported, and that each backend gives the main venv's results (int8: identical; float:
within float rounding). The venvs live in .venvs/<name> (git-ignored), are built on first
use (about a minute each, from PyPI) and rebuilt when pyproject.toml changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.runtime import REPO, colour_image, models_folder

pytestmark = pytest.mark.venv

VENVS = REPO / ".venvs"

#: venv name -> (install extra, backend the runtime should pick automatically)
RUNTIME_VENVS = {
    "runtime-litert": ("runtime", "litert"),
    "runtime-tflite": ("tflite", "tflite-runtime"),
}

_SCRIPT = r"""
import json, sys
from tlx.runtime import Classifier
out = {}
for model in sys.argv[2:]:
    clf = Classifier.from_file(model, num_threads=1)
    out[model] = {"backend": clf.backend, "results": [
        {"path": r.path, "scores": [[p.index, p.label, p.score] for p in r.predictions]}
        for r in clf.classify_files([sys.argv[1]], top_k=None)]}
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
assert not bad, bad
try:
    import tensorflow  # noqa: F401
    out["tensorflow_installed"] = True
except ImportError:
    out["tensorflow_installed"] = False
print(json.dumps(out))
"""


def ensure_venv(name: str, extra: str) -> Path:
    """.venvs/<name> with `pip install -e REPO[extra]`, rebuilt when pyproject.toml changes."""
    VENVS.mkdir(exist_ok=True)
    folder = VENVS / name
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + extra.encode()).hexdigest()
    stamp = folder / ".tlx-key"
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == key:
            return folder
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        proc = subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", "-e", f"{REPO}[{extra}]"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"building venv {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        stamp.write_text(key)
    return folder


@pytest.fixture(scope="module")
def models(request) -> Path:
    return models_folder(request)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("venv_images")
    for name, rgb in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))):
        colour_image(rgb, size=(120, 160)).save(folder / f"{name}.jpg", quality=90)
    colour_image((128, 128, 128)).save(folder / "grey.png")
    return folder


def _run(python: Path, images: Path, model_paths: list[Path]) -> dict:
    proc = subprocess.run([str(python), "-c", _SCRIPT, str(images), *map(str, model_paths)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


MODEL_NAMES = ("int8", "int8_int8io", "int8_floatout", "float32", "int8_nometa")


@pytest.mark.parametrize("venv", list(RUNTIME_VENVS))
def test_runtime_without_tensorflow(venv, models, images):
    extra, expected_backend = RUNTIME_VENVS[venv]
    folder = ensure_venv(venv, extra)
    paths = [models / f"{n}.tflite" for n in MODEL_NAMES]
    there = _run(folder / "bin" / "python", images, paths)
    here = _run(Path(sys.executable), images, paths)  # main venv: litert, TF installed
    assert there.pop("tensorflow_installed") is False
    assert here.pop("tensorflow_installed") is True
    for name, path in zip(MODEL_NAMES, map(str, paths)):
        assert there[path]["backend"] == expected_backend
        a, b = there[path]["results"], here[path]["results"]
        assert [r["path"] for r in a] == [r["path"] for r in b]
        for ra, rb in zip(a, b):
            if name.startswith("int8") and name != "int8_floatout":
                assert ra["scores"] == rb["scores"], (name, ra["path"])  # bit-identical
            else:
                assert [s[:2] for s in ra["scores"]] == [s[:2] for s in rb["scores"]]
                for sa, sb in zip(ra["scores"], rb["scores"]):
                    assert abs(sa[2] - sb[2]) < 1e-5, (name, ra["path"])
    red = there[str(models / "int8.tflite")]["results"]
    assert {Path(r["path"]).stem: r["scores"][0][1] for r in red}["red"] == "red"


@pytest.mark.parametrize("venv", list(RUNTIME_VENVS))
def test_predict_command_without_tensorflow(venv, models, images):
    extra, expected_backend = RUNTIME_VENVS[venv]
    folder = ensure_venv(venv, extra)
    proc = subprocess.run([str(folder / "bin" / "tlx"), "predict", str(models / "int8.tflite"),
                           str(images), "--json", "--top-k", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["backend"] == expected_backend
    top = {Path(r["path"]).stem: r["predictions"][0]["label"] for r in doc["results"]}
    assert top["red"] == "red" and top["green"] == "green" and top["blue"] == "blue"
    # Asking for TensorFlow where it is not installed: a message with the pip command.
    proc = subprocess.run([str(folder / "bin" / "tlx"), "predict", str(models / "int8.tflite"),
                           str(images), "--backend", "tensorflow"], capture_output=True, text=True)
    assert proc.returncode == 1 and "pip install" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("venv", list(RUNTIME_VENVS))
def test_streams_without_opencv(venv, models, tmp_path):
    """Without the 'camera' extra: any iterable of frames still streams, and a video names
    the extra to install."""
    extra, _ = RUNTIME_VENVS[venv]
    folder = ensure_venv(venv, extra)
    code = ("import sys, numpy as np\n"
            "from tlx.runtime import Classifier\n"
            "clf = Classifier.from_file(sys.argv[1], num_threads=1)\n"
            "frames = [np.full((24, 32, 3), c, np.uint8) for c in ((220, 20, 20), (20, 20, 220))]\n"
            "print([r.predictions[0].label for r in clf.classify_stream(frames)])\n"
            "assert 'cv2' not in sys.modules\n")
    proc = subprocess.run([str(folder / "bin" / "python"), "-c", code, str(models / "int8.tflite")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "['red', 'blue']"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    proc = subprocess.run([str(folder / "bin" / "tlx"), "predict", str(models / "int8.tflite"), str(clip)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "pip install 'tlx-edge[camera]'" in proc.stderr
    assert "Traceback" not in proc.stderr
