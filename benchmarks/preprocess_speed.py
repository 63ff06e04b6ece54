"""End-to-end latency at camera resolutions: tlx's Classifier against MediaPipe Tasks' ImageClassifier.

    python benchmarks/preprocess_speed.py --run RUN_DIR [--compare-run OLD_RUN_DIR]

RUN_DIR is a finished `tlx demo` / `tlx train` + `tlx export` run; its model_int8.tflite is
classified by both clients, the same file, with 1 interpreter thread (tlx: num_threads=1;
MediaPipe Tasks' Python API has no thread option, and its XNNPACK default on Linux desktop is
1 thread: the script records MediaPipe's process CPU time against wall time to show it).

Per frame size (640x480, 1280x720, 1920x1080; a real photo, scikit-image's `chelsea`, scaled
to the size with mild sensor noise, and that frame saved as a quality-90 JPEG), in rounds
that call every method once, all in one process:
- raw `invoke()` of the same model (the floor);
- tlx `classify(array)` and `classify(path)` with the model's preprocessing version;
- the previous version's array route (`before`: version 2's pixels from the same frame, then
  the same model), to show what the model's version saves;
- MediaPipe `classify(mp.Image(array))` and `classify(mp.Image.create_from_file(path))`.
Each is timed as wall time and as process CPU time (all threads of this process: robust to
other jobs on a shared machine, and it counts MediaPipe's graph threads too).
Then classify(array) step by step (gather of the kept pixels, Pillow's resize, to an array,
set + invoke + get, top-k), each step timed alone in interleaved rounds.
Also: top-1 agreement of the two on the run's test photos (both given the same full-size RGB
pixels), the pixel difference of the model's version against version 1 per frame, and the run's
accuracy on its test photos with each version, from the files and as 1280x720 camera frames
(and OLD_RUN_DIR's recorded accuracy: a model trained with version 1, before/after). Writes
benchmarks/results/preprocess_speed.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tlx import files, imaging, machine  # noqa: E402
from tlx.imaging import load_image  # noqa: E402
from tlx.run_dir import RunDir  # noqa: E402
from tlx.versions import installed  # noqa: E402

import results_file  # noqa: E402  (benchmarks/, beside this script)

SIZES = ((640, 480), (1280, 720), (1920, 1080))
#: The frame a camera is now asked for, for a 160 px model (tlx.runtime.sources.camera_frame_size):
#: timed too, not judged by the goals (which are about the three sizes above).
CAMERA_SIZE = (448, 320)
RESULTS = REPO / "benchmarks" / "results" / "preprocess_speed.md"
#: The issue's goals: classify(array) at most this x raw invoke at 1920x1080, at most this x
#: MediaPipe's from an array at every size; classify(file) at most this x MediaPipe's from a file.
MAX_ARRAY_VS_INVOKE = 1.3
MAX_ARRAY_VS_MEDIAPIPE = 1.0
MAX_FILE_VS_MEDIAPIPE = 0.6


#: The version whose array route the model's is compared with (the `before` column).
PREVIOUS_VERSION = 2


def step_times(clf, frame: np.ndarray, rounds: int) -> dict[str, float]:
    """Median wall ms of each step of classify(array), each step timed alone."""
    size = clf.input_size
    gap = imaging._reducing_gap(clf.preprocessing, frame, True)
    reduced = imaging._reduced_image(frame, size)

    def resize():  # as the model's version resizes
        return imaging._resize(reduced, (size[1], size[0]), clf.preprocessing, gap)
    resized = resize()
    pixels = np.asarray(resized, dtype=np.uint8)
    scores = clf.run(pixels)
    times = time_rounds({
        "gather": lambda: imaging._reduced_image(frame, size),
        "resize": resize,
        "to array": lambda: np.asarray(resized, dtype=np.uint8),
        "set + invoke + get": lambda: clf.run(pixels),
        "top-k": lambda: clf.top(scores, 1),
        "classify(array)": lambda: clf.classify(frame, top_k=1),
    }, rounds)
    return {name: median(times, name) for name in times}


def camera_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A real photo at camera size with sensor-like noise (a clean upscale would compress
    and decode unrealistically well)."""
    from skimage import data

    return photo_frame(data.chelsea(), width, height, seed)


def photo_frame(photo: np.ndarray, width: int, height: int, seed: int = 0) -> np.ndarray:
    """`photo` (RGB) scaled to a camera frame, with sensor-like noise (sigma 3)."""
    scaled = Image.fromarray(photo).resize((width, height), Image.Resampling.LANCZOS)
    noise = np.random.default_rng(seed).normal(0, 3.0, (height, width, 3))
    return np.ascontiguousarray(np.clip(np.asarray(scaled) + noise, 0, 255).astype(np.uint8))


class MediaPipe:
    """MediaPipe Tasks' ImageClassifier on the same .tflite (it reads tlx's standard metadata)."""

    def __init__(self, model: Path):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self.mp = mp
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                                max_results=1)
        self.classifier = vision.ImageClassifier.create_from_options(options)

    def from_array(self, array: np.ndarray) -> int:
        image = self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=array)
        return self.classifier.classify(image).classifications[0].categories[0].index

    def from_file(self, path: Path) -> int:
        return self.classifier.classify(self.mp.Image.create_from_file(str(path))) \
            .classifications[0].categories[0].index

    def close(self) -> None:
        # Without close(), the classifier's __del__ at interpreter exit prints a TypeError.
        self.classifier.close()


def time_rounds(methods: dict, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per method, wall and process-CPU ms of each call. Every round calls each method once,
    one after the other, so a busy spell on the shared machine hits all of them alike and a
    ratio can be taken within each round. Process CPU time counts the work of all of the
    process's threads (MediaPipe's graph runs on its own) and not the time other jobs held
    the cores."""
    for fn in methods.values():  # warm-up
        for _ in range(3):
            fn()
    samples = {name: {"wall": [], "cpu": []} for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            samples[name]["cpu"].append(1e3 * (time.process_time() - cpu))
            samples[name]["wall"].append(1e3 * (time.perf_counter() - wall))
    return samples


def median(samples: dict, name: str, kind: str = "wall") -> float:
    return statistics.median(samples[name][kind])


def paired_ratio(samples: dict, a: str, b: str, kind: str = "wall") -> float:
    """Median over rounds of a's time / b's time in the same round."""
    return statistics.median(x / y for x, y in zip(samples[a][kind], samples[b][kind]))


def cpu_per_wall(fn, calls: int = 30) -> float:
    """Process CPU seconds per wall second while `fn` runs: about 1 for one busy thread."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def measure(run: RunDir, rounds: int, scratch: Path) -> dict:
    from tlx.runtime import Classifier
    from tlx.runtime.backends import create_interpreter

    model = run.export / "model_int8.tflite"
    clf = Classifier.from_file(model, num_threads=1)
    size = clf.input_size
    backend, interpreter = create_interpreter(model.read_bytes(), 1, None)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    mediapipe = MediaPipe(model)

    def before(frame):
        return clf.top(clf.run(load_image(frame, size, version=PREVIOUS_VERSION)), 1)

    rows, pixels, steps = [], [], {}
    try:
        for width, height in (*SIZES, CAMERA_SIZE):
            frame = camera_frame(width, height)
            path = scratch / f"frame_{width}x{height}.jpg"
            Image.fromarray(frame).save(path, quality=90)
            print(f"timing {width}x{height} ...", flush=True)
            times = time_rounds({
                "invoke": interpreter.invoke,
                "tlx_array": lambda: clf.classify(frame, top_k=1),
                "tlx_file": lambda: clf.classify(path, top_k=1),
                "mp_array": lambda: mediapipe.from_array(frame),
                "mp_file": lambda: mediapipe.from_file(path),
                "tlx_before_array": lambda: before(frame),
                "preprocess_array": lambda: clf.preprocess(frame),
                "preprocess_file": lambda: clf.preprocess(path),
            }, rounds)
            rows.append({"size": f"{width}x{height}", "jpeg_bytes": path.stat().st_size, "samples": times})
            steps[f"{width}x{height}"] = step_times(clf, frame, max(20, rounds // 2))
            for kind, source in (("array", frame), ("file", path)):
                diff = np.abs(load_image(source, size, version=clf.preprocessing).astype(int)
                              - load_image(source, size, version=1))
                pixels.append({"size": f"{width}x{height}", "input": kind,
                               "mean": float(diff.mean()), "max": int(diff.max())})
        mp_threads = cpu_per_wall(lambda: mediapipe.from_array(frame))
        tlx_threads = cpu_per_wall(lambda: clf.classify(frame, top_k=1))
        agreement = test_photo_agreement(run, clf, mediapipe)
    finally:
        mediapipe.close()
    accuracy = {version: run_accuracy(run, clf, version) for version in imaging.PREPROCESSING_VERSIONS}
    frame_accuracy = {version: run_accuracy(run, clf, version, as_frame=(1280, 720))
                      for version in imaging.PREPROCESSING_VERSIONS}
    return {"rows": rows, "pixels": pixels, "agreement": agreement, "accuracy": accuracy,
            "frame_accuracy": frame_accuracy, "steps": steps,
            "backend": backend, "model": model, "input_size": size, "preprocessing": clf.preprocessing,
            "mp_cpu_per_wall": mp_threads, "tlx_cpu_per_wall": tlx_threads}


def test_photo_agreement(run: RunDir, clf, mediapipe: MediaPipe) -> dict:
    """Top-1 of both clients on the run's test photos, each given the same full-size RGB
    pixels (transparent cut-outs composited on white by tlx.imaging, as training saw them)."""
    same = total = 0
    file_same = 0
    for path, _ in run.read_split().test:
        full = load_image(path, None)
        mp_top = mediapipe.from_array(full)
        same += int(clf.classify(full, top_k=1)[0].index == mp_top)
        file_same += int(clf.classify(path, top_k=1)[0].index == mp_top)
        total += 1
    return {"array": same, "file": file_same, "n": total}


def run_accuracy(run: RunDir, clf, version: int, as_frame: tuple[int, int] | None = None) -> tuple[int, int]:
    """Correct top-1 on the run's test photos through `version`'s pixels: from the files, or
    (`as_frame`: width, height) from the photo scaled to that camera frame as an array."""
    test = run.read_split().test
    correct = 0
    for seed, (path, label) in enumerate(test):
        source = path if as_frame is None else photo_frame(load_image(path, None), *as_frame, seed)
        correct += int(clf.top(clf.run(load_image(source, clf.input_size, version=version)), 1)[0].index == label)
    return correct, len(test)


def recorded_accuracy(run_dir: Path) -> str:
    bench = files.read_json(run_dir / "bench" / "bench.json")
    parts = []
    for m in bench["models"]:
        acc = m["accuracy"]
        parts.append(f"{m['name']} {100 * acc['value']:.1f}% (n={acc['n']})")
    return ", ".join(parts)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _verdicts(oks) -> str:
    return " / ".join(_verdict(ok) for ok in oks)


def report(result: dict, here: machine.Machine, load_before, load_after, args, compare: str | None) -> str:
    versions = installed("numpy", "pillow", "ai-edge-litert", "mediapipe")
    lines = [
        "# End-to-end latency at camera resolutions: tlx against MediaPipe Tasks",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; command: "
        f"`python benchmarks/preprocess_speed.py --run RUN_DIR{' --compare-run OLD_RUN_DIR' if compare else ''}"
        f" --rounds {args.rounds}`",
        f"- Machine: {here.summary()}",
        f"- int8 on this CPU: {here.int8_expectation}",
        f"- Load average (1, 5, 15 min): {load_before} before, {load_after} after (2 cores shared "
        "with other jobs: compare within a row, the methods ran interleaved)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Model: the run's model_int8.tflite ({result['input_size'][0]}x{result['input_size'][1]}, "
        f"uint8 in/out, preprocessing version {result['preprocessing']}), backend {result['backend']}, "
        "1 interpreter thread in tlx; MediaPipe's Python API has no thread option (its XNNPACK default "
        f"on Linux is 1 thread; process CPU/wall while it classified: {result['mp_cpu_per_wall']:.2f}, "
        f"tlx: {result['tlx_cpu_per_wall']:.2f})",
        "- Input: scikit-image's `chelsea` photo scaled to each size with sensor-like noise (sigma 3); "
        "the file is that frame as a quality-90 JPEG. `classify` includes everything from the "
        "array or path to the top-1 class (MediaPipe: building the mp.Image / decoding the file too). "
        f"{CAMERA_SIZE[0]}x{CAMERA_SIZE[1]}: the frame a camera is now asked for for this model "
        "(timed for comparison, not judged by the goals)",
        f"- {args.rounds} rounds; each round calls every method once, one after the other. Cells: "
        "median wall ms / median process-CPU ms per call; ratios: median over rounds of the ratio "
        "within a round (wall) / ratio of the CPU medians",
        "",
        "| frame | raw invoke | tlx classify(array) | MediaPipe classify(array) | tlx classify(file) | "
        f"MediaPipe classify(file) | tlx array, version {PREVIOUS_VERSION}'s route | tlx preprocess only "
        "array / file (wall) | array: tlx / invoke | array: tlx / MediaPipe | file: tlx / MediaPipe |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {"invoke": [], "mp_array": [], "file": []}
    for r in result["rows"]:
        t = r["samples"]

        def cell(name):
            return f"{median(t, name):.2f} / {median(t, name, 'cpu'):.2f}"

        def ratio(a, b):
            return (paired_ratio(t, a, b), median(t, a, "cpu") / median(t, b, "cpu"))

        a_inv, a_mp, f_mp = ratio("tlx_array", "invoke"), ratio("tlx_array", "mp_array"), ratio("tlx_file", "mp_file")
        if r["size"] == "1920x1080":
            verdicts["invoke"] = [x <= MAX_ARRAY_VS_INVOKE for x in a_inv]
        if r["size"] != "x".join(map(str, CAMERA_SIZE)):
            verdicts["mp_array"].append([x <= MAX_ARRAY_VS_MEDIAPIPE for x in a_mp])
            verdicts["file"].append([x <= MAX_FILE_VS_MEDIAPIPE for x in f_mp])
        lines.append(
            f"| {r['size']} ({r['jpeg_bytes'] // 1024} KB JPEG) | {cell('invoke')} | {cell('tlx_array')} | "
            f"{cell('mp_array')} | {cell('tlx_file')} | {cell('mp_file')} | {cell('tlx_before_array')} | "
            f"{median(t, 'preprocess_array'):.2f} / {median(t, 'preprocess_file'):.2f} | "
            + " | ".join(f"{w:.2f}x / {c:.2f}x" for w, c in (a_inv, a_mp, f_mp)) + " |")
    ok_invoke = verdicts["invoke"]
    ok_mp_array = [all(v[i] for v in verdicts["mp_array"]) for i in range(2)]
    ok_file = [all(v[i] for v in verdicts["file"]) for i in range(2)]
    agree = result["agreement"]
    ok_agree = agree["array"] >= agree["n"] - 1
    step_names = list(next(iter(result["steps"].values())))
    lines += [
        "",
        "On a loaded machine the medians above include time other jobs held the cores. The "
        "lower quartile of each method's wall times (its calls that ran least disturbed) and their ratios:",
        "",
        "| frame | raw invoke | tlx classify(array) | MediaPipe classify(array) | tlx classify(file) | "
        "MediaPipe classify(file) | array: tlx / invoke | array: tlx / MediaPipe | file: tlx / MediaPipe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        q = {name: float(np.percentile(r["samples"][name]["wall"], 25))
             for name in ("invoke", "tlx_array", "mp_array", "tlx_file", "mp_file")}
        lines.append(f"| {r['size']} | {q['invoke']:.2f} | {q['tlx_array']:.2f} | {q['mp_array']:.2f} | "
                     f"{q['tlx_file']:.2f} | {q['mp_file']:.2f} | {q['tlx_array'] / q['invoke']:.2f}x | "
                     f"{q['tlx_array'] / q['mp_array']:.2f}x | {q['tlx_file'] / q['mp_file']:.2f}x |")
    lines += [
        "",
        "## classify(array) step by step",
        "",
        "Median wall ms of each step timed alone (interleaved rounds); `gather` is the one-pass copy "
        "of the kept pixels into the memory Pillow resizes from, `resize` the model's version's "
        f"resize of them (version {result['preprocessing']}).",
        "",
        "| frame | " + " | ".join(step_names) + " |",
        "|---|" + "---|" * len(step_names),
    ]
    lines += [f"| {size} | " + " | ".join(f"{ms:.3f}" for ms in steps.values()) + " |"
              for size, steps in result["steps"].items()]
    lines += [
        "",
        "## Goals",
        "",
        "Each goal judged on wall time / on process CPU time:",
        "",
        f"- classify(array) at most {MAX_ARRAY_VS_INVOKE}x raw invoke at 1920x1080: {_verdicts(ok_invoke)}",
        f"- classify(array) at most {MAX_ARRAY_VS_MEDIAPIPE}x MediaPipe's from an array at all three sizes: "
        f"{_verdicts(ok_mp_array)}",
        f"- classify(file) at most {MAX_FILE_VS_MEDIAPIPE}x MediaPipe's from the same file at all three sizes: "
        f"{_verdicts(ok_file)}",
        f"- top-1 agreement with MediaPipe on the run's {agree['n']} test photos at least {agree['n'] - 1}: "
        f"{_verdict(ok_agree)} ({agree['array']}/{agree['n']} from the same array; tlx from the file "
        f"against MediaPipe from the array: {agree['file']}/{agree['n']})",
        "",
        f"## What version {result['preprocessing']} changes in the pixels",
        "",
        "Absolute difference of the model input (0..255, all pixels and channels) between the "
        "model's version and version 1 (the exact path), on the frames above:",
        "",
        "| frame | input | mean | max |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p['size']} | {p['input']} | {p['mean']:.2f} | {p['max']} |" for p in result["pixels"]]
    lines += [
        "",
        f"Accuracy of this model on its {result['accuracy'][1][1]} test photos, through each version's pixels:",
        "",
        "| version | from the files | as 1280x720 camera frames (arrays) |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {v} | {c}/{n} | {result['frame_accuracy'][v][0]}/{result['frame_accuracy'][v][1]} |"
              for v, (c, n) in result["accuracy"].items()]
    if compare:
        lines += [f"Before/after (two demo runs, same data and seed): trained with version 1: {compare}; "
                  f"trained with version {result['preprocessing']}: {recorded_accuracy(Path(args.run))}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `tlx demo` run with export/model_int8.tflite")
    parser.add_argument("--compare-run", type=Path, help="the same demo trained with preprocessing version 1")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import tempfile

    here = machine.current()
    load_before = machine.load_average()
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(RunDir(args.run), args.rounds, Path(scratch))
    compare = recorded_accuracy(args.compare_run) if args.compare_run else None
    text = report(result, here, load_before, machine.load_average(), args, compare)
    print(results_file.write_with_notes(args.out, text, "preprocess_speed.py"))


if __name__ == "__main__":
    main()
