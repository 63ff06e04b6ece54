"""The package's import boundaries, in one place: what the device side may import.

Each module is imported in a fresh interpreter (sys.modules of this test process already
holds TensorFlow). A venv without TensorFlow at all is tests/test_runtime_venv.py."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import tlx.runtime
from tests.conftest import REPO

HEAVY = ("tensorflow", "keras", "torch", "matplotlib")

#: What runs on a Raspberry Pi without TensorFlow, or at `tlx` start-up.
LIGHT_MODULES = (
    "tlx", "tlx.cli", "tlx.errors", "tlx.files", "tlx.text", "tlx.progress", "tlx.imaging",
    "tlx.machine", "tlx.run_dir", "tlx.run_config", "tlx.pixels.cache", "tlx.inspect", "tlx.metadata_codec", "tlx.drop",
    "tlx.export.formats", "tlx.stats", "tlx.bundle.archive", "tlx.bundle.device",
    "tlx.bundle.compare", "tlx.bench.rows",
    *(f"tlx.runtime.{m.name}" for m in pkgutil.iter_modules(tlx.runtime.__path__)),
)


def _imported_after(module: str) -> list[str]:
    code = (f"import json, sys, {module}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_module_imports_nothing_heavy(module):
    assert _imported_after(module) == []


#: Shared infrastructure and the device side: nothing of the trainer package.
BELOW_THE_TRAINER = ("tlx.run_dir", "tlx.run_config", "tlx.pixels.cache", "tlx.pixels.parallel_decode",
                     "tlx.bench.bench", "tlx.bench.evaluate", "tlx.bench.rows", "tlx.bundle.make", "tlx.bundle.device",
                     "tlx.export.parity", "tlx.runtime")


@pytest.mark.parametrize("module", BELOW_THE_TRAINER)
def test_shared_layers_import_nothing_from_the_trainer(module):
    code = (f"import json, sys, {module}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tlx.trainer'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("command", ["train", "export", "bench", "bundle", "predict", "inspect",
                                     "report", "demo", "backbones", "sweep"])
def test_help_of_every_command_imports_nothing_heavy(command):
    code = ("import json, sys\nimport tlx.cli\n"
            f"try:\n    tlx.cli.app([{command!r}, '--help'], prog_name='tlx')\n"
            "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == []
