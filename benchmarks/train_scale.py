"""Training that scales: memory, decode speed, epoch time and cache reuse against folder size.

For each size (default 1k, 4k, 16k synthetic 320x240 JPEGs in 4 classes, trained at 160 px):

1. `tlx train DATA --weights none --phase1-epochs 3 --phase2-epochs 0` in a fresh pixel
   cache, as a subprocess: the first epoch (which also pays for tracing) untimed, the mean
   of the others (`--timed-epochs`, default 2) reported and fitted against the image count
   (seconds = a + b x images). Memory is sampled every 0.1 s over the process and all its
   children: anonymous memory (RssAnon: what the kernel cannot drop) and plain RSS (which
   also counts pages of the memory-mapped cache file); major page faults are counted.
2. The same command with no epochs into another run dir: the data is read back from the
   cache (preparation time compared with the first run's).

Then, in one process:

- decoding images per second with `--workers 1` and `--workers 2` (fresh caches) on the
  `--decode-size` folder (default 16k);
- on the `--side-size` folder (default 4k), one phase-1 epoch of the same model fed by
  tlx's pipeline (rows gathered from the memory-mapped cache) and by the tutorial's own
  (`image_dataset_from_directory`: tf.data decoding the files in parallel on every epoch),
  second epoch timed.

Goals (issue 14): RssAnon at the largest size <= 1.5x the 1k one; 2 workers >= 1.7x one;
epoch time linear in the image count within 15%; no slower than the tutorial's pipeline;
second run prepares its data >= 20x faster.

    .venv/bin/python benchmarks/train_scale.py [--sizes 1000 4000 16000 64000] [--work DIR]

Writes benchmarks/results/train_scale.md (and .json beside it). Scratch data goes to --work
(default: a temporary folder), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tlx import files  # noqa: E402
from tlx.bench.bench import environment  # noqa: E402

CLASSES = ("red", "green", "blue", "yellow")
COLOURS = ((200, 50, 50), (50, 180, 70), (60, 70, 210), (210, 200, 50))
SIZE = (240, 320)  # height, width
IMAGE_SIZE = 160


def make_folder(root: Path, count: int, seed: int = 0) -> Path:
    """count JPEGs, 320x240, in 4 class folders: class colour + noise + a random box."""
    if (root / ".complete").exists():
        return root
    rng = np.random.default_rng(seed)
    height, width = SIZE
    for i in range(count):
        label = i % len(CLASSES)
        pixels = np.empty((height, width, 3), np.float32)
        pixels[:] = COLOURS[label]
        pixels += rng.normal(0, 30, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)
        y, x = rng.integers(0, height - 60), rng.integers(0, width - 60)
        pixels[y:y + 60, x:x + 60] = rng.integers(0, 256, 3)
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    (root / ".complete").write_text("")
    return root


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out.extend(_tree(int(child)))
    return out


def _memory(pids) -> tuple[int, int]:
    """(RssAnon, VmRSS) in bytes summed over pids."""
    anon = rss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("RssAnon:"):
                anon += int(line.split()[1]) * 1024
            elif line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
    return anon, rss


def run_measured(command: list[str], env: dict) -> dict:
    """Run `command`; peak RssAnon and RSS over its process tree, wall time, stderr."""
    started = time.perf_counter()
    faults_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_majflt
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"anon": 0, "rss": 0}

    def sample():
        while proc.poll() is None:
            anon, rss = _memory(_tree(proc.pid))
            peak["anon"], peak["rss"] = max(peak["anon"], anon), max(peak["rss"], rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    # Major page faults: pages read back from disk (the memory map's pages the kernel dropped).
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_majflt - faults_before
    return {"seconds": time.perf_counter() - started, "peak_anon": peak["anon"], "peak_rss": peak["rss"],
            "major_faults": faults, "stdout": stdout, "stderr": stderr}


def prepare_seconds(stderr: str) -> float:
    match = re.search(r"(?:Decoded|Read) \d+ images(?: back from the pixel cache \S+)? in ([0-9.]+) s", stderr)
    if not match:
        sys.exit(f"no decode line in:\n{stderr[-2000:]}")
    return float(match.group(1))


def train_twice(data: Path, work: Path, backbone: str, timed_epochs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TLX_PIXEL_CACHE_DIR": str(work / "cache")}
    shutil.rmtree(work / "cache", ignore_errors=True)
    result = {}
    # The first run trains 1 + timed_epochs epochs; the first is not timed: it also pays
    # for tracing, a fixed cost that would hide whether epoch time grows linearly. The
    # second run is there for its data preparation (read back from the cache): no epochs.
    for name, epochs in (("first", 1 + timed_epochs), ("second", 0)):
        out = work / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "tlx", "train", str(data), "--out", str(out), "--backbone", backbone,
                   "--weights", "none", "--image-size", str(IMAGE_SIZE), "--phase1-epochs", str(epochs),
                   "--phase2-epochs", "0", "--json"]
        measured = run_measured(command, env)
        history = files.read_json(out / "history.json")
        summary = json.loads(measured["stdout"])
        timed = history["phase1"].get("seconds", [])[1:]
        result[name] = {"wall_s": round(measured["seconds"], 1), "peak_anon_mb": measured["peak_anon"] / 2**20,
                        "peak_rss_mb": measured["peak_rss"] / 2**20, "major_faults": measured["major_faults"],
                        "prepare_s": prepare_seconds(measured["stderr"]),
                        "epochs_s": timed, "epoch_s": float(np.mean(timed)) if timed else None,
                        "train_images": summary["images"]["train"]}
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    return result


def decode_rates(data: Path, work: Path) -> dict:
    """Images/s with 1 and 2 decoding threads (interleaved, best of two), and the CPU
    seconds the process used per wall second: how many cores the threads really kept busy
    (on a loaded machine the rate ratio also depends on what the others run)."""
    from tlx.pixels.cache import prepare

    paths = sorted(data.rglob("*.jpg"))
    rates, busy = {}, {}
    for workers in (1, 2, 1, 2):
        cache = work / f"decode-{workers}"
        shutil.rmtree(cache, ignore_errors=True)
        cpu0, t0 = os.times(), time.perf_counter()
        prepare(paths, IMAGE_SIZE, cache_dir=cache, workers=workers)
        wall, cpu1 = time.perf_counter() - t0, os.times()
        rates.setdefault(workers, []).append(len(paths) / wall)
        # Worker processes count too (their CPU time is added once they are waited for).
        cpu = sum(getattr(cpu1, f) - getattr(cpu0, f) for f in ("user", "system", "children_user", "children_system"))
        busy.setdefault(workers, []).append(cpu / wall)
        shutil.rmtree(cache, ignore_errors=True)
    best = {w: int(np.argmax(r)) for w, r in rates.items()}
    return {"rates": {w: rates[w][best[w]] for w in rates}, "cores_busy": {w: busy[w][best[w]] for w in busy}}


def pipelines_side_by_side(data: Path, work: Path, backbone: str, epochs: int = 2) -> dict:
    """One model, two input pipelines, epoch time of the last epoch (after tracing)."""
    import keras

    from tlx.trainer import data as data_mod
    from tlx.trainer import pipeline
    from tlx.trainer.backbones import get_backbone
    from tlx.trainer.model import build_classifier, compile_phase1
    from tutorial_pipeline import epoch_clock, tutorial_dataset

    images = data_mod.load_data(data, image_size=IMAGE_SIZE, seed=0, cache_dir=work / "side-cache")
    rows, labels = images.rows("train")
    n_classes = len(images.split.classes)

    def timed(dataset, steps=None) -> float:
        keras.utils.set_random_seed(0)
        model = build_classifier(get_backbone(backbone), n_classes, (IMAGE_SIZE, IMAGE_SIZE), None)
        compile_phase1(model, n_classes, 1e-4)
        times: list[float] = []
        model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[epoch_clock(times)])
        return times[-1]

    # The tutorial: the files of a train split of the same size, decoded by tf.data on every epoch.
    tutorial = tutorial_dataset(data, IMAGE_SIZE, shuffle=True, seed=0, validation_split=0.2, subset="training")
    tutorial_images = int(tutorial.cardinality()) * 32
    # As `tlx train` reads it: one endless pipeline, steps_per_epoch batches an epoch.
    ours = pipeline.make_dataset(images.pixels, rows, labels, n_classes, 32, shuffle=True, repeat=True)
    result = {"tlx_epoch_s": timed(ours, pipeline.epoch_batches(len(rows), 32)), "tlx_images": len(rows),
              "tutorial_epoch_s": timed(tutorial), "tutorial_images": tutorial_images}
    shutil.rmtree(work / "side-cache", ignore_errors=True)
    return result


def proactive_reclaim() -> str | None:
    """A kernel memory reclaimer that pages out idle memory (DAMON "pageout" schemes, as on
    some virtual machines): it drops pages of the memory-mapped cache between epochs, which
    are then read from disk again. None when there is none."""
    found = []
    for scheme in Path("/sys/kernel/mm/damon/admin/kdamonds").glob("*/contexts/*/schemes/*"):
        try:
            daemon = scheme.parents[3]
            if (daemon / "state").read_text().strip() != "on" or (scheme / "action").read_text().strip() != "pageout":
                continue
            interval = int((scheme.parents[1] / "monitoring_attrs/intervals/aggr_us").read_text()) / 1e6
            age = int((scheme / "access_pattern/age/min").read_text())
            found.append(f"DAMON pageout of memory idle for {age * interval:.0f} s or more")
        except (OSError, ValueError):
            continue
    return "; ".join(found) or None


def linear_fit(counts: list[int], seconds: list[float]) -> dict:
    """seconds = a + b * images fitted by least relative squares (weights 1 / seconds: the
    64k epoch must not outweigh the 1k one), and each size's deviation from the line."""
    y = np.asarray(seconds, float)
    b, a = np.polyfit(np.asarray(counts, float), y, 1, w=1 / y)
    fitted = [a + b * n for n in counts]
    return {"a_s": float(a), "b_ms_per_image": float(1000 * b),
            "deviation": [float(s / f - 1) for s, f in zip(seconds, fitted)]}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--keep-data", action="store_true", help="keep the synthetic folders in --work")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_scale.md")
    parser.add_argument("--sizes-from", type=Path, default=None,
                        help="take the per-size training results from this earlier .json instead of "
                             "training again (then only decoding and the side-by-side run)")
    parser.add_argument("--side-size", type=int, default=None,
                        help="folder size for the side-by-side part (default: 4000 if among --sizes, "
                             "else the first)")
    parser.add_argument("--decode-size", type=int, default=16000,
                        help="folder size for the decoding rates (default 16000: a few tenths of a "
                             "second of starting worker processes are small beside it)")
    parser.add_argument("--timed-epochs", type=int, default=2,
                        help="epochs timed per size, after one untimed epoch (default 2)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="tlx-train-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": environment(), "backbone": args.backbone,
              "load_before": load_average(), "reclaim": proactive_reclaim(), "timed_epochs": args.timed_epochs,
              "sizes": {}}
    if args.sizes_from:
        earlier = files.read_json(args.sizes_from)
        record["sizes"] = earlier["sizes"]
        record["sizes_recorded"] = earlier.get("sizes_recorded", earlier["date"])
        args.sizes = sorted(int(c) for c in record["sizes"])
    else:
        record["sizes_recorded"] = record["date"]
        for count in args.sizes:
            data = make_folder(work / f"data-{count}", count)
            print(f"{count} images: training twice ...", flush=True)
            record["sizes"][count] = {**train_twice(data, work, args.backbone, args.timed_epochs),
                                      "load": load_average()}
            print(json.dumps(record["sizes"][count]), flush=True)
    side = args.side_size or (4000 if 4000 in args.sizes else args.sizes[0])
    middle = make_folder(work / f"data-{side}", side)
    print("decode rates ...", flush=True)
    decode_folder = make_folder(work / f"data-{args.decode_size}", args.decode_size)
    record["decode"] = {"images": len(list(decode_folder.rglob("*.jpg"))), **decode_rates(decode_folder, work),
                        "load": load_average()}
    print(record["decode"], flush=True)
    print("pipelines side by side ...", flush=True)
    record["side_by_side"] = {**pipelines_side_by_side(middle, work, args.backbone), "images": side,
                              "load": load_average()}
    print(record["side_by_side"], flush=True)
    record["load_after"] = load_average()
    files.write_json(args.out.with_suffix(".json"), record)
    files.write_text(args.out, report(record))
    print(args.out.read_text())
    if not args.keep_data and args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def report(record: dict) -> str:
    env = record["machine"]
    sizes = {int(c): v for c, v in record["sizes"].items()}
    counts = sorted(sizes)
    timed = record.get("timed_epochs", 1)
    lines = [
        "# Training that scales: memory, decoding, epoch time, cache reuse",
        "",
        f"Recorded {record['date']} with `benchmarks/train_scale.py --sizes {' '.join(map(str, counts))}` "
        f"(the per-size training runs at {record.get('sizes_recorded', record['date'])}).",
        "",
        f"- Machine: {env.get('cpu')}, {env.get('cores')} cores, int8-relevant flags "
        f"{' '.join(env.get('cpu_features') or []) or '-'}; {env.get('os')}; "
        + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items()) + "; "
        f"load average before {record['load_before']}, after {record['load_after']}.",
        f"- Memory reclaim: {record.get('reclaim') or 'none beyond the kernel default'}.",
        f"- Data: synthetic 320x240 JPEGs, 4 classes, trained at {IMAGE_SIZE} px, {record['backbone']} "
        f"--weights none, batch 32, `tlx train ... --phase1-epochs {1 + timed} --phase2-epochs 0`: the "
        f"first epoch (tracing) untimed, the mean of the other {timed} reported; then the same command "
        "with no epochs, for its data preparation from the cache.",
        "",
        "| images | train images | peak RssAnon MB | peak RSS MB | prepare s (1st) | prepare s (2nd) | "
        "2nd faster | epoch s (each) | ms / train image | major faults | load |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for count in counts:
        first, second = sizes[count]["first"], sizes[count]["second"]
        each = ", ".join(f"{e:.1f}" for e in first.get("epochs_s", [first["epoch_s"]]))
        lines.append(
            f"| {count} | {first['train_images']} | {first['peak_anon_mb']:.0f} | {first['peak_rss_mb']:.0f} | "
            f"{first['prepare_s']:.1f} | {second['prepare_s']:.2f} | "
            f"{first['prepare_s'] / max(second['prepare_s'], 1e-3):.0f}x | {first['epoch_s']:.1f} ({each}) | "
            f"{1000 * first['epoch_s'] / first['train_images']:.2f} | {first.get('major_faults', '-')} | "
            f"{sizes[count]['load']} |")
    small, large = sizes[counts[0]], sizes[counts[-1]]
    images = [sizes[c]["first"]["train_images"] for c in counts]
    epochs = [sizes[c]["first"]["epoch_s"] for c in counts]
    per_image = [e / n for e, n in zip(epochs, images)]
    fit = linear_fit(images, epochs)
    decode = record["decode"]
    rates = {int(k): v for k, v in decode["rates"].items()}
    busy = {int(k): v for k, v in decode.get("cores_busy", {}).items()}
    side = record["side_by_side"]
    lines += [
        "",
        f"- Peak anonymous memory at {counts[-1]} images: **{large['first']['peak_anon_mb'] / small['first']['peak_anon_mb']:.2f}x** "
        f"the {counts[0]}-image run (goal <= 1.5x). Second runs: "
        + ", ".join(f"{sizes[c]['second']['peak_anon_mb']:.0f} MB" for c in counts) + ".",
        f"- Epoch time per train image, largest / smallest against the mean over the sizes: "
        f"**{max(per_image) / np.mean(per_image):.2f} / {min(per_image) / np.mean(per_image):.2f}** (goal: linear "
        f"within 15%, i.e. 1.15 / 0.85). Fitted with a fixed part (least relative squares): "
        f"{fit['a_s']:.2f} s + {fit['b_ms_per_image']:.2f} ms x images, each size "
        + ", ".join(f"{100 * d:+.0f}%" for d in fit["deviation"]) + " from the line.",
        f"- Second run prepares its data **{min(sizes[c]['first']['prepare_s'] / max(sizes[c]['second']['prepare_s'], 1e-3) for c in counts):.0f}x** "
        "faster than the first at least (goal >= 20x).",
        f"- Decoding {decode['images']} images (best of two, interleaved, starting the worker processes "
        f"included): 1 worker {rates[1]:.0f} images/s, 2 workers {rates[2]:.0f} images/s: "
        f"**{rates[2] / rates[1]:.2f}x** (goal >= 1.7x; load {decode['load']})"
        + (f"; CPU seconds per wall second {busy[1]:.2f} with 1 worker, {busy[2]:.2f} with 2." if busy else "."),
        f"- Side by side, same model and train split of the {side.get('images', 4000)}-image folder, second epoch: "
        f"tlx (pixel cache) {side['tlx_epoch_s']:.1f} s for {side['tlx_images']} images, the tutorial's "
        f"`image_dataset_from_directory` pipeline {side['tutorial_epoch_s']:.1f} s for ~{side['tutorial_images']}: "
        f"per image tlx takes **{(side['tlx_epoch_s'] / side['tlx_images']) / (side['tutorial_epoch_s'] / side['tutorial_images']):.2f}x** "
        f"the tutorial's time (goal <= 1.0; load {side['load']}).",
        "",
        "Re-run: `.venv/bin/python benchmarks/train_scale.py --sizes "
        + " ".join(map(str, counts)) + "` (add `--work DIR --keep-data` to keep the synthetic folders).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
