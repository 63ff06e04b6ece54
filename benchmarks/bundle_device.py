"""The bench bundle's goals, measured: its size, and `tlx bench BUNDLE` in a venv without
TensorFlow (wall time and peak RSS from /usr/bin/time -v, default settings).

    python benchmarks/bundle_device.py RUN_DIR --device-venv .venvs/runtime-litert \
        --device-venv .venvs/runtime-tflite [--repeat 3]

RUN_DIR: a trained and exported run (the demo's: `tlx demo`, then RUN_DIR=tlx-demo/run).
--device-venv: a venv with tlx's base install and one backend, no TensorFlow (tests/test_runtime_venv.py
builds .venvs/runtime-litert and .venvs/runtime-tflite). Writes benchmarks/results/bundle_device.md.
Goals: bundle <= 25 MB; peak RSS <= 100 MB; the 42-photo demo bundle in under 30 s.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tlx import machine

RESULTS = Path(__file__).resolve().parent / "results" / "bundle_device.md"


def timed(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one command, from GNU time."""
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--device-venv", type=Path, action="append", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows, venvs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "demo.zip"
        subprocess.run([sys.executable, "-m", "tlx", "bundle", str(args.run_dir), "-o", str(bundle)], check=True,
                       capture_output=True)
        size = bundle.stat().st_size
        for venv in args.device_venv:
            venvs.append(f"{venv.name}: " + _describe(venv))
            for i in range(args.repeat):
                load = machine.load_average()
                wall, rss = timed([str(venv / "bin" / "tlx"), "bench", str(bundle), "--out", f"{scratch}/r{i}"])
                rows.append(f"| {venv.name} | {i + 1} | {wall:.1f} | {rss} | {rss * 1024 / 1e6:.1f} | {load} |")
    host = machine.current()
    out = [
        "# The bench bundle: size, and `tlx bench BUNDLE` without TensorFlow",
        "",
        "Reproduce: `python benchmarks/bundle_device.py RUN_DIR --device-venv VENV...` (RUN_DIR: the "
        "`tlx demo` run).",
        "",
        f"- machine: {host.summary()}",
        *[f"- device venv {v}" for v in venvs],
        "- command: `/usr/bin/time -v tlx bench BUNDLE` with default settings (litert or tflite-runtime, "
        "whichever the venv has; threads 1,2; 50 timed runs after 5 warm-up; `tlx predict` cold start per model)",
        f"- bundle: {size / 1e6:.1f} MB (goal: at most 25 MB)",
        "",
        "| venv | run | wall s (goal < 30) | peak RSS KiB | peak RSS MB (10^6 bytes; goal <= 100) | "
        "load average before |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    RESULTS.write_text("\n".join(out) + "\n")
    print(RESULTS.read_text())


def _describe(venv: Path) -> str:
    """Whether TensorFlow is importable there, and the runtime package versions."""
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.util as u, json; from tlx.versions import installed; "
                            "print(json.dumps([u.find_spec('tensorflow') is not None, "
                            "installed('numpy', 'pillow', 'ai-edge-litert', 'tflite-runtime')]))"],
                           capture_output=True, text=True, check=True).stdout
    has_tensorflow, versions = json.loads(probe)
    return (f"TensorFlow {'INSTALLED' if has_tensorflow else 'not installed'}; "
            + ", ".join(f"{k} {v}" for k, v in versions.items()))


if __name__ == "__main__":
    main()
