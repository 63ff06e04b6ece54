"""Latency of the interpreter, and cold start and peak memory of a whole process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from tlx.stats import Latency, latency_from_seconds


def interpreter_latency(classifier, pixels, runs: int, warmup: int) -> Latency:
    """Milliseconds per `Classifier.run` on one preprocessed image (tlx.runtime.batch.time_runs)."""
    from tlx.runtime.batch import time_runs

    return latency_from_seconds(time_runs(classifier, pixels, runs, warmup))


@dataclass(frozen=True)
class ProcessCost:
    """A fresh process: seconds from start to its first line of output, and peak RSS."""

    first_output_s: float
    peak_rss_mb: float
    returncode: int

    def to_json(self) -> dict:
        return {"first_output_s": self.first_output_s, "peak_rss_mb": self.peak_rss_mb}


# Linux charges a child's peak RSS with the memory of the process it was forked from
# (the high-water mark survives exec). Forked straight from a bench process that holds
# TensorFlow, `tlx predict` would look 800 MB big. So a small fresh Python forks the
# measured command and reports its peak on stderr.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\n{MARKER}={usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
_MARKER = "TLX_PEAK_RSS_KB"


def process_cost(argv: list[str], timeout: float = 300.0) -> ProcessCost:
    """Run `argv`, time it to its first stdout line, and read its peak RSS (wait4)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    launcher = _LAUNCHER.replace("{MARKER}", _MARKER)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", launcher, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    first_line = proc.stdout.readline()
    first = time.perf_counter() - start
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    peak_kb = next((float(line.split("=", 1)[1]) for line in reversed(stderr.splitlines())
                    if line.startswith(_MARKER + "=")), float("nan"))
    return ProcessCost(first if first_line else float("nan"), peak_kb / 1024.0, proc.returncode)


def predict_cold_start(model_path, image_path, backend: str | None) -> ProcessCost:
    """`tlx predict MODEL IMAGE` in a new process: what a device user waits for."""
    argv = [sys.executable, "-m", "tlx", "predict", str(model_path), str(image_path), "--top-k", "1",
            "--threads", "1"]
    if backend:
        argv += ["--backend", backend]
    return process_cost(argv)


KERAS_COLD_START = (
    "import sys, numpy as np\n"
    "from tlx.imaging import load_image\n"
    "from tlx.export.inference import build_inference_model, load_trained_model\n"
    "trained = load_trained_model(sys.argv[1])\n"
    "model = build_inference_model(trained, int(sys.argv[3]))\n"
    "pixels = load_image(sys.argv[2], tuple(model.input_shape[1:3]))[None].astype('float32')\n"
    "print(int(np.argmax(model(pixels, training=False)[0])), flush=True)\n"
)


def keras_cold_start(model_path, image_path, num_labels: int) -> ProcessCost:
    """The same job with TensorFlow and the .keras file, for comparison."""
    return process_cost([sys.executable, "-c", KERAS_COLD_START, str(model_path), str(image_path),
                         str(num_labels)])
