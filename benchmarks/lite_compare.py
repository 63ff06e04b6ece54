"""EfficientNet-Lite0 vs Lite1 vs Lite2 at equal training settings: accuracy, int8 drop,
host latency and size, on Fashion-MNIST and the demo photos.

For each dataset and backbone: the same `tlx train` -> `tlx export` (float32, int8) ->
`tlx bench` as benchmarks/float_vs_int8.py (its run_dataset, reused), with only the backbone
changed; then one table per dataset into benchmarks/results/lite_compare.md. Text below the
notes marker of that file is kept when it is rewritten.

    fashion-mnist  a subset on a loaded 2-core machine: 200 training images per class (2,000:
                   1,600 train / 400 validation) and the first 100 per class of the official
                   test set (1,000); 96 px for all three backbones (one common size, not their
                   native 224/240/260), phase 1 on cached features, 10+5 epochs, lr 1e-3.
    tuxpaint       the demo's settings (tlx.demo.DemoConfig: 160 px, 10+10 epochs, augmentation)
                   for all three backbones.

Goal (model-choice issue): Lite1 or Lite2 beats Lite0 on Fashion-MNIST test accuracy at equal
training settings (else say why). The verdict line says whether the difference is larger than
its paired 95% interval.

    .venv/bin/python benchmarks/lite_compare.py                       # both datasets, 3 backbones
    .venv/bin/python benchmarks/lite_compare.py --dataset tuxpaint --backbone efficientnet_lite0

A finished step in --out (default runs/lite_compare) is reused; --fresh redoes them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from float_vs_int8 import REPO, Setting, _demo_setting, run_dataset  # noqa: E402

from tlx import datasets  # noqa: E402
from tlx.bench.report import cpu_lines  # noqa: E402
from tlx.stats import paired_difference  # noqa: E402

import results_file  # noqa: E402  (benchmarks/, beside this script)

RESULTS = REPO / "benchmarks" / "results" / "lite_compare.md"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
ORDER = ("fashion-mnist", "tuxpaint")


def settings() -> dict[str, Setting]:
    return {
        "fashion-mnist": Setting("fashion-mnist", 96, 200, 10, 5, 1e-3, 0.2, 0.2, augment=False,
                                 cache_features=True, test_per_class=100),
        "tuxpaint": _demo_setting(),
    }


#: Interleaved latency: rounds x runs per model per round, the models' order rotating each round.
ROUNDS, RUNS_PER_ROUND = 30, 20


def interleaved_latency(records: dict[str, dict]) -> dict[tuple[str, str], float]:
    """{(backbone, format): median over rounds of each round's median ms} for one `Classifier.run`
    on one test image, ai-edge-litert, 1 thread. Every model is timed in every round, in a
    rotating order, so a busy stretch of a shared machine falls on all of them alike (bench's
    own p50s are measured one model after the other, minutes apart)."""
    import statistics

    from tlx.run_dir import RunDir
    from tlx.runtime import Classifier

    models, pixels = {}, None
    for backbone, record in records.items():
        run = RunDir(record["run_dir"])
        for fmt in ("float32", "int8"):
            clf = Classifier.from_file(run.export / f"model_{fmt}.tflite", num_threads=1, backend="litert")
            if pixels is None:
                pixels = clf.preprocess(run.read_split().test[0][0])
            models[(backbone, fmt)] = clf
    rounds: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    keys = list(models)
    for r in range(ROUNDS):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            clf = models[key]
            clf.run(pixels)  # warm
            times = []
            for _ in range(RUNS_PER_ROUND):
                start = time.perf_counter()
                clf.run(pixels)
                times.append((time.perf_counter() - start) * 1000)
            rounds[key].append(statistics.median(times))
    return {key: statistics.median(values) for key, values in rounds.items()}


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _row(record: dict, latency: dict) -> str:
    result = record["result"]
    name = record["setting"].backbone
    keras, f32, i8 = (result.model(name) for name in ("keras", "float32", "int8"))
    d = paired_difference(result.truth, result.predicted["keras"], result.predicted["int8"])
    drop, low, high = d.points, d.low, d.high
    drop += 0.0  # no "-0.00"
    interval = "" if low != low else f" [{low:+.2f}, {high:+.2f}]"  # NaN: no image changed
    acc = keras.accuracy
    return (f"| {record['setting'].backbone} | {100 * acc.value:.2f} [{100 * acc.low:.2f}, {100 * acc.high:.2f}] "
            f"| {100 * i8.accuracy.value:.2f} | {drop:+.2f}{interval} | {latency[(name, 'float32')]:.2f} "
            f"| {latency[(name, 'int8')]:.2f} | {latency[(name, 'int8')] / latency[(name, 'float32')]:.2f} "
            f"| {_mb(f32.size_bytes)} | {_mb(i8.size_bytes)} |")


def _verdict(records: dict[str, dict]) -> str:
    """Lite1 / Lite2 against Lite0 on the Keras model's test accuracy, paired on the same images."""
    base = records.get("efficientnet_lite0")
    if base is None:
        return "- Lite0 was not run: no comparison."
    lines = []
    for name in BACKBONES[1:]:
        if name not in records:
            continue
        other = records[name]["result"].predicted["keras"]
        if records[name]["result"].truth != base["result"].truth:
            lines.append(f"- {name}: tested on other images than Lite0 (not comparable pairwise).")
            continue
        # The paired difference is reference minus other: Lite0 minus the bigger model.
        d = paired_difference(base["result"].truth, base["result"].predicted["keras"], other)
        gain, g_low, g_high = -d.points + 0.0, -d.high + 0.0, -d.low + 0.0  # + 0.0: no "-0.00"
        if g_low > 0:
            word = "beats Lite0"
        elif g_high < 0:
            word = "is worse than Lite0"
        else:
            word = "does not differ from Lite0 beyond the interval"
        interval = "no image changed correctness" if d.low != d.low else f"95% [{g_low:+.2f}, {g_high:+.2f}]"
        lines.append(f"- {name} {word}: {gain:+.2f} points ({interval}, paired, n={d.n})")
    return "\n".join(lines)


def section(dataset: str, records: dict[str, dict], command: str) -> str:
    first = next(iter(records.values()))
    latency = interleaved_latency(records)
    s: Setting = first["setting"]
    env = first["result"].environment
    images = first["images"]
    recipe = (f"{s.image_size} px for every backbone, lr {s.learning_rate:g}, {s.phase1_epochs}+"
              f"{s.phase2_epochs} epochs, augmentation {'on' if s.augment else 'off'}"
              f"{', phase 1 on cached features' if s.cache_features else ''}, ImageNet weights, "
              "each backbone's own fine-tune-at default")
    if dataset == "fashion-mnist":
        data = (f"Debian dataset-fashion-mnist, a subset: {s.limit} training images per class (the first "
                f"of each class), split {images['train']} train / {images['validation']} validation; test: "
                f"the first {s.test_per_class} per class of the official test set ({images['test']} images)")
    else:
        data = (f"Debian tuxpaint-stamps-default photos, the demo's split: {images['train']} train / "
                f"{images['validation']} validation / {images['test']} test")
    lines = [
        f"<!-- section {dataset}: written by benchmarks/lite_compare.py -->",
        f"## {dataset}",
        "",
        f"- Date: {env['date']}; command: `{command}`",
        f"- Machine: {env['machine']}; {env['cpu']}; {env['cores']} cores; Python {env['python']}",
        *cpu_lines(env),
        "- Versions: tlx " + env["tlx"] + ", " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- Data: {data}",
        f"- Training (equal for all three): {recipe}",
        f"- Latency: one `Classifier.run` on one test image, ai-edge-litert, 1 thread; all {2 * len(records)} "
        f"models interleaved: {ROUNDS} rounds of {RUNS_PER_ROUND} runs each, the order rotating, the median "
        "of the round medians. On a machine shared with other work: compare the rows, not with other "
        "records. Training times are not given: the runs met load averages from 1 to 15",
        "",
        "| backbone | Keras top-1 % [Wilson 95%] | int8 top-1 % | int8 drop, pts [paired 95%] "
        "| float32 ms | int8 ms | int8/float32 | float32 size | int8 size |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(records[name], latency) for name in BACKBONES if name in records),
        "",
        _verdict(records),
        f"<!-- end section {dataset} -->",
        "",
    ]
    return "\n".join(lines)


HEADER = """# EfficientNet-Lite0 vs Lite1 vs Lite2

Written by `benchmarks/lite_compare.py`: for each dataset, the three backbones trained with the
same settings (`tlx train` -> `tlx export` float32 + int8 -> `tlx bench`), one row each.
Goal (model-choice issue): Lite1 or Lite2 beats Lite0 on Fashion-MNIST test accuracy at equal
training settings, else say why.

"""


def write_results(path: Path, new_sections: dict[str, str]) -> str:
    return results_file.write_sections(path, HEADER, list(ORDER), new_sections, "lite_compare.py",
                                       always_marker=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("all",) + ORDER, default="all")
    parser.add_argument("--backbone", choices=BACKBONES, action="append",
                        help="repeatable; default: all three")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "lite_compare",
                        help="work dir for data and runs (default: runs/lite_compare, git-ignored)")
    parser.add_argument("--fresh", action="store_true", help="retrain, re-export and re-bench")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    args = parser.parse_args()

    names = ORDER if args.dataset == "all" else (args.dataset,)
    backbones = tuple(args.backbone or BACKBONES)
    log = lambda m: print(m, flush=True)  # noqa: E731
    text = ""
    for dataset in names:
        records = {}
        for backbone in backbones:
            started = time.perf_counter()
            setting = replace(settings()[dataset], backbone=backbone)
            # One prepared data folder for every backbone (the same paths, so the same split
            # and paired comparisons); one run folder each.
            work = args.out / dataset / backbone
            work.mkdir(parents=True, exist_ok=True)
            datasets.prepare(dataset, args.out / dataset / "data", setting.limit)
            if not (work / "data").is_symlink():
                (work / "data").symlink_to(Path("..") / "data")
            records[backbone] = {**run_dataset(setting, work, args.fresh, log), "run_dir": work / "run"}
            log(f"[{dataset} {backbone}] done in {time.perf_counter() - started:.0f} s")
        command = f"python benchmarks/lite_compare.py --dataset {dataset}" + "".join(
            f" --backbone {b}" for b in (args.backbone or ()))
        # Written after each dataset, so a later failure keeps the finished one.
        text = write_results(args.results, {dataset: section(dataset, records, command)})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
