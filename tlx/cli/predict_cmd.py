"""`tlx predict`: classify images with a .tflite model, without TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlx import interrupts
from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import print_json, user_errors
from tlx.runtime.backends import AUTO
from tlx.text import printable
from tlx.runtime.stream import StreamConfig

_STREAM = StreamConfig()

_CAMERA_SIZE_HELP = ("With --camera: the frame size to ask the camera for, e.g. 1280x720 for a sharper "
                     "--annotate video (a USB camera gives its smallest mode at least that large; the Pi "
                     "camera scales to it). Default: what the model needs, twice its input at 4:3 "
                     "(448x320 for a 160 px model).")
_ANNOTATE_HELP = ("Streams: write the classified frames with the top label, score and "
                  "FPS drawn to this video (.mp4 .avi .mkv .mov), for one source "
                  "(several: run once per source). Checked before any work: its folder "
                  "must exist, it must not be an input (also through a link), nor an "
                  "existing file without --overwrite. It takes its name only once "
                  "complete and verified; a failed write (a full disk) is an error. "
                  "Default: none.")


@command("predict", short_help="Classify images, videos, streams or a camera with a .tflite.")
def predict(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="The .tflite model (from `tlx export`).",
                                          show_default=False)],
    images: Annotated[Optional[List[str]], typer.Argument(
        metavar="SOURCE",
        help="Image files and/or folders (searched recursively for images); or video files "
             "(.mp4 .avi .mkv .mov) and rtsp:// / http:// stream URLs, classified frame by frame; "
             "with --camera: the camera (an index, /dev/videoN or picamera2).",
        show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many classes to show per image.")] = 3,
    threads: Annotated[Optional[str], options.threads_option(show_default="the backend's choice")] = None,
    backend: options.Backend = AUTO,
    as_json: options.Json = False,
    fast_jpeg: Annotated[bool, typer.Option(
        "--fast-jpeg", help="For models trained with preprocessing version 1 (older models): decode "
                            "large JPEGs at reduced scale first: faster, pixels within about 1 level "
                            "of 255 of the full decode (not bit-identical). Version 2 models always "
                            "do this, the way they were trained.")] = False,
    camera: Annotated[bool, typer.Option(
        "--camera", help="Classify a camera live: the one named after it (an index, /dev/videoN, "
                         "or picamera2 for the Pi camera module), else the Pi camera module if "
                         "Picamera2 sees one, else camera 0. Needs the 'camera' extra "
                         "(OpenCV) or Picamera2. Ctrl-C stops it.")] = False,
    every: Annotated[int, typer.Option(
        "--every", min=1, metavar="N", help="Streams: classify every Nth frame.")] = _STREAM.every,
    max_frames: Annotated[Optional[int], typer.Option(
        "--max-frames", min=1, help="Streams: stop after this many classified frames.",
        show_default="no limit")] = _STREAM.max_frames,
    duration: Annotated[Optional[float], typer.Option(
        "--duration", min=0.001, metavar="SECONDS",
        help="Streams: stop at this many seconds (video time for files, wall time for live sources).",
        show_default="no limit")] = _STREAM.duration,
    realtime: Annotated[bool, typer.Option(
        "--realtime", help="Video files: read at the video's own frame rate and drop frames "
                           "the model has no time for, as with a camera (default: every frame, "
                           "in order).")] = _STREAM.realtime,
    camera_size: Annotated[Optional[str], typer.Option(
        "--camera-size", metavar="WxH", help=_CAMERA_SIZE_HELP, show_default=False)] = None,
    annotate: Annotated[Optional[Path], typer.Option(
        "--annotate", metavar="VIDEO", help=_ANNOTATE_HELP, show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="With --annotate: replace an existing output file (once the new "
                            "video is complete).")] = False,
) -> None:
    """Classify images with a TFLite model: a table per image (or --json). Videos, stream
    URLs and --camera: a line per frame, a live FPS line on stderr, a summary at the end.

    --json prints one document: "model", "backend", "labels" (whether the model has them)
    and "results", one per image (its path, the top-k predictions or the error); streams
    print JSON Lines instead, one object per classified frame (the summary goes to stderr).

    A file that cannot be read prints its error and the others still print. Ctrl-C (or
    SIGTERM) ends a stream with the summary, the --annotate video kept, exit 0.

    Exit codes: 0 classified; 1 an error, or any file failed; 130 interrupted by Ctrl-C
    during start-up (143: SIGTERM).
    """
    with user_errors():
        images = images or []
        clf, streams = _load(model, images, camera=camera, camera_size=camera_size, threads=threads,
                             backend=backend, fast_jpeg=fast_jpeg, every=every, max_frames=max_frames,
                             duration=duration, realtime=realtime, annotate=annotate, overwrite=overwrite)
        if streams is not None:
            from tlx.cli.predict_stream import classify_streams

            config = StreamConfig(every=every, top_k=top_k, max_frames=max_frames,
                                  duration=duration, realtime=realtime)
            if classify_streams(clf, streams, config, as_json=as_json, annotate=annotate,
                                overwrite=overwrite):
                raise typer.Exit(1)
            return
        _classify_images(clf, model, images, top_k=top_k, as_json=as_json)


def _load(model: Path, images: list[str], *, camera: bool, camera_size: str | None,
          threads: str | None, backend: str, fast_jpeg: bool, annotate: Path | None,
          overwrite: bool, **stream_options):
    """The options checked and the model loaded: (the Classifier, the sources to stream or
    None for images)."""
    # Imports and the model load take a Ctrl-C when they are done, not in the middle: a
    # KeyboardInterrupt inside an import can come out as another error (a RuntimeError
    # from numpy's class set-up was seen), with a traceback.
    with interrupts.deferred():
        from tlx.runtime import Classifier

        asked_size = _camera_size(camera_size, camera)
        streams = _stream_inputs(images, camera, annotate=annotate, overwrite=overwrite,
                                 **stream_options)
        num_threads = options.thread_counts(threads, one=True)[0] if threads is not None else None
        clf = Classifier.from_file(model, num_threads=num_threads,
                                   backend=options.backend_names(backend, one=True)[0],
                                   fast_decode=fast_jpeg)
        if camera:
            from tlx.runtime.sources import CameraSpec

            streams = [CameraSpec(streams[0], asked_size or clf.camera_frame_size)]
    return clf, streams


def _classify_images(clf, model: Path, images: list[str], top_k: int, as_json: bool) -> None:
    """A table per image (or one --json document); exit 1 when no image was found or any
    file failed."""
    failed = total = 0
    results = []
    for result in clf.classify_files(images, top_k=top_k):
        total += 1
        if not result.ok:
            failed += 1
        if as_json:
            results.append(result.to_json())
        else:
            _print_table(result)
    if as_json:
        print_json({"model": str(model), "backend": clf.backend,
                    "labels": clf.labels is not None, "results": results})
    if total == 0:
        typer.secho("No images found in the given folders.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    if failed:
        typer.secho(f"{failed} file(s) failed.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def _camera_size(text: str | None, camera: bool) -> tuple[int, int] | None:
    """--camera-size as (width, height), or BadParameter."""
    if text is None:
        return None
    if not camera:
        raise typer.BadParameter("applies to --camera only", param_hint="--camera-size")
    from tlx.runtime.sources import StreamError, parse_camera_size

    try:
        return parse_camera_size(text)
    except StreamError as exc:
        raise typer.BadParameter(str(exc), param_hint="--camera-size") from None


def _stream_inputs(inputs: list[str], camera: bool, annotate: Path | None, overwrite: bool,
                   **options):
    """The sources to stream (None: these are images), or BadParameter for a mix. The
    --annotate output is checked here, before the model loads or any frame is read."""
    from tlx.runtime.sources import CAMERA_AUTO, camera_kind, is_stream_input

    if camera:
        if len(inputs) > 1:
            raise typer.BadParameter(f"one camera at a time, not {len(inputs)}: {' '.join(inputs)}",
                                     param_hint="--camera")
        spec = inputs[0] if inputs else CAMERA_AUTO
        camera_kind(spec)  # an index, /dev/videoN, picamera2 or auto; else a clear error
        sources = [int(spec) if spec.isdigit() else spec]
    elif not inputs:
        raise typer.BadParameter("give image files or folders, videos, stream URLs, or --camera",
                                 param_hint="SOURCE")
    elif any(is_stream_input(item) for item in inputs):
        images = [item for item in inputs if not is_stream_input(item)]
        if images:
            raise typer.BadParameter(f"classify images and videos in separate calls (images: "
                                     f"{', '.join(images[:3])})", param_hint="SOURCE")
        sources = list(inputs)
    else:
        given = [f"--{name.replace('_', '-')}" for name, value in options.items()
                 if value != getattr(_STREAM, name)] + (["--annotate"] if annotate else []) \
            + (["--overwrite"] if overwrite else [])
        if given:
            raise typer.BadParameter(f"{', '.join(given)} apply to videos, stream URLs and "
                                     "--camera, not to images")
        return None
    if annotate is not None:
        from tlx.runtime.annotate import check_output

        if len(sources) > 1:
            raise typer.BadParameter(
                f"writes one video, for one source, not {len(sources)} "
                f"({', '.join(map(str, sources[:3]))}{', ...' if len(sources) > 3 else ''}); "
                "run tlx predict once per source", param_hint="--annotate")
        check_output(annotate, inputs=sources, overwrite=overwrite)
    elif overwrite:
        raise typer.BadParameter("applies to --annotate's output only", param_hint="--overwrite")
    return sources


def _print_table(result) -> None:
    # Labels come from the model file and paths from the disk: control characters in them
    # are shown escaped, never sent to the terminal.
    if not result.ok:
        reason = getattr(result.error, "reason", None) or str(result.error)
        typer.secho(printable(f"{result.path}: error: {reason}"), fg=typer.colors.RED, err=True)
        return
    names = [printable(p.name) for p in result.predictions]
    width = max([5] + [len(name) for name in names])
    lines = [printable(result.path), f"  {'#':>2}  {'label':<{width}}  {'score':>7}  index"]
    for rank, (p, name) in enumerate(zip(result.predictions, names), 1):
        lines.append(f"  {rank:>2}  {name:<{width}}  {p.score:>7.4f}  {p.index:>5}")
    typer.echo("\n".join(lines))
