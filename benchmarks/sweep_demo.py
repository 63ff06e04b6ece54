"""The issue's sweep goal: backbones x 3 sizes on the demo photos (Tux Paint stamps) with the
demo's recipe and cached phase-1 features, on this machine; wall time, peak RSS, load.

    python benchmarks/sweep_demo.py WORKDIR [--backbones efficientnet_lite0,efficientnet_lite1]
        [--image-sizes 96,128,160] [--summarize-only]

Prepares WORKDIR/data (tlx.datasets "tuxpaint"), runs `tlx sweep` under /usr/bin/time -v with
a fresh pixel cache in WORKDIR/cache (so decoding is counted), and writes
results/sweep_demo.md from WORKDIR/sweep/sweep.json and the time record. `--summarize-only`
writes the file from an earlier run's WORKDIR.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "sweep_demo.md"
#: tlx demo's recipe (tlx/demo.py DemoConfig), phase 1 on cached features.
RECIPE = ["--learning-rate", "0.001", "--phase1-epochs", "10", "--phase2-epochs", "10",
          "--validation-fraction", "0.4", "--test-fraction", "0.5", "--cache-features", "--no-augment"]


def run(workdir: Path, backbones: str, sizes: str) -> None:
    from tlx import datasets

    data = datasets.prepare("tuxpaint", workdir / "data")
    command = [sys.executable, "-m", "tlx", "sweep", str(data.data_dir), "--out", str(workdir / "sweep"),
               "--backbones", backbones, "--image-sizes", sizes, "--cache-dir", str(workdir / "cache"),
               *RECIPE]
    (workdir / "command.txt").write_text(" ".join(command[3:]) + "\n")
    (workdir / "load_before.txt").write_text(", ".join(f"{x:.2f}" for x in os.getloadavg()) + "\n")
    with open(workdir / "sweep.err", "w") as err, open(workdir / "sweep.out", "w") as out:
        subprocess.run(["/usr/bin/time", "-v", *command], stdout=out, stderr=err, check=False,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def _time_field(text: str, name: str) -> str:
    match = re.search(rf"{re.escape(name)}: (.+)", text)
    return match.group(1).strip() if match else "?"


def summarize(workdir: Path) -> str:
    sweep = json.loads((workdir / "sweep" / "sweep.json").read_text())
    err = (workdir / "sweep.err").read_text()
    env = sweep["environment"]
    load_before = (workdir / "load_before.txt").read_text().strip() if (workdir / "load_before.txt").is_file() else "?"
    lines = ["# tlx sweep on the demo photos", "",
             "Reproduce: `python benchmarks/sweep_demo.py WORKDIR` (see its docstring).", "",
             f"- date: {sweep['date']}; tlx commit {env.get('tlx_commit')}",
             f"- machine: {env.get('cpu')} ({env.get('architecture')}, {env.get('cores')} cores; int8-relevant "
             f"features: {', '.join(env.get('cpu_features') or []) or 'none'}); {env.get('os')}; "
             f"Python {env.get('python')}",
             f"- versions: {json.dumps(env.get('packages') or env.get('versions') or {})}",
             f"- command: `tlx {(workdir / 'command.txt').read_text().strip() if (workdir / 'command.txt').is_file() else '?'}`",
             f"- wall time: {_time_field(err, 'Elapsed (wall clock) time (h:mm:ss or m:ss)')}; peak RSS "
             f"{_time_field(err, 'Maximum resident set size (kbytes)')} KiB; user {_time_field(err, 'User time (seconds)')} s, "
             f"system {_time_field(err, 'System time (seconds)')} s",
             f"- load average before: {load_before}; at the end: {env.get('load_average')}", "",
             "| run | status | seconds | model | accuracy | p50 ms (host, 1 thread) | MB | Pareto |",
             "|---|---|---|---|---|---|---|---|"]
    front = set(sweep["pareto"])
    for c in sweep["candidates"]:
        if not c["models"]:
            error = (c["error"] or "").splitlines()[0][:120] if c["error"] else ""
            lines.append(f"| {c['run']} | {c['status']} | {c['seconds'] or ''} | {error} | | | | |")
        for m in c["models"]:
            model_id = f"{c['run']}/{m['format']}"
            lines.append(f"| {c['run']} | {c['status']} | {c['seconds']} | {m['format']} | {m['accuracy']:.3f} | "
                         f"{m['latency_ms']:.2f} | {m['size_bytes'] / 1e6:.2f} | {'yes' if model_id in front else ''} |")
    lines += ["", f"Recommended (no budgets): {sweep['recommended']['model']} ({sweep['recommended']['reason']})", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1")
    parser.add_argument("--image-sizes", default="96,128,160")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--result", type=Path, default=RESULT, help="the results file to write")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        started = time.time()
        run(args.workdir, args.backbones, args.image_sizes)
        print(f"sweep finished in {time.time() - started:.0f} s")
    text = summarize(args.workdir)
    old = args.result.read_text() if args.result.is_file() else ""
    notes = old.split("\n## Notes", 1)[1] if "\n## Notes" in old else ""
    args.result.write_text(text + ("\n## Notes" + notes if notes else ""))
    print(text)


if __name__ == "__main__":
    main()
