"""Fuzz: mutated model files through the loader in a child process. Zero crashes.

Every mutant must end in a successful load or a TlxError with a message; a signal death
(segfault, abort) or any other Python exception fails the test. The counts are printed
(pytest -s) so a run shows how many mutants the validator caught before the interpreter.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.runtime import models_folder

#: Mutants per seed model. Loading a tiny model takes milliseconds.
MUTANTS = 150

_WORKER = r"""
import sys, json
import numpy as np
from tlx.errors import TlxError
from tlx.runtime import Classifier, ModelError
for line in sys.stdin:
    path = line.strip()
    print("START " + path, flush=True)
    try:
        clf = Classifier.from_file(path, num_threads=1, backend=sys.argv[1] or None)
        clf.run(np.zeros(clf.input_size + (3,), np.uint8))
        outcome = "ok"
    except ModelError as e:
        outcome = "model_error"
    except TlxError as e:
        outcome = "interpreter_error"
    except Exception as e:
        outcome = "exception " + type(e).__name__ + ": " + str(e)[:200].replace("\n", " ")
    print("RESULT " + json.dumps([path, outcome]), flush=True)
"""


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    buf = bytearray(data)
    kind = rng.choice(["truncate", "flip", "word", "header_word", "zero_run"],
                      p=[0.2, 0.25, 0.3, 0.15, 0.1])
    if kind == "truncate":
        return kind, bytes(buf[: int(rng.integers(0, len(buf)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(0, len(buf)))] ^= 1 << int(rng.integers(0, 8))
        return kind, bytes(buf)
    if kind == "zero_run":
        start = int(rng.integers(0, len(buf)))
        length = int(rng.integers(1, 64))
        buf[start:start + length] = bytes(min(length, len(buf) - start))
        return kind, bytes(buf)
    limit = len(buf) // 4 if kind == "header_word" else len(buf)
    pos = int(rng.integers(0, max(limit // 4, 1))) * 4
    value = int(rng.choice([0, 1, 2, 3, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, len(buf),
                            len(buf) - 4, int(rng.integers(0, 2**32)), 1000, 65536]))
    buf[pos:pos + 4] = value.to_bytes(4, "little")
    return kind, bytes(buf)


def run_loader(paths: list[Path], backend: str = "", python: str = sys.executable) -> dict[str, str]:
    """path -> outcome, restarting the worker after a crash; a crash is 'crash <signal>'."""
    outcomes: dict[str, str] = {}
    todo = [str(p) for p in paths]
    while todo:
        proc = subprocess.run([python, "-c", _WORKER, backend], input="\n".join(todo) + "\n",
                              capture_output=True, text=True, timeout=600)
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = line[6:]
            elif line.startswith("RESULT "):
                path, outcome = json.loads(line[7:])
                outcomes[path] = outcome
        if proc.returncode != 0:
            culprit = started if started not in outcomes else None
            if culprit is None:  # died outside a load: report it rather than loop
                pytest.fail(f"loader worker exited {proc.returncode}: {proc.stderr[-2000:]}")
            outcomes[culprit] = f"crash {proc.returncode}"
        todo = [p for p in todo if p not in outcomes]
    return outcomes


@pytest.fixture(scope="module")
def models(request) -> Path:
    return models_folder(request)


def _fuzz(models, tmp_path, seed_model, backend="", python=sys.executable):
    rng = np.random.default_rng({"int8": 1, "float32_nometa": 2}[seed_model])
    data = (models / f"{seed_model}.tflite").read_bytes()
    paths, kinds = [], {}
    for i in range(MUTANTS):
        kind, mutant = mutate(data, rng)
        path = tmp_path / f"m{i:03d}.tflite"
        path.write_bytes(mutant)
        paths.append(path)
        kinds[str(path)] = kind
    outcomes = run_loader(paths, backend, python)
    summary = collections.Counter(o.split(" ")[0] for o in outcomes.values())
    print(f"\n{seed_model} ({backend or 'auto'}): {MUTANTS} mutants -> {dict(summary)}")
    bad = {Path(p).name: (kinds[p], o) for p, o in outcomes.items()
           if o.startswith(("crash", "exception"))}
    assert not bad, f"{len(bad)} mutants crashed or raised: {bad}"
    assert len(outcomes) == MUTANTS
    assert summary["model_error"] > MUTANTS // 4  # the validator does real work


@pytest.mark.parametrize("seed_model", ["int8", "float32_nometa"])
def test_mutated_models_never_crash(models, tmp_path, seed_model):
    _fuzz(models, tmp_path, seed_model)


@pytest.mark.venv
@pytest.mark.parametrize("seed_model", ["int8", "float32_nometa"])
def test_mutated_models_never_crash_tflite_runtime(models, tmp_path, seed_model):
    """tflite-runtime 2.14 does not verify the FlatBuffer: without tlx's validator about a
    third of these mutants segfault it (benchmarks/results/runtime.md). With it: none."""
    from tests.test_runtime_venv import ensure_venv
    venv = ensure_venv("runtime-tflite", "tflite")
    _fuzz(models, tmp_path, seed_model, "tflite-runtime", str(venv / "bin" / "python"))


def test_isolated_probe_survives_a_crashing_child(tmp_path):
    """probe_model turns a child's signal death into an outcome, not a dead caller."""
    from tlx.runtime.classifier import probe_model
    import tlx.runtime.classifier as classifier

    script = tmp_path / "boom.py"
    script.write_text("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)\n")
    original = classifier._PROBE
    try:
        classifier._PROBE = script.read_text()
        result = probe_model(tmp_path / "any.tflite")
    finally:
        classifier._PROBE = original
    assert result.outcome == "crash" and "SIGSEGV" in result.message
