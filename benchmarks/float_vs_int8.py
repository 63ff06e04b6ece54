"""Float vs int8: accuracy, size and latency after a real training, per dataset.

For each dataset: prepare the class folders (tlx.datasets), `tlx train` with a pretrained
EfficientNet-Lite0, `tlx export` float32 + int8, `tlx bench` (Keras, float32, int8 on the
held-out test images; latency on one thread with ai-edge-litert), all through the library
functions, then write one section per dataset into benchmarks/results/float_vs_int8.md
(sections of datasets not run this time are kept).

    fashion-mnist  500 training images per class (class-balanced), 96 px, phase 1 on cached
                   features (no augmentation), a few fine-tuning epochs; tested on the
                   official 10,000-image test set (a drop is resolved to about 0.3 points).
    tuxpaint       the demo's settings (tlx.demo.DemoConfig): 160 px, lr 1e-3, 10+10 epochs,
                   validation 0.4, test 0.5 of validation (about 40 test photos).

Goals (issue 6), each reported as met / not met with its numbers:
    int8 drop at most 0.5 points vs Keras on Fashion-MNIST's test set (pretrained backbone)
    int8 p50 at most 0.5x float32 p50, one thread, ai-edge-litert
    int8 file at most 0.32x float32

    apt-get install -y dataset-fashion-mnist tuxpaint-stamps-default   # the data
    .venv/bin/python benchmarks/float_vs_int8.py                         # both (~15 min on 2 cores)
    .venv/bin/python benchmarks/float_vs_int8.py --dataset fashion-mnist
    .venv/bin/python benchmarks/float_vs_int8.py --quick                 # smoke run, results in --out

A finished step (trained model, export, bench) in --out is reused; --fresh redoes them.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tlx import files  # noqa: E402
from tlx.bench.report import cpu_lines  # noqa: E402

import results_file  # noqa: E402  (benchmarks/, beside this script)

RESULTS = REPO / "benchmarks" / "results" / "float_vs_int8.md"
#: Goals from issue 6.
MAX_DROP_POINTS = 0.5
MAX_LATENCY_RATIO = 0.5
MAX_SIZE_RATIO = 0.32
#: The backend the latency goal names.
BACKEND = "litert"


@dataclass(frozen=True)
class Setting:
    """One dataset's training recipe."""

    dataset: str
    image_size: int
    #: Images per class handed to tlx.datasets.prepare (0: all).
    limit: int
    phase1_epochs: int
    phase2_epochs: int
    learning_rate: float
    validation_fraction: float
    test_fraction: float
    augment: bool
    cache_features: bool
    #: Quick runs only: test images per class taken from the dataset's separate test folder.
    test_per_class: int = 0
    backbone: str = "efficientnet_lite0"


def _demo_setting() -> Setting:
    from tlx.demo import DemoConfig

    demo = DemoConfig()
    return Setting("tuxpaint", demo.image_size, demo.limit, demo.phase1_epochs, demo.phase2_epochs,
                   demo.learning_rate, demo.validation_fraction, demo.test_fraction,
                   augment=True, cache_features=False, backbone=demo.backbone)


def settings(quick: bool) -> dict[str, Setting]:
    full = {
        # 96 px and 500 per class keep the whole run (training, two Keras passes and two
        # .tflite passes over 10k test images) at about 10-15 minutes on 2 cores.
        "fashion-mnist": Setting("fashion-mnist", 96, 500, 10, 5, 1e-3, 0.2, 0.2,
                                 augment=False, cache_features=True),
        "tuxpaint": _demo_setting(),
    }
    if not quick:
        return full
    return {
        "fashion-mnist": replace(full["fashion-mnist"], image_size=64, limit=20, phase1_epochs=2,
                                 phase2_epochs=1, test_per_class=10),
        "tuxpaint": replace(full["tuxpaint"], image_size=96, limit=12, phase1_epochs=2, phase2_epochs=1),
    }


def _quick_test_dir(test_dir: Path, out: Path, per_class: int) -> Path:
    """The first `per_class` test images of each class, linked into `out`."""
    if out.is_dir():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        (tmp / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:per_class]:
            (tmp / folder.name / path.name).symlink_to(path.resolve())
    tmp.rename(out)
    return out


def run_dataset(setting: Setting, work: Path, fresh: bool, log) -> dict:
    """Train -> export -> bench for one dataset; returns the numbers of the report."""
    from tlx import datasets
    from tlx.bench import report as bench_report
    from tlx.bench.bench import BenchConfig, run_bench
    from tlx.bench.options import MeasureOptions
    from tlx.export.export import ExportConfig, export_run
    from tlx.run_dir import RunDir
    from tlx.run_config import TrainConfig
    from tlx.trainer.train import train

    work.mkdir(parents=True, exist_ok=True)
    run = RunDir(work / "run")
    timings_path = work / "timings.json"
    timings = files.read_json(timings_path) if timings_path.is_file() and not fresh else {}

    started = time.perf_counter()
    data = datasets.prepare(setting.dataset, work / "data", setting.limit)
    test_dir = data.test_dir
    if test_dir is not None and setting.test_per_class:
        test_dir = _quick_test_dir(test_dir, work / "quick-test", setting.test_per_class)
    timings["prepare_s"] = timings.get("prepare_s") or time.perf_counter() - started

    if fresh or not run.metrics.is_file():
        log(f"[{setting.dataset}] training {setting.backbone} at {setting.image_size} px")
        started = time.perf_counter()
        train(TrainConfig(data_dir=data.data_dir, out=run.root, backbone=setting.backbone, weights="imagenet",
                          image_size=setting.image_size, test_dir=test_dir,
                          phase1_epochs=setting.phase1_epochs, phase2_epochs=setting.phase2_epochs,
                          learning_rate=setting.learning_rate, validation_fraction=setting.validation_fraction,
                          test_fraction=setting.test_fraction, augment=setting.augment,
                          cache_features=setting.cache_features, overwrite=True),
              log=lambda m: log(f"  {m}") if m.strip() else None)
        timings["train_s"] = time.perf_counter() - started
        fresh = True  # everything downstream of a new model is redone
    else:
        log(f"[{setting.dataset}] reusing the trained model in {run.root}")

    if fresh or not (run.export / "export.json").is_file():
        log(f"[{setting.dataset}] exporting float32 + int8")
        started = time.perf_counter()
        # The parity pass would evaluate the same test images the bench evaluates next.
        export_run(ExportConfig(run_dir=run.root, formats=("float32", "int8"), parity=False),
                   log=lambda m: log(f"  {m}"))
        timings["export_s"] = time.perf_counter() - started

    log(f"[{setting.dataset}] bench: Keras, float32, int8 on the test split; latency on 1 thread ({BACKEND})")
    started = time.perf_counter()
    measurement = MeasureOptions(threads=(1,), runs=100, warmup=10, cold_start=False)
    result = run_bench(BenchConfig(run_dir=run.root, measurement=measurement, backend=BACKEND),
                       log=lambda m: log(f"  {m}"))
    bench_report.write(result, run.bench)
    timings["bench_s"] = time.perf_counter() - started
    files.write_json(timings_path, timings)
    log(bench_report.text_table(result))

    split = run.read_split()
    history = files.read_json(run.history) if run.history.is_file() else {}
    images = {"train": len(split.train), "validation": len(split.validation), "test": result.n_test}
    return {"setting": setting, "result": result, "timings": timings, "images": images,
            "history": history}


def _interval(low: float, high: float) -> str:
    if math.isnan(low):
        return "[no interval: no image changed correctness]"
    return f"[{low:+.2f}, {high:+.2f}]"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def section(record: dict, command: str) -> str:
    s: Setting = record["setting"]
    result = record["result"]
    env = result.environment
    keras, f32, i8 = (result.model(name) for name in ("keras", "float32", "int8"))
    size_ratio = i8.size_bytes / f32.size_bytes
    lat_f, lat_i = f32.latency[1], i8.latency[1]
    lat_ratio = lat_i.p50 / lat_f.p50
    # tlx bench's drops: against Keras (the reference), with the paired 95% interval.
    drop, drop_low, drop_high = i8.drop.points, i8.drop.low, i8.drop.high
    f32_drop = f32.drop.points
    t = record["timings"]
    images = record["images"]
    phases = f"{s.phase1_epochs}+{s.phase2_epochs} epochs"
    recipe = (f"{s.backbone} (ImageNet weights), {s.image_size} px, lr {s.learning_rate:g}, {phases}, "
              f"augmentation {'on' if s.augment else 'off'}"
              f"{', phase 1 on cached features' if s.cache_features else ''}")
    if s.dataset == "fashion-mnist":
        data = (f"Debian dataset-fashion-mnist: {s.limit} training images per class (the first of each "
                f"class in the official training file), split {images['train']} train / "
                f"{images['validation']} validation; test: the official test set "
                f"({images['test']} images)")
    else:
        data = (f"Debian tuxpaint-stamps-default photos (animals / food / plants), the demo's split "
                f"(validation {s.validation_fraction:g}, test {s.test_fraction:g} of it): "
                f"{images['train']} train / {images['validation']} validation / {images['test']} test")
    mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731

    def row(m, drop_pts):
        acc = m.accuracy
        agree = "-" if m.agreement is None else f"{100 * m.agreement.value:.2f}"
        size = mb(m.size_bytes) if m.name != "keras" else f"({mb(m.size_bytes)} .keras)"
        p50 = f"{m.latency[1].p50:.2f}" if 1 in m.latency else "-"
        return (f"| {m.name} | {100 * acc.value:.2f} [{100 * acc.low:.2f}, {100 * acc.high:.2f}] | {acc.n} | "
                f"{drop_pts} | {agree} | {size} | {p50} |")

    lines = [
        f"<!-- section {s.dataset}: written by benchmarks/float_vs_int8.py -->",
        f"## {s.dataset}",
        "",
        f"- Date: {env['date']}; command: `{command}`",
        f"- Machine: {env['machine']}; {env['cpu']}; {env['cores']} cores; Python {env['python']}",
        *cpu_lines(env),
        "- Versions: tlx " + env["tlx"] + ", " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- Data: {data}",
        f"- Training: {recipe}",
        f"- Latency: one `Classifier.run` on one test image, ai-edge-litert, 1 thread, "
        f"{result.config.measurement.warmup} warm-up + "
        f"{result.config.measurement.runs} timed runs (XNNPACK on)",
        f"- Time: prepare {t.get('prepare_s', 0):.0f} s, train {t.get('train_s', 0):.0f} s, "
        f"export {t.get('export_s', 0):.0f} s, bench {t.get('bench_s', 0):.0f} s",
        "",
        "| model | top-1 % [Wilson 95% CI] | n | drop vs Keras, pts | agreement with Keras % | size | p50 ms @1t |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row(keras, "-"),
        row(f32, f"{f32_drop:+.2f}"),
        row(i8, f"{drop:+.2f} {_interval(drop_low, drop_high)}"),
        "",
        f"- int8 / float32 file size: **{size_ratio:.3f}** ({mb(i8.size_bytes)} / {mb(f32.size_bytes)})",
        f"- int8 / float32 p50, 1 thread: **{lat_ratio:.3f}** ({lat_i.p50:.2f} ms / {lat_f.p50:.2f} ms; "
        f"p90 {lat_i.p90:.2f} / {lat_f.p90:.2f} ms)",
        f"- The drop interval is paired (same images; 95%, normal approximation on the per-image "
        f"difference of correctness).",
        "",
        "Goals:",
        "",
    ]
    drop_goal = (f"- int8 drop at most {MAX_DROP_POINTS} points vs Keras: {_verdict(drop <= MAX_DROP_POINTS)} "
                 f"({drop:+.2f} points, 95% {_interval(drop_low, drop_high)}, n={i8.accuracy.n})")
    if drop <= MAX_DROP_POINTS < drop_high:
        drop_goal += (f"; met on the point estimate only: the interval's upper end is above "
                      f"{MAX_DROP_POINTS}, so a drop over the limit is not ruled out")
    if s.dataset != "fashion-mnist":
        drop_goal += (" -- the goal is stated for Fashion-MNIST's 10k test set; with this few test "
                      "images one image is "
                      f"{100 / max(i8.accuracy.n, 1):.1f} points, so this is for reference only")
    lines += [
        drop_goal,
        f"- int8 p50 at most {MAX_LATENCY_RATIO}x float32 p50 (1 thread, ai-edge-litert): "
        f"{_verdict(lat_ratio <= MAX_LATENCY_RATIO)} ({lat_ratio:.3f}x)",
        f"- int8 file at most {MAX_SIZE_RATIO}x float32: {_verdict(size_ratio <= MAX_SIZE_RATIO)} "
        f"({size_ratio:.3f}x)",
    ]
    if record["history"].get("phase1"):
        val = record["history"]["phase1"].get("val_accuracy") or []
        val2 = (record["history"].get("phase2") or {}).get("val_accuracy") or []
        if val:
            lines += ["", f"Validation accuracy per epoch: phase 1 " + ", ".join(f"{v:.3f}" for v in val)
                      + (("; phase 2 " + ", ".join(f"{v:.3f}" for v in val2)) if val2 else "")]
    lines += [f"<!-- end section {s.dataset} -->", ""]
    return "\n".join(lines)


HEADER = """# Float vs int8 after a real training

Written by `benchmarks/float_vs_int8.py` (one section per dataset; a run of one dataset keeps
the other's section). Each section: `tlx train` -> `tlx export` (float32, int8) -> `tlx bench`
through the library functions, with its own date, machine and versions.

Goals (issue 6): int8 drop at most 0.5 points on Fashion-MNIST's test set with a pretrained
backbone (a hosted MobileNetV2 int8 table loses 1.0); int8 p50 at most 0.5x float32 p50 on one
thread with ai-edge-litert; int8 file at most 0.32x float32. Nothing is tuned to meet them: a
miss is recorded as "not met".

"""
ORDER = ("fashion-mnist", "tuxpaint")


def write_results(path: Path, new_sections: dict[str, str]) -> str:
    return results_file.write_sections(path, HEADER, list(ORDER), new_sections, "float_vs_int8.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("all",) + ORDER, default="all",
                        help="all runs fashion-mnist first, then tuxpaint")
    parser.add_argument("--out", type=Path, default=None,
                        help="work dir for data and runs (default: runs/float_vs_int8, or "
                             "runs/float_vs_int8-quick with --quick; git-ignored)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for a smoke run; results go to OUT/float_vs_int8.md")
    parser.add_argument("--fresh", action="store_true", help="retrain, re-export and re-bench")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"results file (default: {RESULTS.relative_to(REPO)}; with --quick: in OUT)")
    args = parser.parse_args()

    out = args.out or REPO / "runs" / ("float_vs_int8-quick" if args.quick else "float_vs_int8")
    results_path = args.results or (out / "float_vs_int8.md" if args.quick else RESULTS)
    names = ORDER if args.dataset == "all" else (args.dataset,)
    table = settings(args.quick)
    command = "python benchmarks/float_vs_int8.py" + (" --quick" if args.quick else "")
    log = lambda m: print(m, flush=True)  # noqa: E731
    sections = {}
    for name in names:
        started = time.perf_counter()
        record = run_dataset(table[name], out / name, args.fresh, log)
        sections[name] = section(record, command + f" --dataset {name}")
        # Written after each dataset, so a later failure keeps the finished one.
        text = write_results(results_path, {name: sections[name]})
        log(f"[{name}] done in {time.perf_counter() - started:.0f} s")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
