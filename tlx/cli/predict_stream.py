"""`tlx predict` on streams: videos, URLs and cameras, classified frame by frame.

stdout gets one line per classified frame (or one JSON object per frame with --json:
JSON Lines); stderr a live line with the frame rate and where the time goes, and a
summary at the end. Ctrl-C is how a camera run normally ends: it stops cleanly, prints
the summary and exits 0. A source that fails keeps what was already printed and written.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import typer

from tlx.errors import TlxError
from tlx.runtime.stream import STAGES, FrameStream, StreamConfig
from tlx.text import printable

#: Seconds between live status lines: redrawn in place on a terminal, appended otherwise.
STATUS_INTERVAL_TTY = 0.25
STATUS_INTERVAL_LOG = 5.0


class _Status:
    """The live stderr line."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.interval = STATUS_INTERVAL_TTY if self.tty else STATUS_INTERVAL_LOG
        self.last = time.perf_counter()
        self.shown = False

    def update(self, result, frames: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.interval:
            return
        self.last = now
        line = (f"{result.fps:6.1f} FPS | ms: capture {result.capture_ms:5.1f}  preprocess "
                f"{result.preprocess_ms:5.1f}  invoke {result.invoke_ms:6.1f} | frames {frames}"
                f"  dropped {result.dropped}")
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
            self.shown = True
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self.shown = False


def _frame_line(result) -> str:
    classes = "  ".join(f"{printable(p.name)} {p.score:.3f}" for p in result.predictions)
    return f"{result.time:10.3f}s  #{result.index:<6d} {classes}"


def _print_summary(name: str, summary: dict, stopped: str | None) -> None:
    lines = [f"{name}: {summary['frames']} frame(s) classified ({summary['frames_read']} read, "
             f"{summary['dropped']} dropped) in {summary['seconds']:.2f} s: {summary['fps']:.1f} FPS"
             + (f"  [{stopped}]" if stopped else "")]
    if summary["ms"]:
        lines.append(f"  {'ms':<11} {'p50':>8} {'p90':>8}")
        for stage in STAGES:
            ms = summary["ms"][stage]
            lines.append(f"  {stage:<11} {ms['p50']:>8.2f} {ms['p90']:>8.2f}")
    typer.echo("\n".join(lines), err=True)


def _describe(source) -> str:
    parts = ["live" if source.live else "file"]
    if source.fps:
        parts.append(f"{source.fps:g} fps")
    if source.frame_count:
        parts.append(f"{source.frame_count} frames")
    return f"Reading {source.name} ({', '.join(parts)})"


def classify_streams(clf, sources: list, config: StreamConfig, *, as_json: bool,
                     annotate: Path | None) -> int:
    """Classify each source in turn; returns the number that failed. Ctrl-C stops all."""
    failed = 0
    for source in sources:
        try:
            interrupted = _one(clf, source, config, as_json=as_json, annotate=annotate)
        except TlxError as exc:
            typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
            failed += 1
            continue
        if interrupted:
            break
    return failed


def _one(clf, source, config: StreamConfig, *, as_json: bool, annotate: Path | None) -> bool:
    """One source; True if Ctrl-C stopped it. A source error is raised after the summary
    and after the annotated video is closed with the frames done so far."""
    stream = FrameStream(clf, source, config)
    name = stream.source.name
    typer.echo(_describe(stream.source), err=True)
    status = _Status()
    error: TlxError | None = None
    stopped = None
    fps = stream.source.fps / config.every if stream.source.fps else None
    writer = _annotated(annotate, fps)
    with stream, writer as video:
        try:
            for result in stream:
                if as_json:
                    record = {"source": name, **result.to_dict()}
                    sys.stdout.write(json.dumps(record) + "\n")
                else:
                    status.clear()
                    sys.stdout.write(_frame_line(result) + "\n")
                sys.stdout.flush()
                if video is not None:
                    video.write(result)
                status.update(result, stream.stats.frames)
        except KeyboardInterrupt:
            stopped = "stopped by Ctrl-C"
        except TlxError as exc:
            error = exc
    status.clear()
    _print_summary(name, stream.stats.summary(), stopped)
    if video is not None and video.frames:
        typer.echo(f"Wrote {video.frames} annotated frame(s) to {video.path}", err=True)
    if error is not None:
        raise error
    return stopped is not None


def _annotated(path: Path | None, fps: float | None):
    if path is None:
        return nullcontext()
    from tlx.runtime.annotate import AnnotatedVideo

    return AnnotatedVideo(path, fps)

