"""`tlx predict` on streams: videos, URLs and cameras, classified frame by frame.

stdout gets one line per classified frame (or one JSON object per frame with --json:
JSON Lines); stderr a live line with the frame rate and where the time goes, and a
summary at the end. Ctrl-C is how a camera run normally ends: it stops cleanly, prints
the summary and exits 0; SIGTERM does the same. A source that fails keeps what was already
printed and written.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import typer

from tlx.errors import TlxError
from tlx import interrupts
from tlx.interrupts import Terminated
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
                     annotate: Path | None, overwrite: bool = False) -> int:
    """Classify each source in turn; returns the number that failed. Ctrl-C (or SIGTERM)
    stops all. `annotate` takes one source (checked by the command before any work)."""
    failed = 0
    for source in sources:
        stopped, errors = _one(clf, source, config, as_json=as_json, annotate=annotate,
                               overwrite=overwrite)
        for error in errors:
            typer.secho(f"Error: {error}", fg=typer.colors.RED, err=True)
        failed += bool(errors)
        if stopped:
            break
    return failed


def _one(clf, source, config: StreamConfig, *, as_json: bool, annotate: Path | None,
         overwrite: bool) -> tuple[bool, list[TlxError]]:
    """One source: (stopped by Ctrl-C or SIGTERM, errors). A source error comes after the
    summary and after the annotated video is closed with the frames done so far; a video that
    fails its check (a full disk) is an error of its own."""
    try:
        # Opening the source imports OpenCV, as the video does: a Ctrl-C waits for them.
        with interrupts.deferred():
            stream = FrameStream(clf, source, config)
    except TlxError as exc:
        return False, [exc]
    name = stream.source.name
    typer.echo(_describe(stream.source), err=True)
    fps = stream.source.fps / config.every if stream.source.fps else None
    try:
        with interrupts.deferred():
            video = _annotated(annotate, fps, overwrite)  # checks the output again, just before use
    except TlxError as exc:
        stream.close()
        return False, [exc]
    status = _Status()
    errors: list[TlxError] = []
    stopped = written = None
    try:
        with stream, (video or nullcontext()):
            try:
                _classify(stream, video, name, status, as_json=as_json)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
                stopped = "stopped by SIGTERM" if isinstance(exc, Terminated) else "stopped by Ctrl-C"
            except TlxError as exc:
                errors.append(exc)
        written = video is not None and video.frames > 0
    except TlxError as exc:  # the annotated video did not verify: nothing took its name
        errors.append(exc)
    status.clear()
    _print_summary(name, stream.stats.summary(), stopped)
    if written:
        typer.echo(f"Wrote {video.frames} annotated frame(s) to {video.path}", err=True)
    elif video is not None and not errors:
        typer.echo(f"No frame was classified: {video.path} not written", err=True)
    return stopped is not None, errors


def _classify(stream: FrameStream, video, name: str, status: _Status, *, as_json: bool) -> None:
    for result in stream:
        # A Ctrl-C lands before or after a frame's line and its video frame, never between:
        # the video holds exactly the frames printed.
        with interrupts.deferred():
            if video is not None:
                video.write(result)
            if as_json:
                record = {"source": name, **result.to_json()}
                sys.stdout.write(json.dumps(record) + "\n")
            else:
                status.clear()
                sys.stdout.write(_frame_line(result) + "\n")
            sys.stdout.flush()
        status.update(result, stream.stats.frames)


def _annotated(path: Path | None, fps: float | None, overwrite: bool):
    if path is None:
        return None
    from tlx.runtime.annotate import AnnotatedVideo

    return AnnotatedVideo(path, fps, overwrite=overwrite)
