"""Live classification speed and memory: `Classifier.classify_stream` on a 1280x720 video.

    python benchmarks/stream_speed.py --model RUN/export/model_int8.tflite
    python benchmarks/stream_speed.py --model M.tflite --quick     # fewer frames, no 10k run

Goals:
- FPS of the whole stream (OpenCV decode, BGR->RGB, the shared load_image, invoke, top-k)
  at least 0.95x of 1000 / (ms of the raw interpreter invoke() alone) at 1280x720 input,
  1 interpreter thread, both measured side by side (interleaved chunks) in one run.
- Memory flat over a 10,000-frame stream: peak RSS at the end within 5 MB of the peak after
  100 frames (a fresh child process, so the speed rounds do not raise its peak).

The video is made here from Debian's tuxpaint-stamps-default photos (composited on white
and resized with tlx.imaging.load_image to the frame size, 1280x720 unless --frame-size says
otherwise), each held for 15 frames at 30 fps,
written with OpenCV's mp4v encoder into a temporary folder. Every frame is classified (a
video file drops nothing). Writes benchmarks/results/stream_speed.md (--out to change).
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(REPO))

from tlx import machine as tlx_machine  # noqa: E402
from tlx.files import sha256_file, write_text  # noqa: E402
from tlx.runtime.stream import STAGES  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "stream_speed.md"
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
WIDTH, HEIGHT, FPS, HOLD = 1280, 720, 30.0, 15
#: The goal: interleaved median of stream FPS / (1000 / raw invoke ms) at least this.
MIN_RATIO = 0.95
#: Frames after which the memory run takes its reference peak.
MEMORY_REFERENCE = 100


def make_video(path: Path, frames: int) -> Path:
    import cv2

    from tlx.imaging import load_image

    photos = sorted(TUXPAINT.glob("*/*/*.png"))
    if not photos:
        sys.exit("needs Debian's tuxpaint-stamps-default (apt-get install tuxpaint-stamps-default)")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    bgr = None
    for i in range(frames):
        if i % HOLD == 0:
            rgb = load_image(photos[(i // HOLD) * 7 % len(photos)], (HEIGHT, WIDTH))
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        writer.write(bgr)
    writer.release()
    return path


def invoke_ms(clf, pixels, runs: int) -> tuple[float, float]:
    """Medians (ms) of the raw interpreter invoke() alone, and of Classifier.run (set input,
    invoke, read and dequantize the output)."""
    interpreter = clf._interpreter  # the raw invoke() is the goal's yardstick
    clf.run(pixels)
    invokes, runs_ms = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        interpreter.invoke()
        invokes.append((time.perf_counter() - t0) * 1000)
    for _ in range(runs):
        t0 = time.perf_counter()
        clf.run(pixels)
        runs_ms.append((time.perf_counter() - t0) * 1000)
    return statistics.median(invokes), statistics.median(runs_ms)


def stream_round(clf, video: Path) -> dict:
    stream = clf.classify_stream(video, top_k=1)
    start = time.perf_counter()
    with stream:
        frames = sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    # The share of the wall time the model was running: 1.0 means reading and preprocessing
    # cost the model nothing (they overlapped it); measured inside the same run, so the
    # machine's load affects both sides alike.
    busy = stream.stats.total_ms[STAGES.index("invoke")] / (seconds * 1000)
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "busy": busy,
            "ms": stream.stats.percentiles()}


def interleaved(clf, video: Path, pixels, chunk: int, skip: int = 3) -> list[dict]:
    """The stream and the raw invoke in alternation, chunk by chunk, so both see the same
    machine load: after every `chunk` frames of the stream, `chunk // 2` raw invokes. While
    the invokes run, the reader thread waits on its full queue (a file drops nothing); the
    first `skip` frames of each chunk, ready meanwhile (two queued, one in the reader's hand),
    are not counted."""
    interpreter = clf._interpreter
    pairs, start = [], None
    with clf.classify_stream(video, top_k=1) as stream:
        for n, _ in enumerate(stream):
            position = n % chunk
            if position == skip:
                start = time.perf_counter()
            elif position == chunk - 1:
                fps = (chunk - 1 - skip) / (time.perf_counter() - start)
                clf.run(pixels)
                invokes = []
                for _ in range(chunk // 2):
                    t0 = time.perf_counter()
                    interpreter.invoke()
                    invokes.append((time.perf_counter() - t0) * 1000)
                invoke = statistics.median(invokes)
                pairs.append({"fps": fps, "invoke_ms": invoke, "ratio": fps / (1000 / invoke)})
    return pairs


@contextlib.contextmanager
def converting_reader():
    """The reader before frames were handed on as views: OpenCV's BGR frame converted to a
    packed RGB copy (cvtColor) for every frame."""
    from tlx.runtime import sources

    viewing = sources.OpenCVSource.read

    def read(self):
        got = viewing(self)
        if got is None:
            return None
        frame, stamp = got
        return self._cv2.cvtColor(frame[..., ::-1], self._cv2.COLOR_BGR2RGB), stamp
    sources.OpenCVSource.read = read
    try:
        yield
    finally:
        sources.OpenCVSource.read = viewing


def reader_pairs(clf, video: Path, pixels, chunk: int, rounds: int) -> dict[str, list[float]]:
    """Interleaved median ratio of each reader, the two alternating round by round."""
    ratios = {"view": [], "cvtColor": []}
    for _ in range(rounds):
        ratios["view"].append(statistics.median(p["ratio"] for p in interleaved(clf, video, pixels, chunk)))
        with converting_reader():
            ratios["cvtColor"].append(statistics.median(p["ratio"] for p in interleaved(clf, video, pixels, chunk)))
    return ratios


def peak_rss_kb() -> tuple[int, int]:
    """(VmHWM, VmRSS) of this process in kB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values["VmHWM"], values["VmRSS"]


def memory_child(model: str, video: str) -> None:
    """Runs in a fresh process: peak and current RSS along a long stream, as JSON."""
    from tlx.runtime import Classifier

    clf = Classifier.from_file(model, num_threads=1)
    marks = {}
    checkpoints = {MEMORY_REFERENCE, 1000, 2000, 5000}
    n = 0
    with clf.classify_stream(video, top_k=1) as stream:
        for n, _ in enumerate(stream, 1):
            if n in checkpoints:
                marks[n] = peak_rss_kb()
    marks[n] = peak_rss_kb()
    print(json.dumps({"frames": n, "marks": marks}))


def memory_run(model: Path, video: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--memory-child", str(model), str(video)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    global WIDTH, HEIGHT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="int8 .tflite (e.g. tlx demo's model_int8.tflite)")
    parser.add_argument("--frames", type=int, default=600, help="frames of the speed video")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--invokes", type=int, default=300, help="timed invokes per round")
    parser.add_argument("--memory-frames", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=100, help="frames per interleaved chunk")
    parser.add_argument("--chunk-frames", type=int, default=3000, help="frames of the interleaved run")
    parser.add_argument("--reader-rounds", type=int, default=6,
                        help="alternating rounds of the reader comparison (view vs cvtColor)")
    parser.add_argument("--quick", action="store_true", help="300 frames, 2 rounds, 1000-frame memory run")
    parser.add_argument("--frame-size", default=f"{WIDTH}x{HEIGHT}", help="video frame size WxH")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.model is None:
        parser.error("--model is required (train one with: tlx demo --out DIR; then "
                     "DIR/run/export/model_int8.tflite)")
    WIDTH, HEIGHT = (int(v) for v in args.frame_size.lower().split("x"))
    if args.quick:
        args.frames, args.rounds, args.memory_frames, args.chunk_frames, args.reader_rounds = 300, 2, 1000, 600, 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from tlx.runtime import Classifier

    load_before = tlx_machine.load_average()
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="tlx-stream-bench-") as tmp:
        video = make_video(Path(tmp) / "speed.mp4", args.frames)
        long_video = make_video(Path(tmp) / "long.mp4", args.memory_frames)
        clf = Classifier.from_file(args.model, num_threads=1)
        import cv2
        capture = cv2.VideoCapture(str(video))
        ok, frame = capture.read()
        capture.release()
        pixels = clf.preprocess(frame[..., ::-1])
        stream_round(clf, video)  # warm-up: decoder, page cache, interpreter
        rounds = []
        for r in range(args.rounds):
            # The invoke yardstick is timed just before and just after the stream, and averaged.
            before, run_before = invoke_ms(clf, pixels, args.invokes // 2)
            result = stream_round(clf, video)
            after, run_after = invoke_ms(clf, pixels, args.invokes // 2)
            invoke, run = (before + after) / 2, (run_before + run_after) / 2
            result.update(invoke_ms=invoke, run_ms=run, ratio=result["fps"] / (1000 / invoke))
            rounds.append(result)
            print(f"round {r + 1}: invoke {invoke:.3f} ms ({1000 / invoke:.1f}/s), run {run:.3f} ms, "
                  f"stream {result['fps']:.1f} FPS, ratio {result['ratio']:.3f}, model busy {result['busy']:.3f}", file=sys.stderr)
        pairs = interleaved(clf, long_video if args.chunk_frames > args.frames else video, pixels,
                            args.chunk)
        pairs = pairs[: max(1, args.chunk_frames // args.chunk)]
        print(f"interleaved: {len(pairs)} chunks, median ratio "
              f"{statistics.median(p['ratio'] for p in pairs):.3f}", file=sys.stderr)
        readers = reader_pairs(clf, video, pixels, args.chunk, args.reader_rounds)
        memory = memory_run(args.model, long_video)
    load_after = tlx_machine.load_average()
    text = report(args, clf, rounds, pairs, memory, started, load_before, load_after)
    text += reader_report(readers, args.frames // args.chunk, args.chunk)
    write_text(args.out, text + kept_notes(args.out))
    print(f"Wrote {args.out}", file=sys.stderr)


def reader_report(readers: dict[str, list[float]], chunks: int, chunk: int) -> str:
    wins = sum(v > c for v, c in zip(readers["view"], readers["cvtColor"]))
    lines = ["", "## The reader: frames as views of OpenCV's BGR memory vs converted copies", "",
             "The same interleaved measure (median ratio over the video's "
             f"{chunks} chunks of {chunk} frames), the two readers alternating round by round: "
             "`view` hands each frame on as `bgr[..., ::-1]` and tlx.imaging reads the kept pixels "
             "from it (now); `cvtColor` converts every whole frame to packed RGB first (before).", "",
             "| round | view | cvtColor |", "|---:|---:|---:|"]
    lines += [f"| {i} | {v:.3f} | {c:.3f} |" for i, (v, c) in
              enumerate(zip(readers["view"], readers["cvtColor"]), 1)]
    lines += ["", f"Median ratio: view **{statistics.median(readers['view']):.3f}**, cvtColor "
              f"{statistics.median(readers['cvtColor']):.3f}; the view ahead in {wins} of "
              f"{len(readers['view'])} rounds.", ""]
    return "\n".join(lines)


def kept_notes(path: Path) -> str:
    """The hand-written "## Notes" section of an earlier results file, kept on a re-run."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    start = text.find("\n## Notes")
    return text[start:] if start >= 0 else ""


def quantiles(values) -> str:
    """p10 / median / p90 of a list, as text."""
    import numpy as np

    p10, p50, p90 = np.percentile(list(values), [10, 50, 90])
    return f"{p10:.3f} / **{p50:.3f}** / {p90:.3f}"


def report(args, clf, rounds, pairs, memory, started, load_before, load_after) -> str:
    machine = tlx_machine.current(("opencv-python-headless",))
    median_ratio = statistics.median(r["ratio"] for r in rounds)
    marks = {int(k): v for k, v in memory["marks"].items()}
    ref_peak = marks[MEMORY_REFERENCE][0]
    end_peak = marks[memory["frames"]][0]
    lines = [
        "# Live classification: stream FPS vs raw invoke, and memory over a long stream",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; command: `python benchmarks/stream_speed.py "
        f"--model MODEL{' --quick' if args.quick else ''}` (frames {args.frames}, rounds {args.rounds}, "
        f"memory frames {args.memory_frames})",
        f"- Machine: {machine.summary()}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in machine.versions.items())}",
        f"- Load average (1, 5, 15 min) before: {load_before}, after: {load_after} "
        "(the machine is shared; ratios are measured side by side in each round)",
        f"- Model: {Path(args.model).name} (sha256 {sha256_file(args.model)[:12]}), input "
        f"{clf.input_size[0]}x{clf.input_size[1]} {clf.input_dtype}, {clf.num_classes} classes, "
        f"backend {clf.backend}, 1 interpreter thread",
        f"- Video: {WIDTH}x{HEIGHT} mp4v, {FPS:g} fps, {args.frames} frames of Tux Paint photos "
        f"({HOLD} frames each); every frame classified (a file drops nothing)",
        "",
        f"## Stream FPS vs 1000 / invoke ms (goal: ratio >= {MIN_RATIO})",
        "",
        f"Interleaved, the fairest comparison on a shared machine: {len(pairs)} chunks of "
        f"{args.chunk} stream frames, each followed by {args.chunk // 2} raw invokes (the reader "
        "thread waits meanwhile), so the stream and its yardstick see the same load.",
        "",
        "| per chunk | p10 / median / p90 |",
        "|---|---:|",
        f"| stream FPS | {quantiles(p['fps'] for p in pairs)} |",
        f"| raw invoke ms | {quantiles(p['invoke_ms'] for p in pairs)} |",
        f"| ratio FPS / (1000 / invoke ms) | {quantiles(p['ratio'] for p in pairs)} |",
        "",
        f"Whole-file rounds: the {args.frames}-frame video end to end, the raw invoke timed just "
        "before and after it (more exposed to load changing between the two):",
        "",
        "| round | invoke ms (median) | 1000/invoke | run ms (set+invoke+get) | stream FPS | ratio "
        "| model busy | capture p50 ms | preprocess p50 ms | invoke+top p50 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['invoke_ms']:.3f} | {1000 / r['invoke_ms']:.1f} | {r['run_ms']:.3f} "
                     f"| {r['fps']:.1f} | {r['ratio']:.3f} | {r['busy']:.3f} | {r['ms']['capture']['p50']:.2f} "
                     f"| {r['ms']['preprocess']['p50']:.2f} | {r['ms']['invoke']['p50']:.2f} |")
    chunk_ratio = statistics.median(p["ratio"] for p in pairs)
    median_busy = statistics.median(r["busy"] for r in rounds)
    lines += ["", f"Goal {'met' if chunk_ratio >= MIN_RATIO else 'NOT met'} by the interleaved median ratio "
              f"**{chunk_ratio:.3f}** (the criterion: both sides in the same second); whole-file "
              f"median ratio {median_ratio:.3f}. Median share of "
              f"the whole-file stream's wall time spent in the model (invoke and top-k, same run): "
              f"{median_busy:.3f}. Capture and preprocess run in the reader thread, overlapping "
              "the invoke.", "",
              f"## Memory over a {memory['frames']:,}-frame stream (goal: end peak within 5 MB of "
              f"the peak after {MEMORY_REFERENCE} frames)", "",
              "| frames | peak RSS MB (VmHWM) | RSS MB (VmRSS) |", "|---:|---:|---:|"]
    for n in sorted(marks):
        lines.append(f"| {n:,} | {marks[n][0] / 1024:.1f} | {marks[n][1] / 1024:.1f} |")
    growth = (end_peak - ref_peak) / 1024
    lines += ["", f"Peak growth after frame {MEMORY_REFERENCE}: **{growth:.2f} MB** "
              f"({'met' if growth <= 5 else 'NOT met'}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
