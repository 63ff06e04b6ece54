"""Classify a stream of frames: a reader thread, a hand-off, timings.

A reader thread captures/decodes the next frame and preprocesses it (the shared
`load_image`, through `Classifier.preprocess`) while the caller's thread runs the model on
the current one, so a slow camera or decoder does not add to the model's time.

What happens when the model is slower than the source depends on the source:
- live (cameras, network streams): a one-frame slot that the reader overwrites. A slow model
  skips frames and always gets the newest; nothing queues, so latency and memory stay flat.
- files and iterables: a bounded queue the reader waits on. Every frame is classified, in
  order, with the same results on every run: a video file is data to be analysed, and
  dropping depends on machine load. `realtime=True` reads a file at its own frame rate
  like a camera (frames dropped when slow), to see what a live run would do.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from tlx.errors import TlxError
from tlx.runtime.sources import FrameSource, StreamError, open_source

#: The pipeline stages timed per frame, in order.
STAGES = ("capture", "preprocess", "invoke")


@dataclass(frozen=True)
class StreamConfig:
    """How a stream is read and classified."""

    #: Classify every Nth frame of the source (1: all).
    every: int = 1
    #: Classes per result.
    top_k: int | None = 5
    #: Stop after this many classified frames (None: until the source ends).
    max_frames: int | None = None
    #: Stop at the first frame whose time stamp reaches this many seconds (video time for
    #: files, time since opening for live sources). None: no limit.
    duration: float | None = None
    #: Read a file at its own frame rate and drop frames when the model is slower, like a
    #: camera. Live sources always do.
    realtime: bool = False
    #: Keep the RGB frame in each result (for drawing or writing video). It is a reference,
    #: not a copy; but results collected in a list keep their frames alive.
    keep_frames: bool = True

    def __post_init__(self):
        if self.every < 1:
            raise TlxError(f"every must be 1 or more, not {self.every}")
        if self.max_frames is not None and self.max_frames < 1:
            raise TlxError(f"max_frames must be 1 or more, not {self.max_frames}")
        if self.duration is not None and self.duration <= 0:
            raise TlxError(f"duration must be positive, not {self.duration}")


@dataclass(frozen=True)
class FrameResult:
    """One classified frame."""

    #: Position of the frame in the source, from 0 (with every=N: 0, N, 2N...).
    index: int
    #: Seconds: the frame's video time for files, time since opening for live sources.
    time: float
    #: Best classes, highest first.
    predictions: tuple
    #: Milliseconds per stage: capture (read and decode to RGB), preprocess, invoke (run
    #: the model and dequantize).
    capture_ms: float
    preprocess_ms: float
    invoke_ms: float
    #: Classified frames per second over the last second or so.
    fps: float
    #: Frames skipped so far because the model was busy (live sources only).
    dropped: int
    #: The RGB frame (HxWx3 uint8) as the source gave it, or None. From OpenCV (video files,
    #: URLs, USB cameras) it is the reversed view of OpenCV's BGR frame, not a converted copy:
    #: `frame[..., ::-1]` is that BGR frame again, np.ascontiguousarray(frame) a packed RGB one.
    frame: np.ndarray | None = None

    def to_json(self) -> dict:
        return {"frame": self.index, "time": round(self.time, 4),
                "predictions": [p.to_json() for p in self.predictions],
                "ms": {"capture": round(self.capture_ms, 3), "preprocess": round(self.preprocess_ms, 3),
                       "invoke": round(self.invoke_ms, 3)},
                "fps": round(self.fps, 2), "dropped": self.dropped}


class StreamStats:
    """Counts and stage timings of a stream, in constant memory: percentiles come from a
    uniform sample (reservoir) of at most `capacity` frames, so a camera left running for
    days does not grow."""

    def __init__(self, capacity: int = 10_000, seed: int = 0):
        self.frames = 0
        self.frames_read = 0
        self.dropped = 0
        self.started = time.perf_counter()
        self.finished: float | None = None
        self._samples = np.zeros((capacity, len(STAGES)), np.float64)
        #: Milliseconds spent per stage over all frames (STAGES order).
        self.total_ms = [0.0] * len(STAGES)
        self._rng = np.random.default_rng(seed)
        self._recent: collections.deque[float] = collections.deque(maxlen=32)

    def add(self, capture_ms: float, preprocess_ms: float, invoke_ms: float) -> float:
        """Record one classified frame; returns the current frames per second."""
        slot = self.frames
        if slot >= len(self._samples):
            slot = int(self._rng.integers(self.frames + 1))
        if slot < len(self._samples):
            self._samples[slot] = (capture_ms, preprocess_ms, invoke_ms)
        for i, ms in enumerate((capture_ms, preprocess_ms, invoke_ms)):
            self.total_ms[i] += ms
        self.frames += 1
        now = time.perf_counter()
        self._recent.append(now)
        if len(self._recent) < 2:
            return self.frames / max(now - self.started, 1e-9)
        return (len(self._recent) - 1) / max(self._recent[-1] - self._recent[0], 1e-9)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    def percentiles(self, q=(50, 90)) -> dict[str, dict[str, float]]:
        """{stage: {"p50": ms, "p90": ms}} over the recorded frames ({} before the first)."""
        n = min(self.frames, len(self._samples))
        if n == 0:
            return {}
        values = np.percentile(self._samples[:n], q, axis=0)
        return {stage: {f"p{p}": round(float(values[i, s]), 3) for i, p in enumerate(q)}
                for s, stage in enumerate(STAGES)}

    def summary(self) -> dict:
        return {"frames": self.frames, "frames_read": self.frames_read, "dropped": self.dropped,
                "seconds": round(self.elapsed, 3), "fps": round(self.fps, 2),
                "ms": self.percentiles()}


@dataclass
class _Item:
    index: int
    time: float
    frame: np.ndarray | None
    pixels: np.ndarray
    capture_ms: float
    preprocess_ms: float


class _Handoff:
    """From the reader thread to the consumer. `drop=True`: at most `capacity` waiting items
    and a new one pushes out the oldest (counted); else the reader waits for room."""

    def __init__(self, capacity: int, drop: bool):
        self.capacity = capacity
        self.drop = drop
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item, final: bool = False) -> bool:
        """False when the consumer has gone. `final` items (the end) are never dropped."""
        with self._cond:
            if not final:
                if self.drop:
                    while len(self._items) >= self.capacity:
                        self._items.popleft()
                        self.dropped += 1
                else:
                    while len(self._items) >= self.capacity and not self._closed:
                        self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self):
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class _End:
    """The reader's last item: why it stopped (None: a normal end)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class _Pacer:
    """Reads a file at its own frame rate (realtime=True): waits until each frame's time."""

    def __init__(self):
        self.start = None

    def wait(self, stamp: float) -> None:
        if self.start is None:
            self.start = time.perf_counter() - stamp
        delay = self.start + stamp - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class FrameStream:
    """Iterate to get one FrameResult per classified frame. Use as a context manager (or
    call close) so the reader thread and the camera are released even on Ctrl-C.

    Iteration ends normally at the end of a file or iterable, at max_frames or duration;
    it raises StreamError when the source fails (a camera that stops, a truncated file)
    after yielding every frame classified before that.
    """

    def __init__(self, classifier, source: Any, config: StreamConfig = StreamConfig()):
        self.classifier = classifier
        self.config = config
        #: The FrameSource (opened here: a missing camera or file raises before any thread).
        self.source: FrameSource = open_source(source)
        self.live = self.source.live or config.realtime
        #: Counts and timings, updated as results are taken.
        self.stats = StreamStats()
        # Live: one slot, the newest frame. Files: two frames ahead keeps the reader busy
        # while the model runs, and bounds memory.
        self._handoff = _Handoff(capacity=1 if self.live else 2, drop=self.live)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="tlx-frame-reader", daemon=True)
        self._started = False
        self._closed = False

    # --- the reader thread ------------------------------------------------------------

    def _read(self) -> None:
        source, config = self.source, self.config
        pacer = _Pacer() if config.realtime and not source.live else None
        end: _End | None = None
        index = 0
        try:
            while not self._stop.is_set():
                selected = index % config.every == 0
                t0 = time.perf_counter()
                got = source.read() if selected else source.skip()
                capture_ms = (time.perf_counter() - t0) * 1000
                if got is None:
                    end = _End(source.end_error(index))
                    break
                frame, stamp = got if selected else (None, got)
                index += 1
                self.stats.frames_read = index
                if config.duration is not None and stamp >= config.duration:
                    break
                if not selected:
                    continue
                if pacer is not None:
                    pacer.wait(stamp)
                t1 = time.perf_counter()
                try:
                    # The classifier's preprocess is load_image: pure, safe beside run().
                    pixels = self.classifier.preprocess(frame)
                except TlxError as exc:
                    raise StreamError(f"{source.name}: frame {index - 1}: {exc}") from None
                item = _Item(index - 1, float(stamp), frame if config.keep_frames else None, pixels,
                             capture_ms, (time.perf_counter() - t1) * 1000)
                if not self._handoff.put(item):
                    return
        except StreamError as exc:
            end = _End(exc)
        except Exception as exc:  # a driver or decoder failing mid-stream
            end = _End(StreamError(f"{source.name}: reading frame {index} failed: {exc}"))
        finally:
            if end is None:
                end = _End()
            self._handoff.put(end, final=True)
            source.close()

    # --- the consumer -----------------------------------------------------------------

    def __iter__(self) -> Iterator[FrameResult]:
        if self._started:
            raise TlxError("a FrameStream can be iterated once")
        self._started = True
        self.stats.started = time.perf_counter()
        self._thread.start()
        clf, config = self.classifier, self.config
        try:
            while config.max_frames is None or self.stats.frames < config.max_frames:
                item = self._handoff.get()
                if isinstance(item, _End):
                    self.stats.dropped = self._handoff.dropped
                    if item.error is not None:
                        raise item.error
                    return
                t0 = time.perf_counter()
                predictions = tuple(clf.top(clf.run(item.pixels), config.top_k))
                invoke_ms = (time.perf_counter() - t0) * 1000
                fps = self.stats.add(item.capture_ms, item.preprocess_ms, invoke_ms)
                self.stats.dropped = self._handoff.dropped
                yield FrameResult(item.index, item.time, predictions, item.capture_ms,
                                  item.preprocess_ms, invoke_ms, fps, self.stats.dropped, item.frame)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader and release the source (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stats.finished = time.perf_counter()
        self._stop.set()
        self._handoff.close()
        if self._thread.is_alive():
            # A camera read returns within a frame period; a stalled network read within its
            # timeout. The thread is a daemon and closes the source itself when it returns.
            self._thread.join(timeout=5)
        elif not self._started:
            self.source.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
