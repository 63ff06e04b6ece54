"""Decode images into the rows of a memory-mapped .npy file, on every core.

Processes, not threads. Pillow releases the GIL while it decodes and resizes, but about a
third of each small image's time holds it (Pillow parses JPEG markers in Python; the checks
around the decoder; the copy into the row), so two threads reached only 1.55x one thread
on 2 cores (benchmarks/results/train_scale_64k.md). Worker processes open the same .npy
file (a shared mapping of the page cache) and write their rows straight into it: no pixels
travel between processes, only row numbers, paths and the reasons files could not be read.

The workers are plain `python -m tlx.pixels.parallel_decode` processes fed chunks of work
as JSON lines, not a multiprocessing pool: a pool's workers ("spawn"; "fork" is unsafe
once TensorFlow's threads run) re-import the caller's main script, which fails in any
script without an `if __name__ == "__main__":` guard. Starting them costs a few tenths of
a second, so small jobs are decoded in this process instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tlx import files
from tlx.errors import ImageError, TlxError
from tlx.imaging import DEFAULT_MAX_PIXELS, PREPROCESSING_VERSION, load_image
from tlx.progress import Progress

#: Fewer images than this are decoded in this process (workers cost more to start).
PROCESS_MIN_IMAGES = 256
#: Images per message to a worker: few messages, and a progress bar that moves.
CHUNK = 64

Job = tuple[int, str]
#: (SHA-256 of a file's bytes, SHA-256 of its decoded row), in hex.
Digests = tuple[str, str]


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def decode_into(out: np.memmap, jobs: Sequence[Job], size: tuple[int, int],
                max_pixels: int = DEFAULT_MAX_PIXELS, workers: Optional[int] = None,
                progress: Optional[Progress] = None,
                preprocessing: int = PREPROCESSING_VERSION) -> tuple[dict[int, str], dict[int, Digests]]:
    """Decode each (row, path) with load_image into out[row] (`out` a memory map of a .npy
    file), on `workers` processes (default: every core). Returns {row: reason} for the
    files that could not be read and {row: (SHA-256 of the file's bytes, of the row's
    pixels)} for the others."""
    failures: dict[int, str] = {}
    digests: dict[int, Digests] = {}
    if not jobs:
        return failures, digests
    workers = max(1, workers or default_workers())
    chunks = [[(int(row), str(path)) for row, path in jobs[i:i + CHUNK]] for i in range(0, len(jobs), CHUNK)]
    bar = progress("Decoding images", len(jobs)) if progress else nullcontext(lambda _n: None)
    with bar as advance:
        if workers == 1 or len(jobs) < PROCESS_MIN_IMAGES:
            for chunk in chunks:
                chunk_failures, chunk_digests = decode_chunk(out, chunk, size, max_pixels, preprocessing)
                failures.update(chunk_failures)
                digests.update(chunk_digests)
                advance(len(chunk))
        else:
            settings = [str(out.filename), *size, max_pixels, preprocessing]
            with _Workers(min(workers, len(chunks)), settings) as pool:
                for done, (chunk_failures, chunk_digests) in pool.run(chunks):
                    failures.update(chunk_failures)
                    digests.update(chunk_digests)
                    advance(done)
    return failures, digests


def row_digest(row: np.ndarray, content: str) -> str:
    """SHA-256 (hex) of a row's pixels after the hex hash of its file's bytes: recorded when
    the row is written, checked when it is read back (an edited content hash fails it too)."""
    digest = hashlib.sha256(content.encode("ascii"))
    digest.update(np.ascontiguousarray(row))
    return digest.hexdigest()


def decode_chunk(out: np.ndarray, chunk: Sequence[Job], size: Sequence[int], max_pixels: int,
                 preprocessing: int) -> tuple[dict[int, str], dict[int, Digests]]:
    """Decode each job into its row: ({row: reason}, {row: (content SHA-256, pixels SHA-256)})."""
    failures, digests = {}, {}
    for row, path in chunk:
        try:
            # Hashed as it is read for decoding (from the page cache the second time): what
            # identifies the file's content in split.json, so another folder's photo under the
            # same name is found out (tlx.run_dir.require_same_photos).
            content = files.sha256_file(path)
        except OSError:
            content = None  # load_image says why the file cannot be read
        try:
            pixels = load_image(path, tuple(size), max_pixels=max_pixels, version=preprocessing)
        except ImageError as exc:
            failures[row] = exc.reason
            continue
        if content is None:  # readable by Pillow, not by us: say so rather than guess
            failures[row] = "cannot read the file's bytes"
            continue
        out[row] = pixels
        digests[row] = (content, row_digest(pixels, content))
    return failures, digests


class _Workers:
    """Worker processes, each driven by a thread of ours: send a chunk, read its result."""

    def __init__(self, count: int, settings: list):
        # The folder that holds the tlx package, first on the workers' path: they import
        # the same tlx as this process even when it is not installed.
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]),
               # One core each: numpy's BLAS would otherwise start a thread per core in
               # every worker, for nothing (no matrix maths here).
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.processes = [subprocess.Popen([sys.executable, "-m", __name__, json.dumps(settings)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=self.stderr, env=env, text=True, bufsize=1)
                          for _ in range(count)]
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> "_Workers":
        return self

    def run(self, chunks: list[list[Job]]):
        """Yields (images done, {row: reason}) as chunks finish."""
        todo: queue.Queue = queue.Queue()
        for chunk in chunks:
            todo.put(chunk)
        results: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._drive, args=(p, todo, results), daemon=True)
                        for p in self.processes]
        for thread in self.threads:
            thread.start()
        remaining = len(chunks)
        while remaining:
            result = results.get()
            if isinstance(result, str):
                raise TlxError(f"A process decoding images stopped unexpectedly ({result}). Run again with "
                               "--workers 1 to decode in one process; an image that still fails is then "
                               "named.")
            remaining -= 1
            yield result

    def _drive(self, process: subprocess.Popen, todo: queue.Queue, results: queue.Queue) -> None:
        try:
            while True:
                try:
                    chunk = todo.get_nowait()
                except queue.Empty:
                    return
                process.stdin.write(json.dumps(chunk) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
                if not line:
                    raise EOFError
                failures, digests = json.loads(line)
                results.put((len(chunk), ({int(row): str(reason) for row, reason in failures.items()},
                                          {int(row): (str(c), str(p)) for row, (c, p) in digests.items()})))
        except (OSError, EOFError, ValueError):
            process.wait()
            results.put(self._why(process))

    def _why(self, process: subprocess.Popen) -> str:
        code = process.returncode
        self.stderr.seek(0)
        last = [line.strip() for line in self.stderr.read().splitlines() if line.strip()][-1:]
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return how + (f": {last[0][:300]}" if last else "")

    def __exit__(self, *exc) -> None:
        # Normally every worker has read the end of its input and is exiting; after an
        # error or Ctrl-C they are stopped (their rows do not matter: the file is removed).
        for process in self.processes:
            if exc[0] is not None:
                process.kill()
            try:
                process.stdin.close()
            except OSError:
                pass
        for process in self.processes:
            process.wait()
        # The threads may still be reading a stopped worker's last words (self.stderr).
        for thread in self.threads:
            thread.join()
        for process in self.processes:
            process.stdout.close()
        self.stderr.close()


def _worker(settings: str) -> None:
    """A worker: open the .npy, decode each chunk read from stdin, answer one line each."""
    path, height, width, max_pixels, preprocessing = json.loads(settings)
    out = np.load(path, mmap_mode="r+")
    for line in sys.stdin:
        failures, digests = decode_chunk(out, json.loads(line), (height, width), max_pixels, preprocessing)
        sys.stdout.write(json.dumps([failures, digests]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        _worker(sys.argv[1])
    except KeyboardInterrupt:
        # Ctrl-C reaches every process of the terminal: the parent reports it, not the workers.
        sys.exit(130)
