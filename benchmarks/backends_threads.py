"""Backends and thread counts: ai-edge-litert vs tflite-runtime 2.14, 1 and 2 threads,
float32 and int8, on runs exported by benchmarks/float_vs_int8.py.

tflite-runtime 2.14 is built against numpy 1, so it cannot share the main venv (numpy 2,
TensorFlow 2.21). Both backends live in a git-ignored venv without TensorFlow,
.venvs/bench-backends (numpy<2 and ml_dtypes<0.5 let them coexist; see DESIGN.md), built
on first use. There the real CLI runs, without Keras and without cold-start timing:

    tlx bench RUN --compare-backends --threads 1,2 --no-keras --no-cold-start

`tlx bench` writes into RUN/bench, so each run is measured through a light copy
(labels, split, config and the .tflite files) under --out, leaving the run's own
bench report alone. Accuracy is on the run's whole test split (tflite-runtime's int8 is
slow on x86: the 10k Fashion-MNIST test set takes a few minutes).

    .venv/bin/python benchmarks/float_vs_int8.py          # the runs (once)
    .venv/bin/python benchmarks/backends_threads.py       # ~6.5 min with both runs
    .venv/bin/python benchmarks/backends_threads.py --run runs/float_vs_int8/tuxpaint/run

Writes benchmarks/results/backends_threads.md. Goal (issue 6): int8 p50 at most 0.5x
float32 p50 on one thread with ai-edge-litert.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlx import files  # noqa: E402
from tlx.bench.report import cpu_lines  # noqa: E402

import results_file  # noqa: E402  (benchmarks/, beside this script)

VENV = REPO / ".venvs" / "bench-backends"
#: Both backends in one venv: tflite-runtime 2.14 needs numpy 1; ml_dtypes 0.5 needs numpy 2.
REQUIREMENTS = ["-e", f"{REPO}[runtime,tflite]", "matplotlib", "numpy<2", "ml_dtypes<0.5"]
DEFAULT_RUNS = ("fashion-mnist", "tuxpaint")
RESULTS = REPO / "benchmarks" / "results" / "backends_threads.md"
MAX_LATENCY_RATIO = 0.5
BACKEND_NAMES = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime"}


def ensure_venv(log) -> Path:
    tlx = VENV / "bin" / "tlx"
    if tlx.is_file():
        return VENV
    log(f"Creating {VENV.relative_to(REPO)} (about a minute)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *REQUIREMENTS], check=True)
    return VENV


def light_copy(run: Path, dest: Path) -> Path:
    """What `tlx bench --no-keras` reads from a run: labels, split, config, .tflite files."""
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "export").mkdir(parents=True)
    for name in ("labels.txt", "split.json", "config.json"):
        shutil.copyfile(run / name, dest / name)
    for model in sorted((run / "export").glob("*.tflite")):
        shutil.copyfile(model, dest / "export" / model.name)
    return dest


def bench(venv: Path, run: Path, runs: int, log) -> tuple[dict, float]:
    command = [str(venv / "bin" / "tlx"), "bench", str(run), "--compare-backends", "--threads", "1,2",
               "--no-keras", "--no-cold-start", "--runs", str(runs), "--warmup", "10"]
    log("  $ tlx bench <run> " + " ".join(command[3:]))
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"tlx bench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    log(done.stdout)
    return files.read_json(run / "bench" / "bench.json"), seconds


def _model_and_backend(model: dict) -> tuple[str, str]:
    return model["name"].split(" (")[0], model["backend"]


def report(measured: list[tuple[str, dict, float]], runs: int) -> str:
    env = measured[0][1]["environment"]
    v = env["versions"]
    lines = [
        "# Backends and thread counts",
        "",
        f"- Date: {env['date']}; command: `python benchmarks/backends_threads.py` "
        f"(runs `tlx bench RUN --compare-backends --threads 1,2 --no-keras --no-cold-start --runs {runs} "
        "--warmup 10` in the venv below)",
        f"- Machine: {env['machine']}; {env['cpu']}; {env['cores']} cores; Python {env['python']}",
        *cpu_lines(env),
        f"- Venv `.venvs/bench-backends` (no TensorFlow): tlx {env['tlx']}, "
        + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- Models: the float32 and int8 files of benchmarks/float_vs_int8.py's runs (EfficientNet-Lite0, "
        "pretrained, fine-tuned; int8 is full-integer with uint8 input/output)",
        "- Latency: one `Classifier.run` (set input, invoke, dequantize) on one test image, "
        f"10 warm-up + {runs} timed runs, ms; XNNPACK is on by default in both backends",
        "",
    ]
    goal_lines = []
    for dataset, data, seconds in measured:
        image = measured_image_size(data)
        lines += [f"## {dataset} ({image} px, {data['n_test']} test images; bench took {seconds:.0f} s)", "",
                  "| model | backend | p50 ms @1t | p90 ms @1t | p50 ms @2t | p90 ms @2t | "
                  "2t speed-up | top-1 % | agreement with float32 (litert) % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        p50 = {}
        for m in data["models"]:
            name, backend = _model_and_backend(m)
            one, two = m["latency"]["1"], m["latency"]["2"]
            p50[(name, backend)] = one["p50_ms"]
            agree = "-" if m["agreement"] is None else f"{100 * m['agreement']['value']:.2f}"
            lines.append(f"| {name} | {BACKEND_NAMES.get(backend, backend)} | {one['p50_ms']:.2f} | "
                         f"{one['p90_ms']:.2f} | {two['p50_ms']:.2f} | {two['p90_ms']:.2f} | "
                         f"{one['p50_ms'] / two['p50_ms']:.2f}x | "
                         f"{100 * m['accuracy']['value']:.2f} | {agree} |")
        lines += ["", "int8 p50 / float32 p50 (1 thread, 2 threads):", ""]
        for backend in ("litert", "tflite-runtime"):
            if ("int8", backend) in p50 and ("float32", backend) in p50:
                ratio1 = p50[("int8", backend)] / p50[("float32", backend)]
                two = {(_model_and_backend(m)): m["latency"]["2"]["p50_ms"] for m in data["models"]}
                ratio2 = two[("int8", backend)] / two[("float32", backend)]
                lines.append(f"- {BACKEND_NAMES[backend]}: {ratio1:.3f}x, {ratio2:.3f}x")
                if backend == "litert":
                    verdict = "**met**" if ratio1 <= MAX_LATENCY_RATIO else "**not met**"
                    goal_lines.append(f"- {dataset} ({image} px): {verdict}: {ratio1:.3f}x "
                                      f"({p50[('int8', backend)]:.2f} ms / {p50[('float32', backend)]:.2f} ms)")
        lines.append("")
    lines += [f"## Goal: int8 p50 at most {MAX_LATENCY_RATIO}x float32 p50, 1 thread, ai-edge-litert", ""]
    lines += goal_lines + [""]
    return "\n".join(lines)


def measured_image_size(data: dict) -> str:
    split = files.read_json(Path(data["run_dir"]) / "split.json")
    return "x".join(str(s) for s in split["image_size"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append",
                        help="an exported run dir (repeatable); default: the fashion-mnist and tuxpaint "
                             "runs of benchmarks/float_vs_int8.py under runs/float_vs_int8")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "backends_threads",
                        help="work dir for the light copies (git-ignored)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model, backend and thread count")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    log = lambda m: print(m, flush=True)  # noqa: E731

    if args.run:
        runs = {path.resolve().parent.name if path.name == "run" else path.name: path for path in args.run}
    else:
        base = REPO / "runs" / "float_vs_int8"
        runs = {name: base / name / "run" for name in DEFAULT_RUNS if (base / name / "run" / "export").is_dir()}
    if not runs:
        sys.exit("No exported run found: run benchmarks/float_vs_int8.py first, or pass --run RUN_DIR.")
    venv = ensure_venv(log)
    measured = []
    for name, run in runs.items():
        log(f"[{name}] {run}")
        copy = light_copy(run, args.out / name)
        data, seconds = bench(venv, copy, args.runs, log)
        measured.append((name, data, seconds))
    text = report(measured, args.runs)
    print(results_file.write_with_notes(args.results, text, "backends_threads.py"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
