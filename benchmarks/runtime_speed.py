"""Runtime speed and size: classify() overhead, `tlx predict` cold start and peak RSS,
install size. Writes benchmarks/results/runtime.md.

    .venv/bin/python benchmarks/runtime_speed.py            # everything (~3 min)
    .venv/bin/python benchmarks/runtime_speed.py --quick    # fewer repeats

The model is an int8 MobileNetV2 (alpha 1.0, random weights: speed does not depend on
the weights) exported to the tlx contract: raw uint8 pixels in (scale 1.0, zero point 0),
rescaling inside, uint8 probabilities out. It is built with the main venv's TensorFlow;
everything measured runs without TensorFlow in the runtime venvs of
tests/test_runtime_venv.py (.venvs/runtime-litert, .venvs/runtime-tflite), which the
script builds if needed.

Timings on a shared 2-core machine are noisy: medians of many runs are reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "runtime.md"


def build_model(out: Path, size: int) -> None:
    """int8 and float32 MobileNetV2 at `size` px, 10 classes, with labels appended."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import zipfile

    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), dtype="float32")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                          weights=None, pooling="avg")
    outputs = keras.layers.Dense(10, activation="softmax")(base(x, training=False))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            image = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
            image[0, 0, 0] = 0.0
            image[0, 1, 1] = 255.0
            yield [image]

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        c = tf.lite.TFLiteConverter.from_saved_model(tmp)
        (out / "mobilenetv2_float32.tflite").write_bytes(c.convert())
        c = tf.lite.TFLiteConverter.from_saved_model(tmp)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.uint8
        c.inference_output_type = tf.uint8
        (out / "mobilenetv2_int8.tflite").write_bytes(c.convert())
    for name in ("mobilenetv2_float32.tflite", "mobilenetv2_int8.tflite"):
        with zipfile.ZipFile(out / name, "a") as z:
            z.writestr("labels.txt", "\n".join(f"class_{i}" for i in range(10)) + "\n")
            z.writestr("tlx.json", json.dumps({"image_size": [size, size]}))


def latency(model: str, image: str, repeats: int, backend: str | None) -> dict:
    """Runs inside a runtime venv: raw invoke vs classify() end to end, 1 thread."""
    import numpy as np

    from tlx.imaging import load_image
    from tlx.runtime import Classifier

    clf = Classifier.from_file(model, num_threads=1, backend=backend)
    fast = Classifier.from_file(model, num_threads=1, backend=backend, fast_decode=True)
    interp, index = clf._interpreter, clf._input["index"]
    x = clf.preprocess(image)[np.newaxis]

    def timeit(fn):
        for _ in range(max(3, repeats // 10)):
            fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    def raw():
        interp.set_tensor(index, x)
        interp.invoke()

    out = {"backend": clf.backend, "input": list(clf.input_size)}
    # Interleave rounds so a noisy neighbour hurts all numbers alike.
    rounds = {"invoke_ms": [], "classify_ms": [], "classify_fast_ms": [], "decode_resize_ms": [],
              "decode_resize_fast_ms": []}
    for _ in range(3):
        rounds["invoke_ms"].append(timeit(raw))
        rounds["classify_ms"].append(timeit(lambda: clf.classify(image, top_k=3)))
        rounds["classify_fast_ms"].append(timeit(lambda: fast.classify(image, top_k=3)))
        rounds["decode_resize_ms"].append(timeit(lambda: load_image(image, clf.input_size)))
        rounds["decode_resize_fast_ms"].append(timeit(lambda: fast.preprocess(image)))
    for key, values in rounds.items():
        out[key] = round(min(values), 3)
    out["ratio"] = round(out["classify_ms"] / out["invoke_ms"], 2)
    out["ratio_fast"] = round(out["classify_fast_ms"] / out["invoke_ms"], 2)
    diff = np.abs(clf.preprocess(image).astype(int) - fast.preprocess(image).astype(int))
    out["fast_pixel_diff_mean"] = round(float(diff.mean()), 3)
    out["fast_pixel_diff_max"] = int(diff.max())
    out["fast_same_top1"] = clf.classify(image, 1)[0].index == fast.classify(image, 1)[0].index
    return out


def cold_start(command: list[str], repeats: int) -> dict:
    """Process start to the first printed result line; peak RSS of the process (wait4)."""
    times, rss = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        first = None
        for line in proc.stdout:
            if line.strip().startswith(b"1 "):  # first ranked row of the first table
                first = time.perf_counter() - t
                break
        proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if first is None or status != 0:
            raise RuntimeError(f"{command} printed no result (status {status})")
        times.append(first)
        rss.append(usage.ru_maxrss / 1024)
    return {"first_result_s": round(statistics.median(times), 3),
            "first_result_min_s": round(min(times), 3), "peak_rss_mb": round(max(rss), 1)}


def install_size(venv: Path) -> dict:
    site = next((venv / "lib").glob("python3*/site-packages"))
    skip = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth")
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        if entry.name.startswith(skip) or entry.name == "__pycache__":
            continue
        total = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry.is_dir() \
            else entry.stat().st_size
        key = entry.name.split("-")[0].split(".")[0].lower()
        sizes[key] = sizes.get(key, 0) + total
    mb = {k: round(v / 1e6, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])}
    return {"total_mb": round(sum(sizes.values()) / 1e6, 1), "largest": dict(list(mb.items())[:6])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tlx-runtime-bench")
    args = parser.parse_args()
    repeats = 30 if args.quick else 200
    cold_repeats = 3 if args.quick else 7

    sys.path.insert(0, str(REPO))
    from tests.test_runtime_venv import RUNTIME_VENVS, ensure_venv  # builds the venvs on first use

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"{args.size}" / "mobilenetv2_int8.tflite"
    if not model.exists():
        model.parent.mkdir(exist_ok=True)
        subprocess.run([sys.executable, __file__, "_build", str(model.parent), str(args.size)],
                       check=True)
    image = work / "photo_640x480.jpg"
    if not image.exists():
        import numpy as np
        from PIL import Image
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC).save(image, quality=90)

    rows = {}
    for venv_name, (extra, backend) in RUNTIME_VENVS.items():
        venv = ensure_venv(venv_name, extra)
        python = venv / "bin" / "python"
        proc = subprocess.run([str(python), __file__, "_latency", str(model), str(image),
                               str(repeats), backend], capture_output=True, text=True, check=True)
        lat = json.loads(proc.stdout)
        cold = cold_start([str(venv / "bin" / "tlx"), "predict", str(model), str(image),
                           "--threads", "1"], cold_repeats)
        rows[venv_name] = {"latency": lat, "cold": cold, "size": install_size(venv),
                           "versions": subprocess.run(
                               [str(python), "-c", "import numpy, PIL, importlib.metadata as m; "
                                f"print(numpy.__version__, PIL.__version__, m.version({backend.replace('litert', 'ai-edge-litert')!r}))"],
                               capture_output=True, text=True).stdout.split()}
        print(venv_name, json.dumps(rows[venv_name]), flush=True)
    tf_cold = cold_start([str(REPO / ".venv" / "bin" / "tlx"), "predict", str(model), str(image),
                          "--threads", "1", "--backend", "tensorflow"], max(2, cold_repeats // 2))
    print("tensorflow", json.dumps(tf_cold), flush=True)
    write_report(rows, tf_cold, args.size, repeats)


def write_report(rows: dict, tf_cold: dict, size: int, repeats: int) -> None:
    from tlx import machine

    here = machine.current()
    lines = [
        "# Runtime speed and size",
        "",
        f"Recorded {datetime.date.today().isoformat()} by `benchmarks/runtime_speed.py` on "
        f"{here.summary()} (shared with other jobs; load average {machine.load_average()}).",
        f"Model: MobileNetV2 alpha 1.0, {size}x{size}, 10 classes, full-int8 (uint8 in/out), "
        "random weights. Image: a 640x480 JPEG (quality 90). 1 interpreter thread.",
        "Venvs hold the base install plus one backend (no TensorFlow).",
        "",
        "## classify() end to end vs raw invoke() (medians of "
        f"{repeats} calls, best of 3 rounds)",
        "",
        "| backend | versions (numpy, pillow, backend) | invoke ms | decode+resize ms | classify ms | ratio | "
        "fast-JPEG decode+resize ms | fast classify ms | fast ratio | fast pixel diff mean/max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lat = row["latency"]
        lines.append(
            f"| {lat['backend']} | {', '.join(row['versions'])} | {lat['invoke_ms']} | "
            f"{lat['decode_resize_ms']} | {lat['classify_ms']} | **{lat['ratio']}x** | "
            f"{lat['decode_resize_fast_ms']} | {lat['classify_fast_ms']} | **{lat['ratio_fast']}x** | "
            f"{lat['fast_pixel_diff_mean']} / {lat['fast_pixel_diff_max']} |")
    lines += [
        "",
        "Goal: ratio at most 1.3x. See the notes below.",
        "",
        "## `tlx predict MODEL photo.jpg --threads 1`: cold start and memory",
        "",
        "| install | first result printed (median / min s) | peak RSS MB |",
        "|---|---|---|",
    ]
    for name, row in rows.items():
        c = row["cold"]
        lines.append(f"| {name} (`{row['latency']['backend']}`) | {c['first_result_s']} / "
                     f"{c['first_result_min_s']} | {c['peak_rss_mb']} |")
    lines.append(f"| main venv, `--backend tensorflow` (imports TensorFlow) | "
                 f"{tf_cold['first_result_s']} / {tf_cold['first_result_min_s']} | "
                 f"{tf_cold['peak_rss_mb']} |")
    lines += [
        "",
        "Goals: first result at most 0.5 s, peak RSS at most 100 MB.",
        "",
        "## Install size (site-packages without pip/setuptools)",
        "",
        "| install | total MB | largest packages (MB) |",
        "|---|---|---|",
    ]
    for name, row in rows.items():
        s = row["size"]
        extra = {"runtime-litert": "runtime", "runtime-tflite": "tflite"}.get(name, name)
        lines.append(f"| base + `[{extra}]` extra ({row['latency']['backend']}) | **{s['total_mb']}** | "
                     + ", ".join(f"{k} {v}" for k, v in s["largest"].items()) + " |")
    lines += ["", "Goal: under 100 MB.", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    notes = existing.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in existing else "\n"
    RESULTS.write_text("\n".join(lines) + "\n<!-- notes -->" + notes)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        build_model(Path(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_latency":
        print(json.dumps(latency(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])))
    else:
        main()
